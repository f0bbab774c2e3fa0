"""Mock training client that streams metrics with the Client API's MLflowWriter.

Each round runs 3 epochs; each epoch adds 1 to "numpy_key" (a 3x3 float32 array) and logs the
metric "global_step" once per batch: 2000 samples // batch size 16 = 125 batches, so 375 points
per round per site, at steps ``round * 375 + epoch * 125 + batch`` (unique over the job). Each
epoch sleeps ``--epoch_seconds`` (default 1 second, as in NVFlare's example). Sends FULL params.
"""

import argparse
import time

import nvflare.client as flare
from nvflare.client.tracking import MLflowWriter

EPOCHS = 3
NUM_SAMPLES = 2000
BATCH_SIZE = 16


def train(weights, current_round, writer, epoch_seconds):
    """Mock ``EPOCHS`` epochs of training, logging ``global_step`` for every batch.

    Args:
        weights (numpy.ndarray): the received 3x3 model.
        current_round (int): the FL round, from the received FLModel (0-based).
        writer (MLflowWriter): the Client API writer the points are streamed through.
        epoch_seconds (float): seconds each epoch sleeps (mock training time).

    Returns:
        numpy.ndarray: ``weights + EPOCHS``.
    """
    batches = NUM_SAMPLES // BATCH_SIZE
    trained = weights.copy()
    for epoch in range(EPOCHS):
        for batch in range(batches):
            global_step = (current_round * EPOCHS + epoch) * batches + batch
            writer.log_metric(key="global_step", value=global_step, step=global_step)
        trained += 1
        time.sleep(epoch_seconds)
    return trained


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epoch_seconds", type=float, default=1.0, help="mock training time per epoch (s)")
    args = parser.parse_args()
    flare.init()
    print(f"system info: {flare.system_info()}")
    writer = MLflowWriter()
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
