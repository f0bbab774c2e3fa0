"""Write stage: put rendered job folders on disk atomically, never touching what is not ours.

Takes ``{job name: {relative path: bytes}}``; gives the output folder (default ``build/jobs``).
The whole new tree is written to a temporary folder beside the target, each job checked before it
is written (every JSON file parses, every script an executor names is there), and swapped in with
two renames; on any error the temporary folder is removed and the previous output is left exactly
as it was. The output
folder carries a manifest (``.jobgen.json``) naming the job folders the generator wrote: a
folder without one, or an entry the manifest does not list, is never deleted or overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputError, Problem
from .jsontext import pretty_json

MANIFEST = ".jobgen.json"
GENERATOR_ID = "nvflare-jobgen"
CLIENT_CONFIG = "app/config/config_fed_client.json"


def _fail(path: Path, message: str) -> OutputError:
    return OutputError([Problem(str(path), 0, 0, "", message)])


def read_manifest(out: Path) -> dict:
    """The manifest of an output folder.

    Returns:
        dict: ``{"generator": ..., "jobs": {name: info}}``; an empty manifest if ``out`` is
        missing or empty.

    Raises:
        OutputError: ``out`` exists but is not a generated folder (no or foreign manifest), or it
            holds entries the manifest does not list.
    """
    out = Path(out)
    if not out.exists():
        return {"generator": GENERATOR_ID, "jobs": {}}
    if not out.is_dir() or out.is_symlink():
        raise _fail(out, "is not a folder the generator made; refusing to replace it (choose another --out)")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return {"generator": GENERATOR_ID, "jobs": {}}
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("generator") != GENERATOR_ID or not isinstance(manifest.get("jobs"), dict):
            raise ValueError
    except (OSError, ValueError):
        raise _fail(
            out,
            f"holds files the generator did not write (no {MANIFEST}); refusing to touch it: "
            "move it away or choose another --out",
        ) from None
    foreign = [e for e in entries if e != MANIFEST and e not in manifest["jobs"]]
    if foreign:
        raise _fail(
            out,
            f"holds {', '.join(foreign)}, which the generator did not write; refusing to touch "
            "the folder: move those away first",
        )
    return manifest


def _recover(out: Path) -> None:
    """Undo a swap that was killed between its two renames (``out`` gone, its old copy left)."""
    if out.exists():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if olds:
        os.rename(olds[-1], out)


def _executor_scripts(client_config: dict) -> list[str]:
    """Scripts the executors of a ``config_fed_client.json`` name, relative to ``app/custom/``.

    NVFlare 2.9: ``task_script_path`` (in-process) or the ``custom/<script>`` word of ``command``;
    NVFlare 2.7: ``task_script_path``, or the ``custom/<script>`` word of the SubprocessLauncher's
    ``script`` component.
    """
    words = []
    for ex in client_config.get("executors", []):
        args = ex["executor"]["args"]
        if args.get("task_script_path"):
            words.append("custom/" + args["task_script_path"])
        words.extend(args.get("command", []))
    for component in client_config.get("components", []):
        script = component.get("args", {}).get("script")
        if component["path"].endswith(".SubprocessLauncher") and isinstance(script, str):
            words.extend(script.split())
    return [w.removeprefix("custom/") for w in words if w.startswith("custom/")]


def _check_job(where: Path, files: dict[str, bytes]) -> None:
    """Every JSON file of a rendered job parses; every script an executor names is in ``app/custom/``.

    Raises:
        OutputError: naming the job folder (or file) at ``where``.
    """
    for rel, data in files.items():
        if rel.endswith(".json"):
            try:
                parsed = json.loads(data)
            except ValueError as e:
                raise _fail(where / rel, f"generated invalid JSON: {e}") from None
            if rel == CLIENT_CONFIG:
                for script in _executor_scripts(parsed):
                    if f"app/custom/{script}" not in files:
                        raise _fail(where, f"executor names script {script!r} but app/custom/ does not hold it")


def _read_tree(job_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(job_dir).as_posix(): p.read_bytes() for p in job_dir.rglob("*") if p.is_file()}


def _write_job(job_dir: str, files: dict[str, bytes]) -> None:
    """Write one job's files below the new folder ``job_dir`` (plain system calls: ~4 per file)."""
    os.mkdir(job_dir)
    made = {""}
    for rel, data in files.items():
        parent, _, _ = rel.rpartition("/")
        if parent not in made:
            os.makedirs(os.path.join(job_dir, parent), exist_ok=True)
            made.add(parent)
        fd = os.open(os.path.join(job_dir, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def write_jobs(
    out: Path,
    rendered: dict[str, dict[str, bytes]] | Iterable[tuple[str, dict[str, bytes]]],
    info: dict[str, dict],
    keep_others: bool = False,
) -> Path:
    """Replace the output folder with freshly rendered job folders, atomically.

    Args:
        out (Path): the output folder, e.g. ``build/jobs``; created with its parents if missing.
        rendered: job name -> {relative path -> bytes}, from :func:`generator.render.render_job`,
            as a dict or as an iterable of ``(name, files)`` pairs; an iterable is consumed one
            job at a time, so a large run never holds every rendered job in memory.
        info (dict): job name -> facts ``simulate`` needs (clients, rounds, receiver, expectations);
            stored in the manifest.
        keep_others (bool): keep job folders of an earlier run that are not in ``rendered``
            (``generate --job NAME``); otherwise the output holds exactly ``rendered``.

    Returns:
        Path: ``out``.

    Raises:
        OutputError: ``out`` holds anything the generator did not write, or a check of the new
            tree failed; nothing on disk has changed. Errors raised while iterating ``rendered``
            (e.g. TemplateError) leave the disk unchanged too.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover(out)
    manifest = read_manifest(out)
    jobs_info = dict(manifest["jobs"]) if keep_others else {}
    jobs_info.update(info)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        written = set()
        for name, files in rendered.items() if isinstance(rendered, dict) else rendered:
            _check_job(tmp / name, files)
            _write_job(os.path.join(tmp, name), files)
            written.add(name)
        if keep_others:
            for name in manifest["jobs"]:
                if name not in written and (out / name).is_dir():
                    shutil.copytree(out / name, tmp / name, symlinks=True)
                    _check_job(tmp / name, _read_tree(tmp / name))
        (tmp / MANIFEST).write_text(
            pretty_json({"generator": GENERATOR_ID, "jobs": dict(sorted(jobs_info.items()))}) + "\n",
            encoding="utf-8",
        )
        os.chmod(tmp, 0o755)
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _recover(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def diff_jobs(out: Path, rendered: dict[str, dict[str, bytes]]) -> list[str]:
    """What differs between ``out`` on disk and freshly ``rendered`` jobs (``generate --check``).

    Returns:
        list[str]: one line per difference (``missing``, ``changed``, ``unexpected``), sorted;
        empty when the folders are byte-identical to what would be generated.
    """
    out = Path(out)
    lines = []
    on_disk = read_manifest(out)["jobs"]
    for name in sorted(set(on_disk) - set(rendered)):
        lines.append(f"unexpected job folder: {out / name}")
    for name, files in sorted(rendered.items()):
        job_dir = out / name
        present = (
            {p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if p.is_file()}
            if job_dir.is_dir()
            else set()
        )
        for rel in sorted(set(files) | present):
            path = job_dir / rel
            if rel not in present:
                lines.append(f"missing: {path}")
            elif rel not in files:
                lines.append(f"unexpected: {path}")
            elif path.read_bytes() != files[rel]:
                lines.append(f"changed: {path}")
    return lines
