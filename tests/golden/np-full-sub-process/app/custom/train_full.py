"""Mock training client that sends its whole model back (params_type FULL).

Each round it receives an FLModel whose params hold "numpy_key" (a 3x3 float32 array), adds
``--increment`` (default 1; "training") and sends the trained array back; other arguments are
ignored. It loops on ``flare.is_running()``, so the same file works in-process and when
ClientAPIExecutor launches it once as a sub-process for the whole job.
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
