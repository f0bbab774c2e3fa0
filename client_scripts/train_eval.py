"""Mock training client that also answers cross-site evaluation (params_type FULL).

Three kinds of task reach it through the Client API (``nvflare.client``), each an FLModel:

- train: "numpy_key" (a 3x3 float32 array) comes in; it adds 1 ("training"), keeps the result as
  this site's local model and sends it back whole (params_type FULL), as ``train_full.py`` does.
- evaluate (``flare.is_evaluate()``, NVFlare's CrossSiteModelEval ``validate`` task): a model to
  score (the server's final model or another site's local model) comes in; it sends back only
  metrics, ``{"mean": mean of the model}`` (a METRICS result: NVFlare's ValidationJsonGenerator
  stores it in the server's ``cross_site_val/cross_val_results.json``).
- submit_model (``flare.is_submit_model()``, CrossSiteModelEval ``submit_model`` task): no model
  comes in (``params`` is None); it sends its local model (params_type FULL), which
  CrossSiteModelEval then sends to every site to evaluate. A site that never trained sends the
  zero model of the example's shape.

It loops on ``flare.is_running()``, so the same file works in-process and when ClientAPIExecutor
launches it once as a sub-process for the whole job.
"""

import numpy as np
import nvflare.client as flare

#: The example model's shape (NPModelPersistor's fallback model is 3x3).
MODEL_SHAPE = (3, 3)


def train(weights):
    """Mock one round of training: return ``weights + 1`` (same shape and dtype)."""
    return weights + 1


def evaluate(weights) -> dict:
    """The metrics of a model: ``{"mean": the mean of its entries}`` (a float)."""
    return {"mean": float(np.mean(weights))}


def main():
    flare.init()
    print(f"system info: {flare.system_info()}")
    local = np.zeros(MODEL_SHAPE, dtype=np.float32)
    while flare.is_running():
        received = flare.receive()
        if flare.is_submit_model():
            print("submit_model: sending the local model")
            flare.send(flare.FLModel(params={"numpy_key": local}, params_type="FULL"))
        elif flare.is_evaluate():
            metrics = evaluate(received.params["numpy_key"])
            print(f"evaluate: {metrics}")
            flare.send(flare.FLModel(metrics=metrics))
        else:
            local = train(received.params["numpy_key"])
            print(f"round {received.current_round}: sending FULL params")
            flare.send(
                flare.FLModel(params={"numpy_key": local}, params_type="FULL", current_round=received.current_round)
            )


if __name__ == "__main__":
    main()
