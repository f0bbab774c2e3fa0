"""Mock training client that sends only the change to the model (params_type DIFF).

Each round it receives "numpy_key" (a 3x3 float32 array), "trains" by adding ``--increment``
(default 1; other arguments are ignored), and sends ``trained - received``. The server's FedAvg
adds the averaged difference to the global model, so the final model equals the FULL variant's.
Loops on ``flare.is_running()`` (in-process or sub-process).
"""

import argparse

import nvflare.client as flare


def train(weights, increment=1.0):
    """Mock one round of training: return ``weights + increment`` (same shape and dtype)."""
    return weights + weights.dtype.type(increment)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--increment", type=float, default=1.0, help="what one round of training adds to every weight (default 1)"
    )
    args, _ = parser.parse_known_args()
    flare.init()
    print(f"system info: {flare.system_info()}")
    while flare.is_running():
        received = flare.receive()
        weights = received.params["numpy_key"]
        trained = train(weights, args.increment)
        print(f"round {received.current_round}: sending DIFF params")
        flare.send(
            flare.FLModel(
                params={"numpy_key": trained - weights},
                params_type="DIFF",
                metrics={"accuracy": 100},
                current_round=received.current_round,
            )
        )


if __name__ == "__main__":
    main()
