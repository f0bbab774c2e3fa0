"""The job-folder contract: every name of what ``generate`` writes and ``simulate`` reads back.

One job folder (NVFlare's job layout, the names of ``nvflare/job_config/fed_job_config.py``:
``META_JSON``, ``CONFIG``, ``CUSTOM``, ``FED_SERVER_JSON``, ``FED_CLIENT_JSON``)::

    <out>/.jobgen.json                       the output manifest (:class:`ManifestEntry` per job)
    <out>/<job>/meta.json                    name, min_clients, deploy_map
    <out>/<job>/app/config/config_fed_server.json
    <out>/<job>/app/config/config_fed_client.json
    <out>/<job>/app/custom/...               the client script, its shipped files, server components

A job whose sites run different client settings (``sites:``) has, instead of ``app/``, the apps
NVFlare's FedJob export gives one: ``app_server/`` (config_fed_server.json, server components) and
``app_<site>/`` per distinct client configuration (config_fed_client.json, script, shipped files),
named by meta.json's ``deploy_map``.

The simulator's workspace of one job (``nvflare simulator -w <workspace>/<job>``, NVFlare's
``SimulatorRunner``): ``server/simulate_job/`` holds the server's result (the persistor's model
``models/server.npy``, MLflow's default ``mlflow.db``, TensorBoard's default ``tb_events/``),
``site-1/`` .. ``site-N/`` the clients; the workspaces folder holds our marker file and the
console logs in ``_logs/``. Sites are named ``site-1`` .. ``site-N``, the names the simulator
gives ``-n N`` clients, unless the job names its ``clients`` (``-c``).

Every other module takes these names from here. Nothing here imports nvflare.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

# --- one job folder (nvflare/job_config/fed_job_config.py) -------------------------------------------

#: The job's metadata file (``fed_job_config.META_JSON``).
META_JSON = "meta.json"
#: The single app the generator puts in a job folder; also its key in ``deploy_map``.
APP_NAME = "app"
#: An app's config folder and custom-code folder (``fed_job_config.CONFIG``, ``CUSTOM``).
CONFIG = "config"
CUSTOM = "custom"
#: Their paths inside a job folder.
CONFIG_DIR = f"{APP_NAME}/{CONFIG}"
CUSTOM_DIR = f"{APP_NAME}/{CUSTOM}"
#: The server's and the clients' config files of the app (``fed_job_config.FED_SERVER_JSON``, ``FED_CLIENT_JSON``).
FED_SERVER_JSON = "config_fed_server.json"
FED_CLIENT_JSON = "config_fed_client.json"
#: Their paths inside a job folder.
SERVER_CONFIG = f"{CONFIG_DIR}/{FED_SERVER_JSON}"
CLIENT_CONFIG = f"{CONFIG_DIR}/{FED_CLIENT_JSON}"
#: How a sub-process command names a file of the app's custom folder: ``custom/<file>`` (NVFlare
#: starts it in the app folder).
CUSTOM_PREFIX = f"{CUSTOM}/"


def custom_file(name: str) -> str:
    """The path inside a job folder of ``name``, a file below ``app/custom/`` (NVFlare's import folder)."""
    return f"{CUSTOM_DIR}/{name}"


#: The server's app of a multi-app job (a job whose sites differ) and the prefix of its client
#: apps' names: ``app_server``, ``app_<site>``, the folder names NVFlare's FedJob export gives
#: the apps it deploys to one site each (``FedJob.to(obj, target)``, ``nvflare/job_config/api.py``).
APP_PREFIX = "app_"
SERVER_APP = f"{APP_PREFIX}server"


def client_app_name(site: str) -> str:
    """The client app named after the first site that runs it: ``app_<site>``."""
    return f"{APP_PREFIX}{site}"


def app_file(app: str, rel: str) -> str:
    """The path inside a job folder of ``rel`` (e.g. ``config/config_fed_client.json``) in app ``app``."""
    return f"{app}/{rel}"


def app_custom_file(app: str, name: str) -> str:
    """The path inside a job folder of ``name``, a file below ``<app>/custom/``."""
    return f"{app}/{CUSTOM}/{name}"


def template_of(out_name: str) -> str:
    """The Jinja template that renders the job-folder file ``out_name``: its file name plus ``.j2``."""
    return PurePosixPath(out_name).name + ".j2"


#: The files rendered from templates, in the order they are rendered.
CONFIG_FILES = (META_JSON, SERVER_CONFIG, CLIENT_CONFIG)

# --- the output folder ----------------------------------------------------------------------------

#: The output manifest: the jobs the generator wrote, their facts and the SHA-256 of each file.
MANIFEST = ".jobgen.json"
#: The ``generator`` value of our manifests and results files (what marks a file as ours).
GENERATOR_ID = "nvflare-jobgen"

# --- sites ------------------------------------------------------------------------------------------

#: The server's site name (``deploy_map`` target, workspace folder).
SERVER_SITE = "server"
#: A client site name is ``site-<i>``, i from 1 (the simulator's names for ``-n N`` clients).
SITE_PREFIX = "site-"
#: A client site name as a regular expression (no group), e.g. inside a longer run name.
SITE_PATTERN = re.escape(SITE_PREFIX) + r"\d+"
#: Client site folders of a simulator workspace, as a glob pattern.
SITE_GLOB = SITE_PREFIX + "*"


def site_name(i: int) -> str:
    """The name of client ``i`` (1-based): ``site-<i>``."""
    return f"{SITE_PREFIX}{i}"


def site_names(num_clients: int) -> list[str]:
    """The client sites of a job with ``num_clients`` clients: ``site-1`` .. ``site-<num_clients>``."""
    return [site_name(i) for i in range(1, num_clients + 1)]


#: A client name NVFlare accepts (``nvflare/apis/utils/format_check.py``, type ``client``:
#: ``^[A-Za-z0-9-_]+$``), here also starting with a letter or digit and at most 64 characters.
CLIENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def site_number(name: str) -> int | None:
    """The number of a client site name (``"site-12"`` -> 12); None for any other name."""
    return int(name.removeprefix(SITE_PREFIX)) if re.fullmatch(SITE_PATTERN, name) else None


def site_of_run(name: str, sites: list[str]) -> str | None:
    """The one of a job's ``sites`` a tracker's run ``name`` is of: ``name`` itself when it is one,
    else the longest of them it starts with, then ``-`` (MLflow's and W&B's run name for a site,
    ``<site>-<job id>-<job>-<run name>``: ``hospital-a-2-...`` is ``hospital-a-2``'s, not
    ``hospital-a``'s); None when none is."""
    if name in sites:
        return name
    return next((s for s in sorted(sites, key=len, reverse=True) if name.startswith(f"{s}-")), None)


# --- the simulator's result layout -------------------------------------------------------------------

#: The simulator's run folder of one site, ``<workspace>/<site>/simulate_job`` (NVFlare simulator layout).
SIMULATE_JOB = "simulate_job"
#: Where the simulator puts the server's result, inside one job's workspace.
SERVER_RESULT = f"{SERVER_SITE}/{SIMULATE_JOB}"
#: The model file the persistor writes: NPModelPersistor's defaults ``model_dir="models"``,
#: ``model_name="server.npy"`` (``nvflare/app_common/np/np_model_persistor.py``), below the result folder.
FINAL_MODEL = f"{SERVER_RESULT}/models/server.npy"
#: The model file PTFileModelPersistor writes (``framework: pytorch``): ``global_model_file_name``'s
#: default ``DefaultCheckpointFileName.GLOBAL_MODEL`` (``nvflare/app_common/app_constant.py``) in the
#: server's app folder, its ``APP_ROOT`` (``nvflare/app_opt/pt/file_model_persistor.py``, 2.7 and 2.9),
#: which is ``app_server`` in the server's result folder (the simulator's, and a downloaded run's).
PT_FINAL_MODEL = f"{SERVER_RESULT}/{SERVER_APP}/FL_global_model.pt"
#: Cross-site evaluation's results: ValidationJsonGenerator's defaults ``results_dir="cross_site_val"``,
#: ``json_file_name="cross_val_results.json"`` (``nvflare/app_common/widgets/validation_json_generator.py``),
#: below the server's result folder; ``{evaluating site: {model name: {metric: value}}}``.
CROSS_VAL_RESULTS = f"{SERVER_RESULT}/cross_site_val/cross_val_results.json"
#: MLflowReceiver's SQLite file in the job's result folder (NVFlare 2.9's default store).
MLFLOW_DB = "mlflow.db"
#: TBAnalyticsReceiver's default ``tb_folder`` (``nvflare/app_opt/tracking/tb/tb_receiver.py``).
TB_FOLDER_DEFAULT = "tb_events"
#: W&B's run folder in the job's result folder: the shipped ``OrderedWandBReceiver`` passes
#: ``dir=<run dir>`` to ``wandb.init`` (W&B's default would be ``./wandb`` of the server process).
WANDB_DIR = "wandb"
#: MLflowReceiver ``tracking_uri`` when the job gives none, per line. NVFlare 2.9 itself falls
#: back to SQLite ``mlflow.db`` in the job's result folder (None: write no tracking_uri). NVFlare
#: 2.7 falls back to a ``file://`` store, which MLflow 3 refuses, so 2.7 jobs name the same SQLite
#: file explicitly; ``{WORKSPACE}`` and ``{JOB_ID}`` are NVFlare system variables it fills in.
DEFAULT_TRACKING_URI = {"2.7": f"sqlite:///{{WORKSPACE}}/{{JOB_ID}}/{MLFLOW_DB}", "2.9": None}

# --- a downloaded job result (POC, production) -------------------------------------------------------

#: ``Session.download_job_result(job_id, destination)`` (``nvflare/fuel/flare_api/flare_api.py``)
#: gives ``<destination>/<job id>/`` holding ``meta.json`` (the job's meta: status, deploy detail),
#: ``job/<job folder>/`` (the folder as the server stored it after submission) and ``workspace/``
#: (the server's run folder of the job: ``log.json``, ``log.txt``, ``error_log.txt``, the
#: persistor's ``models/server.npy``, MLflow's ``mlflow.db``, ``tb_events/``, ``app_server/``).
#: Clients' run folders are not part of it; a POC client keeps its own in ``<site>/<job id>/``.
DOWNLOAD_WORKSPACE = "workspace"
DOWNLOAD_JOB = "job"
DOWNLOAD_META = "meta.json"
#: The run logs of a site's job folder that are kept (the server's and, on POC, each client's).
DOWNLOAD_LOGS = ("log.json", "log.txt", "error_log.txt")
#: Where the submitted folder, as the server stored it, goes in ``<downloads>/<job>/``.
SUBMITTED_JOB = "submitted"
#: How ``poc`` and ``submit`` lay a downloaded result out in ``<downloads>/<job>/``, as the
#: simulator's workspace of the job, so that one judge reads both (:mod:`generator.judge`):
#: (in the download, in ``<downloads>/<job>/``). The server's run logs sit where the simulator's
#: server logs do, the rest of its run folder where the simulator puts the server's result.
DOWNLOAD_MAP = (
    *((f"{DOWNLOAD_WORKSPACE}/{name}", f"{SERVER_SITE}/{name}") for name in DOWNLOAD_LOGS),
    (DOWNLOAD_WORKSPACE, SERVER_RESULT),
    (DOWNLOAD_JOB, SUBMITTED_JOB),
    (DOWNLOAD_META, DOWNLOAD_META),
)
#: A POC client's run logs (``<POC workspace>/<project>/prod_00/<site>/<job id>/``, each of
#: :data:`DOWNLOAD_LOGS`) go to ``<downloads>/<job>/<site>/``, where the simulator keeps a site's.
#: The POC system ``poc`` prepares: its project (the server's identity in its records), its
#: project admin (the admin startup kit's folder and user name), as NVFlare's ``dummy_project.yml``.
POC_PROJECT = "example_project"
POC_ADMIN = "admin@nvidia.com"
#: Marker files of the POC workspace folder and of the downloads folder (both cleared per run).
POC_WORKSPACE_MARKER = ".jobgen-poc-workspace"
POC_RESULTS_MARKER = ".jobgen-downloads"


# --- the workspaces folder ------------------------------------------------------------------------------

#: The marker file of a workspaces folder ``simulate`` made (each job's workspace in it is cleared).
WORKSPACE_MARKER = ".jobgen-workspaces"
#: The console logs' folder in the workspaces folder: ``<workspace>/_logs/<job>.log``. Neither it nor
#: the marker can be a job's workspace: a job name starts with a letter or a digit (the schema's
#: ``name`` pattern), so no job's files collide with another job's or with ours.
LOGS_DIR = "_logs"
#: The temporary files' folder of each run in the workspaces folder: ``<workspace>/_tmp/<job>`` is the
#: run's ``TMPDIR``, made before and removed after it (not inside ``<workspace>/<job>``: NVFlare's
#: simulator deletes and re-creates that folder when it starts). ``view`` gives its viewer a
#: ``_tmp/view-<tracker>-*`` beside the results file likewise (:func:`generator.viewers.viewer_tmp`).
TMP_DIR = "_tmp"
#: matplotlib's config and cache folder (``MPLCONFIGDIR``: its font list) in the workspaces folder,
#: kept between runs, so that drawing the plots writes nothing to ``$HOME``.
MPL_DIR = "_mpl"


# --- the manifest entry ----------------------------------------------------------------------------------


#: The folder beside the (first) jobs file that holds the client scripts and their modules.
SCRIPTS_DIR = "client_scripts"

#: The jobs file ``generate`` reads by default (the CLI's ``--jobs``, the Makefile's ``JOBS``).
DEFAULT_JOBS_FILE = "jobs.yaml"
#: The folder ``generate`` writes and ``simulate``/``poc``/``submit`` read by default (``--out``,
#: the Makefile's ``OUT``).
DEFAULT_OUT = "build/jobs"


def made_from(files: list[str], sets: list[str]) -> dict | None:
    """:attr:`ManifestEntry.made_from` of a job generated from the ``--jobs`` ``files`` and the
    ``--set`` items ``sets``: None for the default (``jobs.yaml`` alone, no ``--set``)."""
    files = [os.path.normpath(f) for f in files]  # ./exp.yaml is exp.yaml
    if files == [DEFAULT_JOBS_FILE] and not sets:
        return None
    return {"jobs": files, "set": list(sets)}


#: The :class:`ManifestEntry` fields only the manifest holds (no file of the job folder shows them):
#: what ``simulate`` checks a run against and how long it lets it run. A trial changed
#: ``expect.model_mean`` and ``generate --check`` said "up to date", then ``simulate`` judged the
#: run by the old value.
JUDGED_FIELDS = ("expect", "timeout")


def judged_changes(old: ManifestEntry | None, new: ManifestEntry) -> list[str]:
    """The :data:`JUDGED_FIELDS` whose value ``new`` changes from ``old`` (empty: none, or no ``old``)."""
    if old is None:
        return []
    return [name for name in JUDGED_FIELDS if getattr(old, name) != getattr(new, name)]


def made_from_text(origin: dict | None) -> str:
    """``exp.yaml``, ``a.yaml and b.yaml``, ``jobs.yaml with --set defaults.num_rounds=3``, ``jobs.yaml
    alone`` (None): the files (and overrides) of a :attr:`ManifestEntry.made_from`, for messages."""
    if not origin:
        return f"{DEFAULT_JOBS_FILE} alone"
    files = [str(f) for f in origin.get("jobs") or [DEFAULT_JOBS_FILE]]
    text = files[0] if len(files) == 1 else ", ".join(files[:-1]) + " and " + files[-1]
    sets = origin.get("set") or []
    return text + (" with " + " ".join(f"--set {shlex.quote(str(s))}" for s in sets) if sets else "")


@dataclass(frozen=True)
class ManifestEntry:
    """Facts about one generated job that ``simulate`` needs, stored in the output manifest.

    The JSON form (:meth:`to_json`) keeps the field order below; ``timeout`` is written only when
    the job sets one.

    Attributes:
        nvflare_version (str): the job's NVFlare line, e.g. ``"2.9"``.
        num_clients (int), num_rounds (int): the job's clients (``site-1`` ..) and FedAvg rounds.
        execution_mode (str): ``in_process`` or ``external_process``.
        script (str): the client script, relative to ``app/custom/``.
        receiver (str | None): the receiver ``type`` (mlflow, tensorboard, wandb), or None.
        tracking_uri (str | None): the MLflow store the receiver writes to (None: NVFlare's default).
        tb_folder (str | None): the TensorBoard receiver's folder, if set.
        expect (dict): the job's ``expect`` key (e.g. ``metric_points_per_site``).
        timeout (float | None): the job's ``timeout`` in seconds, if set.
        matrix (dict | None): for a job expanded from a ``matrix:``, ``{"job": the matrix job's
            name as written, "values": {matrix key: value}}``; written only then.
        workflow (str): the job's ``workflow`` (``fedavg``, ``cyclic``); written only when it is
            not ``fedavg`` (an entry without it reads as ``fedavg``).
        clients (list[str] | None): the job's ``clients`` names (passed to the simulator with
            ``-c``); written only when the job sets them (None: ``site-1`` .. ``site-<num_clients>``).
        apps (dict | None): a multi-app job's client apps, app folder -> ``{"sites": [names],
            "script": the script below <app>/custom/}``; written only for such a job (None: one
            app, ``app``, deployed to every site).
        cross_site_eval (bool): the job runs cross-site evaluation after training; written only
            when true.
        framework (str): the job's ``framework`` (``numpy``, ``pytorch``: which model file the
            persistor writes); written only when it is not ``numpy``.
        made_from (dict | None): what ``generate`` made the job from, ``{"jobs": [the --jobs files
            as given], "set": [the --set items]}``; written only when that is not the default
            ``jobs.yaml`` alone (None: the default, or a manifest from before it was recorded). A
            trial's ``make check`` after ``generate --jobs exp.yaml`` advised a ``make generate``
            that would have replaced every job with those of ``jobs.yaml``.
    """

    nvflare_version: str
    num_clients: int
    num_rounds: int
    execution_mode: str
    script: str
    receiver: str | None = None
    tracking_uri: str | None = None
    tb_folder: str | None = None
    expect: dict = field(default_factory=dict)
    timeout: float | None = None
    matrix: dict | None = None
    workflow: str = "fedavg"
    clients: list | None = None
    apps: dict | None = None
    cross_site_eval: bool = False
    framework: str = "numpy"
    made_from: dict | None = None

    @property
    def sites(self) -> list[str]:
        """The job's client names: its ``clients``, else ``site-1`` .. ``site-<num_clients>``."""
        return list(self.clients) if self.clients else site_names(self.num_clients)

    def scripts(self) -> dict[str, str]:
        """Each client script of the job, as its path inside the job folder -> its name below ``custom/``."""
        if not self.apps:
            return {custom_file(self.script): self.script}
        return {app_custom_file(app, facts["script"]): facts["script"] for app, facts in self.apps.items()}

    def to_json(self) -> dict:
        """The entry as stored in ``.jobgen.json`` (the optional fields only when set)."""
        data = {
            "nvflare_version": self.nvflare_version,
            "num_clients": self.num_clients,
            "num_rounds": self.num_rounds,
            "execution_mode": self.execution_mode,
            "script": self.script,
            "receiver": self.receiver,
            "tracking_uri": self.tracking_uri,
            "tb_folder": self.tb_folder,
            "expect": self.expect,
        }
        if self.timeout is not None:
            data["timeout"] = self.timeout
        if self.matrix is not None:
            data["matrix"] = self.matrix
        if self.workflow != "fedavg":
            data["workflow"] = self.workflow
        if self.clients:
            data["clients"] = list(self.clients)
        if self.apps:
            data["apps"] = self.apps
        if self.cross_site_eval:
            data["cross_site_eval"] = True
        if self.framework != "numpy":
            data["framework"] = self.framework
        if self.made_from is not None:
            data["made_from"] = self.made_from
        return data

    @classmethod
    def from_json(cls, data: dict) -> ManifestEntry:
        """An entry read from ``.jobgen.json``.

        Raises:
            KeyError: a required field (version, clients, rounds, mode, script) is missing.
            TypeError: ``data`` is not a mapping.
        """
        return cls(
            nvflare_version=data["nvflare_version"],
            num_clients=data["num_clients"],
            num_rounds=data["num_rounds"],
            execution_mode=data["execution_mode"],
            script=data["script"],
            receiver=data.get("receiver"),
            tracking_uri=data.get("tracking_uri"),
            tb_folder=data.get("tb_folder"),
            expect=data.get("expect") or {},
            timeout=data.get("timeout"),
            matrix=data.get("matrix"),
            workflow=data.get("workflow", "fedavg"),
            clients=data.get("clients"),
            apps=data.get("apps"),
            cross_site_eval=bool(data.get("cross_site_eval", False)),
            framework=data.get("framework", "numpy"),
            made_from=data.get("made_from") if isinstance(data.get("made_from"), dict) else None,
        )
