"""The reference side of the benchmark: NVFlare's "Client API with numpy" example run the FedJob way.

Usage: ``python bench/example_fedjob.py --script train_full.py [--launch_process] --workdir DIR``
(run by ``bench/bench.py`` from a folder holding the client scripts).

Builds the job as the example's job script does, with the same choices: a FedJob named
``np_client_api``; NPModelPersistor as ``persistor``; FedAvg with ``num_clients``/``num_rounds``
(2 and 5); for the metrics script an MLflowReceiver with the example's experiment and run names,
notes, ``artifact_location="artifacts"``, ``events=["fed.analytix_log_stats"]`` and its
``file://`` tracking URI (placed under ``--workdir`` here); a ScriptRunner with the NUMPY
framework; then ``simulator_run(workdir, n_clients=2, gpu="0")``. NVFlare's defaults are kept
everywhere else (``task_request_interval`` 2 s, FedAvg ``task_check_period`` 0.5 s).
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_clients", type=int, default=2)
    parser.add_argument("--num_rounds", type=int, default=5)
    parser.add_argument("--script", default="train_full.py")
    parser.add_argument("--launch_process", action="store_true")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()

    from nvflare import FedJob
    from nvflare.app_common.np.np_model_persistor import NPModelPersistor
    from nvflare.app_common.workflows.fedavg import FedAvg
    from nvflare.app_opt.tracking.mlflow.mlflow_receiver import MLflowReceiver
    from nvflare.job_config.script_runner import FrameworkType, ScriptRunner

    job = FedJob(name="np_client_api")
    persistor_id = job.to_server(NPModelPersistor(), "persistor")
    job.to_server(FedAvg(num_clients=args.n_clients, num_rounds=args.num_rounds, persistor_id=persistor_id))
    if args.script == "train_metrics.py":
        job.to_server(
            MLflowReceiver(
                tracking_uri=f"file://{args.workdir}/server/simulate_job/mlruns",
                kw_args={
                    "experiment_name": "nvflare-fedavg-np-experiment",
                    "run_name": "nvflare-fedavg-np-with-mlflow",
                    "experiment_tags": {"mlflow.note.content": "## **NVFlare FedAvg Numpy experiment with MLflow**"},
                    "run_tags": {"mlflow.note.content": "## Federated Experiment tracking with MLflow.\n"},
                },
                artifact_location="artifacts",
                events=["fed.analytix_log_stats"],
            )
        )
    job.to_clients(
        ScriptRunner(script=args.script, launch_external_process=args.launch_process, framework=FrameworkType.NUMPY)
    )
    job.simulator_run(args.workdir, n_clients=args.n_clients, gpu="0")


if __name__ == "__main__":
    main()
