"""Mock training client whose training step lives in a sibling module, ``mock_helper.py``.

The same FULL client as ``train_full.py``: each round it receives "numpy_key" (a 3x3 float32
array), trains it with ``mock_helper.train`` (+1) and sends the whole model back. It shows a
script in a sub-folder of ``client_scripts/`` importing a module next to it, which the generator
ships into ``app/custom/`` with the script (in-process and sub-process alike).
"""

import nvflare.client as flare
from mock_helper import train


def main():
    flare.init()
    print(f"system info: {flare.system_info()}")
    while flare.is_running():
        received = flare.receive()
        trained = train(received.params["numpy_key"])
        print(f"round {received.current_round}: sending FULL params trained by mock_helper")
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
