"""Mock training client that streams metrics with the Client API's WandBWriter (Weights & Biases style).

Same mock training as ``train_metrics.py``: each round runs 3 epochs; each epoch adds 1 to
"numpy_key" (a 3x3 float32 array) and logs ``{"global_step": step}`` with ``log`` once per batch
(2000 samples // batch size 16 = 125 batches: 375 points per round per site, at steps
``round * 375 + epoch * 125 + batch``). At the end of each epoch it also logs the model's mean and
max as ``model_mean`` and ``model_max`` at the epoch's last step (W&B merges them into that step's
row). Each epoch sleeps ``--epoch_seconds`` (default 1 second, as in NVFlare's example). Sends FULL
params.
"""

import argparse
import time

import nvflare.client as flare
from nvflare.client.tracking import WandBWriter

EPOCHS = 3
NUM_SAMPLES = 2000
BATCH_SIZE = 16


def train(weights, current_round, writer, epoch_seconds):
    """Mock ``EPOCHS`` epochs of training, logging ``global_step`` per batch and the model per epoch.

    Args:
        weights (numpy.ndarray): the received 3x3 model.
        current_round (int): the FL round, from the received FLModel (0-based).
        writer (WandBWriter): the Client API writer the points are streamed through.
        epoch_seconds (float): seconds each epoch sleeps (mock training time).

    Returns:
        numpy.ndarray: ``weights + EPOCHS``.
    """
    batches = NUM_SAMPLES // BATCH_SIZE
    trained = weights.copy()
    for epoch in range(EPOCHS):
        for batch in range(batches):
            global_step = (current_round * EPOCHS + epoch) * batches + batch
            writer.log({"global_step": global_step}, step=global_step)
        trained += 1
        writer.log({"model_mean": float(trained.mean()), "model_max": float(trained.max())}, step=global_step)
        time.sleep(epoch_seconds)
    return trained


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epoch_seconds", type=float, default=1.0, help="mock training time per epoch (s)")
    args = parser.parse_args()
    flare.init()
    print(f"system info: {flare.system_info()}")
    writer = WandBWriter()
    while flare.is_running():
        received = flare.receive()
        trained = train(received.params["numpy_key"], received.current_round, writer, args.epoch_seconds)
        print(f"round {received.current_round}: sending FULL params")
        flare.send(
            flare.FLModel(
                params={"numpy_key": trained},
                params_type="FULL",
                metrics={"accuracy": 100},
                current_round=received.current_round,
            )
        )


if __name__ == "__main__":
    main()
