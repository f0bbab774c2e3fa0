"""Export every job of a jobs.yaml with NVFlare's FedJob API, in one process, and time it.

Usage: ``python bench/fedjob_export.py JOBS_YAML OUT_DIR`` (run by ``bench/bench.py``).

The jobs' effective settings come from the generator's load/validate stages before any timing
starts; each job is then built as a FedJob user builds it (``tests/fedjob_reference.py``:
FedJob + ScriptRunner + FedAvg + NPModelPersistor + MLflowReceiver) and exported with
``export_job``, from ``client_scripts/`` as NVFlare's example does. Prints one JSON line:
``{"jobs": N, "import_s": ..., "export_s": ...}`` (seconds: importing nvflare's job API, and
building + exporting all N jobs).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv: list[str]) -> int:
    jobs_yaml, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    from generator.load import load
    from generator.validate import validate

    jobs = validate(load(jobs_yaml))
    started = time.perf_counter()
    import fedjob_reference  # noqa: F401  (its nvflare imports happen inside build_fedjob)
    from nvflare import FedJob  # noqa: F401
    from nvflare.app_common.np.np_model_persistor import NPModelPersistor  # noqa: F401
    from nvflare.app_common.workflows.fedavg import FedAvg  # noqa: F401
    from nvflare.app_opt.tracking.mlflow.mlflow_receiver import MLflowReceiver  # noqa: F401
    from nvflare.job_config.script_runner import ScriptRunner  # noqa: F401

    imported = time.perf_counter()
    os.chdir(jobs_yaml.parent / "client_scripts")
    for job in jobs:
        fedjob_reference.build_fedjob(job.name, job.settings).export_job(str(out))
    done = time.perf_counter()
    print(json.dumps({"jobs": len(jobs), "import_s": imported - started, "export_s": done - imported}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
