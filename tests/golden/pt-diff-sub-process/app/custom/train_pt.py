"""Mock PyTorch training client (Client API) for ``framework: pytorch`` jobs.

Each train task brings the server's model as a PyTorch ``state_dict`` (NVFlare converts it to
tensors: ``params_exchange_format: pytorch``). The script loads it into ``pt_net.SimpleNet``, runs
one forward pass over a synthetic batch (``torch.ones``; no data set, no download), then "trains"
by adding ``--increment`` (default 1) to every parameter, so the final model is the starting one
plus ``rounds x increment`` under FedAvg. ``--params-type FULL`` (default) sends the trained
``state_dict``; ``DIFF`` sends ``trained - received`` per parameter (set the job's
``params_transfer_type`` to the same).

It also answers NVFlare's cross-site evaluation: ``flare.is_submit_model()`` sends the site's
last trained model, ``flare.is_evaluate()`` sends ``{"mean": mean of every value of the model}``.
It loops on ``flare.is_running()``, so the same file works in-process and as a sub-process.
"""

import argparse

import nvflare.client as flare
import torch
from pt_net import SimpleNet


def train(net: SimpleNet, increment: float) -> dict:
    """One mock round: a forward pass over a synthetic batch, then ``increment`` added to every parameter.

    Returns:
        dict: the trained ``state_dict`` (tensors copied, not views of ``net``).
    """
    batch = torch.ones(4, net.fc1.in_features)
    with torch.no_grad():
        net(batch)
        for param in net.parameters():
            param.add_(increment)
    return {name: value.clone() for name, value in net.state_dict().items()}


def mean_of(state: dict) -> float:
    """The mean of every value of a ``state_dict``."""
    values = torch.cat([value.flatten().double() for value in state.values()])
    return float(values.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--increment", type=float, default=1.0, help="what one round adds to every weight")
    parser.add_argument("--params-type", choices=("FULL", "DIFF"), default="FULL", help="what a round sends back")
    parser.add_argument("--in-features", type=int, default=2, help="SimpleNet in_features (the job's model.args)")
    parser.add_argument("--hidden", type=int, default=2, help="SimpleNet hidden (the job's model.args)")
    args, _ = parser.parse_known_args()
    flare.init()
    print(f"system info: {flare.system_info()}")
    net = SimpleNet(args.in_features, args.hidden)
    local = {name: value.clone() for name, value in net.state_dict().items()}
    while flare.is_running():
        received = flare.receive()
        if flare.is_submit_model():
            print("submit_model: sending the local model")
            flare.send(flare.FLModel(params=local, params_type="FULL"))
            continue
        if flare.is_evaluate():
            metrics = {"mean": mean_of(received.params)}
            print(f"evaluate: {metrics}")
            flare.send(flare.FLModel(metrics=metrics))
            continue
        net.load_state_dict(received.params)
        start = {name: value.clone() for name, value in net.state_dict().items()}
        local = train(net, args.increment)
        params = local if args.params_type == "FULL" else {k: local[k] - start[k] for k in local}
        print(f"round {received.current_round}: sending {args.params_type} params")
        flare.send(
            flare.FLModel(
                params=params,
                params_type=args.params_type,
                metrics={"mean": mean_of(local)},
                current_round=received.current_round,
            )
        )


if __name__ == "__main__":
    main()
