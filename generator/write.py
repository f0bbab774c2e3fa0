"""Write stage: put rendered job folders on disk atomically, never touching what is not ours.

Takes ``{job name: {relative path: bytes}}``; gives the output folder (default ``build/jobs``).

Ownership: the output folder carries a manifest (``.jobgen.json``) naming the job folders the
generator wrote, the SHA-256 of every file in them and, per job, a digest of what it was made
from (``inputs``). A folder without a manifest, an entry the manifest does not list, a file inside
a job folder it does not list, or a listed file whose content changed since it was written is
never deleted or overwritten: the run is refused and says which.

Hand edits are found by ``lstat``, not by reading every file: every file and folder the generator
leaves was last changed before the manifest was written, so its ctime (the inode change time,
which no user can set) is older than the manifest's mtime; any write since (a same-size edit whose
mtime is put back with ``touch -r`` included) gives a newer ctime, and only such files are hashed
(an edit that restores the bytes is no change). A folder with an older ctime has had no entry
added or removed. A manifest whose ctime is not within 100 ms of its mtime (copied, ``chmod``-ed)
is not trusted: then every file is hashed, as a clock stepped back would need too.

First run (or where ``renameat2(RENAME_EXCHANGE)`` is missing: not Linux, a file system that
refuses it): the whole new tree is written to ``.<out>.tmp-*`` beside the target (its manifest
first, so a leftover is recognisably ours), checked (every JSON file parses, every script
the job runs is there) and swapped in with two renames (``out`` -> ``.<out>.old-*``, temp ->
``out``); the old copy is then renamed ``.<out>.del-*`` and deleted, manifest last. A job whose
files are the ones on disk is hard-linked into the new tree (same bytes, mtime and inode).

Later runs (:func:`_exchange_in`): only changed job folders are written, into ``.<out>.tmp-*``, and
each is exchanged with the old one in one ``renameat2(RENAME_EXCHANGE)``, so no job folder is ever
missing; unchanged job folders are not touched, and not even rendered when their ``inputs`` digest
and the generator's code are as when the manifest was written. The manifest is rewritten (temp +
rename) before the exchanges, naming the run and describing old and new folders, and again after
them. A run killed at any point leaves each job folder old or new and a manifest that lists them;
the next run (:func:`recover`) finishes a started exchange, puts a previous output that was moved
aside back in place and deletes the leftovers, only those that hold our manifest (or nothing).
Runs on the same output folder are serialised with an advisory lock (``flock``) on its parent folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import OutputError, Problem
from .jsonio import loads, pretty, write_pretty
from .layout import CONFIG_FILES, DEFAULT_JOBS_FILE, GENERATOR_ID, MANIFEST, ManifestEntry, judged_changes
from .outputs import holding

#: Kinds of leftovers a run may leave beside ``out`` if killed: ``.<out>.<kind>-<suffix>``.
_TMP, _OLD, _DEL = "tmp", "old", "del"


def _fail(path: Path, message: str) -> OutputError:
    return OutputError([Problem(str(path), 0, 0, "", message)])


def _check_parents(out: Path) -> None:
    """Refuse an ``out`` below a file, or below a folder the generator writes (one holding a
    :data:`MANIFEST`): a trial's ``--out build/jobs/zzz`` was written, and the next ``make generate``
    then refused ``build/jobs`` for holding a folder it "did not write"; ``--out
    build/jobs/np-cyclic/app/custom/x`` wrote jobs into an app's ``custom/``, which NVFlare sends to
    every site. Raises OutputError."""
    for parent in Path(os.path.abspath(out)).parents:
        shown = os.path.relpath(parent) if parent.is_relative_to(Path.cwd()) else str(parent)
        if parent.exists() and not parent.is_dir():
            raise _fail(Path(shown), f"is a file, not a folder: {out} cannot be below it (choose another --out)")
        if (parent / MANIFEST).is_file():
            raise _fail(
                out,
                f"is inside {shown}, a folder of generated jobs (it holds {MANIFEST}), which generate "
                f"replaces as a whole: choose an --out outside it, such as "
                f"{os.path.join(os.path.dirname(shown), out.name)}",
            )


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``, as stored in the manifest."""
    return hashlib.sha256(data).hexdigest()


def _manifest_of(folder: Path) -> dict | None:
    """The parsed manifest of ``folder`` if it is one of ours, else None."""
    try:
        manifest = loads((folder / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR_ID:
        return None
    if not isinstance(manifest.get("jobs"), dict) or not isinstance(manifest.get("files", {}), dict):
        return None
    return manifest


def read_manifest(out: Path, reading: bool = False) -> dict:
    """The manifest of an output folder.

    Args:
        out (Path): the output folder, e.g. ``build/jobs``.
        reading (bool): the caller only reads the folder (``lint``, ``generate --check``,
            ``simulate``): its errors do not speak of replacing or touching it (a trial's read-only
            ``lint --out afile`` was told "refusing to replace it").

    Returns:
        dict: ``{"generator": ..., "jobs": {name: info}, "files": {name: {path: sha256}}}``; an
        empty manifest if ``out`` is missing or an empty folder. ``files`` is absent in manifests
        written before it existed.

    Raises:
        OutputError: ``out`` is a symlink or a file, or a folder without our manifest, or it holds
            entries the manifest does not list.
    """
    out = Path(out)
    if out.is_symlink():
        refusal = "" if reading else "; refusing to write through it"
        raise _fail(out, f"is a symlink, not a folder the generator made{refusal} (choose another --out)")
    if not out.exists():
        return {"generator": GENERATOR_ID, "jobs": {}}
    if not out.is_dir():
        refusal = "" if reading else "; refusing to replace it"
        raise _fail(out, f"is a file, not a folder the generator made{refusal} (choose another --out)")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return {"generator": GENERATOR_ID, "jobs": {}}
    manifest = _manifest_of(out)
    if manifest is None:
        if reading:
            if (out.parent / MANIFEST).is_file():  # a trial's --out build/exp/exp-full, one job's folder
                raise _fail(
                    out,
                    f"is the folder of job {out.name!r} in {out.parent}, which generate wrote: give --out "
                    f"{out.parent} --job {out.name}",
                )
            raise _fail(
                out, f"holds files the generator did not write (no {MANIFEST}): choose the --out generate wrote"
            )
        raise _fail(
            out,
            f"holds files the generator did not write (no {MANIFEST}); refusing to touch it: "
            "move it away or choose another --out",
        )
    removing = manifest.get("removing") if isinstance(manifest.get("removing"), list) else []
    foreign = [e for e in entries if e != MANIFEST and e not in manifest["jobs"] and e not in removing]
    if foreign:
        raise _fail(
            out,
            f"holds {', '.join(foreign)}, which the generator did not write; refusing to touch "
            "the folder: move those away first",
        )
    return manifest


def read_entries(out: Path) -> dict[str, ManifestEntry]:
    """The jobs of an output folder's manifest, in ``jobs.yaml`` order: name -> :class:`ManifestEntry`.

    Raises:
        OutputError: as :func:`read_manifest`, or an entry lacks a field simulate needs.
    """
    return _entries(Path(out), read_manifest(out, reading=True)["jobs"])


def _entries(out: Path, jobs: dict, strict: bool = True) -> dict[str, ManifestEntry]:
    """The ``jobs`` of ``out``'s manifest as entries; not ``strict``: without those that are not one
    (an earlier run's entry this run replaces anyway). Raises OutputError: (``strict``) an entry is
    not one."""
    entries = {}
    for name, entry in jobs.items():
        try:
            entries[name] = ManifestEntry.from_json(entry)
        except (KeyError, TypeError) as e:
            if not strict:
                continue
            why = f"lacks {e}" if isinstance(e, KeyError) else "is not a JSON object"
            raise _fail(out / MANIFEST, f"the entry of job {name!r} {why}: run `make generate` again") from None
    return entries


def _stamp(out: Path) -> int | None:
    """The manifest's modification time (ns) if it can vouch for the files written before it, else None.

    Every file and folder the generator leaves in ``out`` was last changed before the manifest was
    written, so its inode change time (ctime, which no user can set) is older than the manifest's
    mtime. A file changed since (even by ``touch -r``, or a same-size edit) has a newer ctime. The
    manifest's own ctime must be close to its mtime (we write it, then rename it into place): a
    manifest that was copied (``cp -a``, ``rsync``), ``chmod``-ed or restored is not trusted, and
    every file is then hashed.
    """
    try:
        st = os.lstat(out / MANIFEST)
    except OSError:
        return None
    if not 0 <= st.st_ctime_ns - st.st_mtime_ns <= _STAMP_SLACK_NS:
        return None
    return st.st_mtime_ns


#: The longest time (ns) between the last write of a manifest and its rename into place; longer
#: (the manifest copied, ``chmod``-ed, or the run stalled in between): not trusted.
_STAMP_SLACK_NS = 100_000_000


def _unchanged_since(job_dir: Path, recorded: dict, needed: set, stamp: int | None) -> bool:
    """Whether the job folder is exactly as the generator left it, by ``lstat`` alone: every folder
    (its entries) and every listed file unchanged since ``stamp`` (ctime older), each file present
    and regular. False means "look closer" (:func:`_not_ours` then lists and hashes), not "changed"."""
    if stamp is None:
        return False
    prefix = f"{job_dir}/"
    lstat, is_dir, is_file = os.lstat, stat.S_ISDIR, stat.S_ISREG
    try:
        for rel in needed:
            st = lstat(prefix + rel)
            if not is_dir(st.st_mode) or st.st_ctime_ns >= stamp:
                return False
        for rel in recorded:
            st = lstat(prefix + rel)
            if not is_file(st.st_mode) or st.st_ctime_ns >= stamp:
                return False
    except OSError:
        return False
    return True


#: What :func:`_not_ours` says of a file or folder in a job folder that the manifest does not list.
NOT_WRITTEN = "was not written by the generator; refusing to delete it (move it away)"


def _not_ours(out: Path, manifest: dict, stamp: int | None = None) -> tuple[list[Problem], set[str]]:
    """Files and folders inside the listed job folders that the generator did not write as they are.

    Args:
        out (Path): the output folder. manifest (dict): its manifest.
        stamp (int | None): :func:`_stamp` of ``out``: a job folder whose folders and files all
            have an older ctime is taken as written (no listing, no hashing); a file with an older
            ctime is not hashed. None: every job folder is listed and every file hashed.

    Returns:
        tuple: the problems (empty: every job folder holds only what the generator wrote, as
        written), and the names of the job folders that hold every file the manifest lists
        (``intact``; a file deleted by hand makes its job not intact).
    """
    problems = []
    intact = set()
    all_files = manifest.get("files")
    for name in sorted(manifest["jobs"]):
        job_dir = out / name
        try:
            mode = os.lstat(job_dir).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(mode):
            problems.append(
                Problem(str(job_dir), 0, 0, "", "is not the folder the generator wrote; refusing to replace it")
            )
            continue
        if all_files is None:  # a manifest from before file lists: only its top level is known
            continue
        recorded = all_files.get(name, {})
        needed = _folders(recorded)
        if _unchanged_since(job_dir, recorded, needed, stamp):
            intact.add(name)
            continue
        found = len(problems)
        present = set()
        for root, dirs, files in os.walk(job_dir):
            for entry in sorted(dirs) + sorted(files):
                path = Path(root) / entry
                rel = path.relative_to(job_dir).as_posix()
                is_dir = entry in dirs and not path.is_symlink()
                if is_dir and rel in needed:
                    continue
                if is_dir or rel not in recorded:
                    problems.append(
                        Problem(
                            str(path),
                            0,
                            0,
                            "",
                            NOT_WRITTEN,
                        )
                    )
                elif path.is_symlink() or not (_older(path, stamp) or sha256(path.read_bytes()) == recorded[rel]):
                    problems.append(
                        Problem(
                            str(path),
                            0,
                            0,
                            "",
                            "was changed since it was generated; refusing to overwrite it "
                            "(move it away to keep the change, or delete it)",
                        )
                    )
                else:
                    present.add(rel)
            dirs[:] = [d for d in dirs if (Path(root) / d).relative_to(job_dir).as_posix() in needed]
        if len(problems) == found and present >= set(recorded):
            intact.add(name)
    return problems, intact


def edited_files(out: Path, names: Iterable[str]) -> list[tuple[Path, str]]:
    """Files in the job folders ``names`` of ``out`` that are not what ``generate`` wrote there:
    ``(path, "edited")`` for a file changed since (a hand edit of a config), ``(path, "added")`` for
    a file or folder it did not write. ``simulate``, ``poc`` and ``submit`` run such a folder as it
    is and judge it by what the jobs file said (rounds, clients, ``expect``): a trial's config edited
    from 4 rounds to 6 failed with "6 of 4 rounds started" and nothing said why. Uses the manifest's
    timestamps and hashes as :func:`write_jobs` does (about a millisecond per untouched job).

    Returns:
        list[tuple[Path, str]]: in job, then path order; empty also when ``out`` has no readable manifest.
    """
    out = Path(out)
    try:
        manifest = read_manifest(out)
    except OutputError:
        return []
    wanted = set(names)
    problems, _ = _not_ours(out, {**manifest, "jobs": [n for n in manifest["jobs"] if n in wanted]}, _stamp(out))
    return [(Path(p.file), "added" if p.message == NOT_WRITTEN else "edited") for p in problems]


def _folders(rels) -> set[str]:
    """The folders holding the files ``rels`` (posix paths relative to a job folder), the job
    folder itself as ``""``: ``{"a/b.json"}`` -> ``{"", "a"}``."""
    folders = {""}
    for rel in rels:
        parent = rel.rpartition("/")[0]
        while parent and parent not in folders:
            folders.add(parent)
            parent = parent.rpartition("/")[0]
    return folders


def _older(path: Path, stamp: int | None) -> bool:
    """``path`` is a regular file last changed before ``stamp`` (so as the generator wrote it)."""
    if stamp is None:
        return False
    st = os.lstat(path)
    return st.st_ctime_ns < stamp and path.is_file()


def _leftovers(out: Path, kind: str) -> list[Path]:
    """Our leftovers of ``kind`` beside ``out``, oldest first."""
    prefix = f".{out.name}.{kind}-"
    found = []
    with contextlib.suppress(OSError):
        for p in out.parent.iterdir():
            if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink():
                # ours: it holds our manifest, or nothing but a manifest being written (killed early)
                if _manifest_of(p) is not None or {c.name for c in p.iterdir()} <= {MANIFEST, MANIFEST + ".part"}:
                    found.append(p)
    return sorted(found)


def _remove(folder: Path) -> None:
    """Delete one of our folders, its manifest last (a half-deleted folder is still recognisably ours)."""
    for child in list(folder.iterdir()):
        if child.name == MANIFEST:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with contextlib.suppress(FileNotFoundError):
        (folder / MANIFEST).unlink()
    folder.rmdir()


def recover(out: Path) -> None:
    """Clean up after a run that was killed while writing ``out``.

    If ``out``'s manifest names a per-job exchange that a leftover ``.<out>.tmp-*`` planned, the
    exchange is finished (:func:`_finish_exchange`): every job folder new, the final manifest
    written. If ``out`` is missing and a previous output was moved aside (``.<out>.old-*``), it is
    moved back, byte for byte as it was. Every other leftover of ours (``.<out>.tmp-*``,
    ``.<out>.old-*``, ``.<out>.del-*`` holding our manifest, or empty) is deleted; anything else
    with such a name is left alone. Call it with the output folder's lock held.

    Raises:
        OSError: a rename or delete failed (the caller turns it into an OutputError).
    """
    out = Path(out)
    for folder in _leftovers(out, _TMP):
        _finish_exchange(out, folder)
    olds = _leftovers(out, _OLD)
    if olds and not os.path.lexists(out):
        os.rename(olds.pop(), out)
    for folder in _leftovers(out, _TMP) + olds + _leftovers(out, _DEL):
        _remove(folder)


@contextlib.contextmanager
def _locked(folder: Path, out: Path):
    """Hold an exclusive advisory lock (:func:`generator.outputs.holding`) on ``folder`` (the
    output's parent: one generate at a time) and on the output folder ``out`` if it is there: a
    ``simulate``, ``poc`` or ``submit`` running its job folders holds a shared one
    (:func:`generator.outputs.one_run_in`), and they must not change under it."""
    with contextlib.ExitStack() as held:
        held.enter_context(holding(folder, "another generate run is writing here; try again when it has finished"))
        if out.is_dir() and not out.is_symlink():
            refusal = (
                "a simulate, poc or submit run is running the job folders here; generating now would change them "
                "under it: try again when it has finished, or generate into another --out"
            )
            held.enter_context(holding(out, refusal))
        yield


def _check_job(where: Path, files: dict[str, bytes], entry: ManifestEntry, rendered: bool) -> None:
    """A job's JSON files parse and its script is in ``app/custom/``.

    Args:
        where (Path): the job folder, for messages. files (dict): relative path -> bytes.
        entry (ManifestEntry): the job's manifest entry (its ``script``).
        rendered (bool): ``files`` come from render, which parsed every config it made: only the
            other JSON files (shipped ones) are parsed here.

    Raises:
        OutputError: naming the job folder (or file) at ``where``.
    """
    for rel, data in files.items():
        if rel.endswith(".json") and not (rendered and rel in CONFIG_FILES):
            try:
                json.loads(data)
            except ValueError as e:
                raise _fail(where / rel, f"generated invalid JSON: {e}") from None
    for path, script in entry.scripts().items():
        if path not in files:
            folder = path.removesuffix(script)
            raise _fail(where, f"executor names script {script!r} but {folder} does not hold it")


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


def _manifest(jobs: dict, files: dict, inputs: dict | None = None, extra: dict | None = None) -> dict:
    """The manifest of ``jobs`` (name -> :class:`ManifestEntry` or its JSON), their ``files`` and
    ``inputs`` (name -> :meth:`generator.render.Renderer.inputs`; left out when None)."""
    # jobs keep jobs.yaml order: simulate runs them in that order
    entries = {name: entry if isinstance(entry, dict) else entry.to_json() for name, entry in jobs.items()}
    manifest = {"generator": GENERATOR_ID, "jobs": entries, "files": dict(sorted(files.items()))}
    if inputs is not None:
        manifest["inputs"] = dict(sorted(inputs.items()))
    return {**manifest, **(extra or {})}


def _write_manifest(
    folder: Path, jobs: dict, files: dict, inputs: dict | None = None, extra: dict | None = None
) -> None:
    """Write ``folder``'s manifest atomically (``.part``, then renamed over the old one).

    Args:
        folder (Path): the folder. jobs (dict): name -> :class:`ManifestEntry` (or its JSON).
        files (dict): name -> {relative path -> SHA-256}. inputs (dict | None): name -> inputs
            digest (None: no ``inputs``). extra (dict | None): more top-level keys (a run in
            progress: ``token``, ``previous``, ``removing``, ``plan``).
    """
    part = folder / (MANIFEST + ".part")
    with open(part, "wb") as f:
        _write_pretty(f, _manifest(jobs, files, inputs, extra))
    os.replace(part, folder / MANIFEST)


#: Up to this many jobs a manifest is pretty-printed in one piece (faster); above, piece by piece
#: (a manifest of 10,000 jobs is ~10 MB of JSON: never held as one string).
_WHOLE_MANIFEST_JOBS = 2000


def _write_pretty(file, manifest: dict) -> None:
    """Write the manifest's JSON (ASCII, indent 2) to the binary ``file``; same bytes either way."""
    if len(manifest["jobs"]) <= _WHOLE_MANIFEST_JOBS:
        file.write(pretty(manifest, ensure_ascii=True))
    else:
        write_pretty(file, manifest, ensure_ascii=True)


@dataclass
class Written:
    """What :func:`write_jobs` did to the output folder.

    Attributes:
        removed (list[str]): job folders of the earlier run that are gone now (not in ``info``;
            none with ``keep_others``), in the earlier manifest's order.
        unchanged (list[str]): jobs of ``rendered`` whose folders were left as they were (their
            rendered files are the ones on disk: same bytes, mtime and inode), in ``rendered``'s order.
        removed_from (dict[str, dict | None]): each removed job's
            :attr:`generator.layout.ManifestEntry.made_from` in the earlier manifest.
        replaced_from (dict[str, dict | None]): each job of ``info`` whose earlier folder was made
            from other files, or with a ``--set`` item ``info`` does not give it now: that earlier
            ``made_from``. A trial's regenerated job, first made from
            ``exp.yaml``, was replaced by ``jobs.yaml``'s without a word.
        rejudged (dict[str, list[str]]): each job of ``info`` whose manifest entry changes a field
            only the manifest holds (:data:`generator.layout.JUDGED_FIELDS`: ``expect``,
            ``timeout``): those fields. Its folder may be left as it was, yet simulate judges it anew.
    """

    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed_from: dict[str, dict | None] = field(default_factory=dict)
    replaced_from: dict[str, dict | None] = field(default_factory=dict)
    rejudged: dict[str, list[str]] = field(default_factory=dict)


def write_jobs(
    out: Path,
    rendered: dict[str, dict[str, bytes]] | Iterable[tuple[str, dict[str, bytes]]],
    info: dict[str, ManifestEntry],
    keep_others: bool = False,
    inputs: Mapping[str, str] | None = None,
) -> Written:
    """Replace the output folder with freshly rendered job folders, atomically.

    Args:
        out (Path): the output folder, e.g. ``build/jobs``; created with its parents if missing.
        rendered: job name -> {relative path -> bytes}, from :meth:`generator.render.Renderer.render`,
            as a dict or as an iterable of ``(name, files)`` pairs; an iterable is consumed one
            job at a time, so a large run never holds every rendered job in memory.
        info (dict[str, ManifestEntry]): job name -> facts ``simulate`` needs (clients, rounds,
            receiver, expectations); stored in the manifest.
        keep_others (bool): keep job folders of an earlier run that are not in ``rendered``
            (``generate --job NAME``); otherwise the output holds exactly ``rendered``.
        inputs (Mapping[str, str] | None): job name -> digest of what the job is made from
            (:meth:`generator.render.Renderer.inputs`), stored in the manifest. With ``rendered``
            a :class:`~collections.abc.Mapping` that renders on lookup, a job whose digest, and
            the generator's code and templates, are unchanged since the manifest was written and
            whose folder is intact is not rendered at all.

    Returns:
        Written: the job folders of the earlier run that are gone now, and the jobs whose folders
        were left as they were.

    Raises:
        OutputError: ``out`` is not ours (see :func:`read_manifest`), a job folder in it holds a
            file the generator did not write or one changed since, another run holds the lock,
            a check of a new job failed, or the disk refused a write; the previous output is
            left as it was. Errors raised while iterating ``rendered`` (e.g. TemplateError)
            leave it as it was too.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    if out.parent == out:
        raise _fail(out, "is the root of the file system; choose a folder for the generated jobs (--out)")
    _check_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out.parent, out):
            recover(out)
            manifest = read_manifest(out)
            if manifest.get("token"):  # recover() found no temporary folder to finish the run with
                raise _fail(
                    out / MANIFEST,
                    f"names a run that was interrupted while replacing job folders, and its folder "
                    f"{out.parent / str(manifest['token'])} is gone, so it cannot be finished; refusing to "
                    "guess which job folders are whose: move the output folder away and generate again",
                )
            stamp = _stamp(out)
            problems, intact = _not_ours(out, manifest, stamp)
            if problems and keep_others:  # a trial's --job hello-pt was refused for hello-numpy's edit, unexplained
                problems = [_in_other_job(out, p, info) for p in problems]
            if problems:
                raise OutputError(problems)
            written = Written(removed=[] if keep_others else [name for name in manifest["jobs"] if name not in info])
            written.removed_from = {name: _made_from(manifest["jobs"][name]) for name in written.removed}
            earlier = {name: _made_from(manifest["jobs"][name]) for name in info if name in manifest["jobs"]}
            written.replaced_from = {
                name: theirs for name, theirs in earlier.items() if _made_elsewhere(theirs, info[name].made_from)
            }
            old_entries = _entries(out, manifest["jobs"], strict=False)
            written.rejudged = {
                name: changed for name in info if (changed := judged_changes(old_entries.get(name), info[name]))
            }
            on_disk = _job_digests(manifest)
            tmp = _exchange_folder(out, manifest)
            if tmp is not None:
                written.unchanged = _exchange_in(
                    out, tmp, rendered, info, manifest, keep_others, on_disk, intact, inputs, stamp
                )
                return written
            if not keep_others:  # the earlier run's file hashes (10,000 jobs: ~30 MB) are not needed
                manifest = None
            written.unchanged = _swap_in(out, rendered, info, manifest, keep_others, on_disk, inputs)
    except OSError as e:
        where = e.filename or out
        raise _fail(Path(where), f"cannot write: {e.strerror or e}") from None
    return written


def _in_other_job(out: Path, problem: Problem, selected) -> Problem:
    """``problem`` (of :func:`_not_ours`) with why it matters to a ``generate --job`` that did not
    select its job: the other job folders are carried into the new output and checked too (a file
    the generator did not write, or changed, could be lost or overwritten otherwise)."""
    try:
        job = Path(problem.file).relative_to(out).parts[0]
    except (ValueError, IndexError):
        return problem
    if job in selected:
        return problem
    note = f" (job {job!r} is not selected, but generate --job carries every other job folder over and checks it too)"
    return replace(problem, message=problem.message + note)


def _made_elsewhere(earlier: dict | None, now: dict | None) -> bool:
    """Whether a job made from ``now`` (a :attr:`generator.layout.ManifestEntry.made_from`; None:
    ``jobs.yaml`` alone) replaces one made from other files than ``now``'s, or with a ``--set``
    item ``now`` does not give (``earlier``); adding ``--set`` items to the same files is not."""
    earlier, now = earlier or {}, now or {}
    files = (earlier.get("jobs") or [DEFAULT_JOBS_FILE], now.get("jobs") or [DEFAULT_JOBS_FILE])
    return files[0] != files[1] or not set(earlier.get("set") or []) <= set(now.get("set") or [])


def _made_from(entry) -> dict | None:
    """A manifest entry's ``made_from`` (None: the default jobs file, or not a recorded one)."""
    found = entry.get("made_from") if isinstance(entry, dict) else None
    return found if isinstance(found, dict) else None


def made_from_of(
    out: Path, entries: dict[str, ManifestEntry] | None = None
) -> dict[str, tuple[dict | None, str | None]]:
    """Job name -> (:attr:`generator.layout.ManifestEntry.made_from`, the name of the matrix job it
    was expanded from or None) of the jobs in ``out``'s manifest (``entries``, when the caller has
    read them: :func:`read_entries`), in its order; empty when ``out`` holds no manifest of ours."""
    if entries is None:
        try:
            entries = read_entries(Path(out))
        except OutputError:
            return {}
    return {name: (entry.made_from, (entry.matrix or {}).get("job")) for name, entry in entries.items()}


def _hashes(files: dict[str, bytes]) -> dict[str, str]:
    """``{path: SHA-256}`` of one job's rendered files, in path order. Paths and digests that many
    jobs share (the same script in each) are one string each (``sys.intern``): 10,000 jobs' file
    lists take ~3 MB less."""
    return {sys.intern(rel): sys.intern(sha256(data)) for rel, data in sorted(files.items())}


def _job_digest(hashes: dict[str, str]) -> str:
    """One digest of a job folder's files: SHA-256 over each ``path`` and its file's SHA-256, in path order."""
    return sha256("".join(f"{rel}\0{digest}\n" for rel, digest in sorted(hashes.items())).encode("utf-8"))


def _job_digests(manifest: dict) -> dict[str, str]:
    """:func:`_job_digest` of each job folder the manifest lists files for (name -> digest).

    Call it after :func:`_not_ours` found nothing: then every file on disk in these folders is one
    the manifest lists, with the content it lists.
    """
    files = manifest.get("files") or {}
    return {name: _job_digest(files[name]) for name in manifest["jobs"] if isinstance(files.get(name), dict)}


def _link_job(source: Path, job_dir: str, rels: Iterable[str]) -> bool:
    """Make the new folder ``job_dir`` hold the files ``rels`` of ``source`` as hard links: the same
    files (bytes, mtime, inode), written by no one. Returns False, leaving no ``job_dir``, when a
    link cannot be made (a file missing, a file system without hard links)."""
    os.mkdir(job_dir)
    made = {""}
    try:
        for rel in rels:
            parent, _, _ = rel.rpartition("/")
            if parent not in made:
                os.makedirs(os.path.join(job_dir, parent), exist_ok=True)
                made.add(parent)
            os.link(source / rel, os.path.join(job_dir, rel), follow_symlinks=False)
    except OSError:
        shutil.rmtree(job_dir)
        return False
    return True


def _swap_in(
    out: Path,
    rendered: dict,
    info: dict,
    manifest: dict | None,
    keep_others: bool,
    on_disk: dict[str, str],
    inputs: Mapping[str, str] | None = None,
) -> list[str]:
    """Build the new output in a temporary folder beside ``out`` and swap it in (see the module docstring).

    A job whose rendered files are the ones on disk (``on_disk``: name -> :func:`_job_digest` of
    the earlier run's files, checked against the disk by :func:`_not_ours`) is hard-linked from
    ``out`` instead of written: its files keep their bytes, mtime and inode. Returns those jobs' names.
    """
    jobs_info = _entries(out, manifest["jobs"]) if keep_others else {}
    jobs_info.update(info)
    hashes, digests, linked = {}, {}, []
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_TMP}-", dir=out.parent))
    try:
        _write_manifest(tmp, jobs_info, {})  # first: a leftover of a killed run is recognisably ours
        for name, files in rendered.items() if isinstance(rendered, Mapping) else rendered:
            _check_job(tmp / name, files, jobs_info[name], rendered=True)  # in memory, before it is written
            hashes[name] = _hashes(files)
            if inputs is not None:
                digests[name] = inputs[name]
            same = on_disk.get(name) == _job_digest(hashes[name])
            if same and _link_job(out / name, os.path.join(tmp, name), files):
                linked.append(name)
            else:
                _write_job(os.path.join(tmp, name), files)
        if keep_others:
            for name in manifest["jobs"]:
                if name not in hashes and (out / name).is_dir():
                    listed = manifest.get("files", {}).get(name)
                    if not (listed and _link_job(out / name, os.path.join(tmp, name), listed)):
                        shutil.copytree(out / name, tmp / name, symlinks=True)
                    tree = _read_tree(tmp / name)
                    hashes[name] = listed or _hashes(tree)
                    _check_job(tmp / name, tree, jobs_info[name], rendered=False)
                    if name in (manifest.get("inputs") or {}):
                        digests[name] = manifest["inputs"][name]
        _write_manifest(tmp, jobs_info, hashes, digests or None)
        os.chmod(tmp, 0o755)
        old = None
        if os.path.lexists(out):
            old = out.parent / f".{out.name}.{_OLD}-{time.time_ns()}"
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        recover(out)  # puts the previous output back if it was moved aside; deletes the temp folder
        raise
    if old is not None:
        trash = out.parent / f".{out.name}.{_DEL}-{time.time_ns()}"
        os.rename(old, trash)
        _remove(trash)
    return linked


# --- per-job exchange ------------------------------------------------------------------------------

#: ``renameat2`` flags (linux/fs.h) and the "current directory" file descriptor.
_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100
_renameat2 = None


def _libc_renameat2():
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None where there is none."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        import ctypes

        try:
            func = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError, TypeError):  # no renameat2; Windows: no CDLL(None)
            return None
        func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        func.restype = ctypes.c_int
        _renameat2 = func
    return _renameat2 or None


def _rename2(src: str | Path, dst: str | Path, flags: int) -> None:
    """``renameat2(src, dst, flags)``. Raises OSError (as ``os.rename`` would) when it fails."""
    func = _libc_renameat2()
    if func is None:
        raise OSError(38, "renameat2 is not available", str(src))  # ENOSYS
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(dst))


def _exchange(a: str | Path, b: str | Path) -> None:
    """Swap the two existing entries ``a`` and ``b`` in one step (``RENAME_EXCHANGE``): at no moment
    is either name missing. Raises OSError: one is missing, or the file system cannot do it."""
    _rename2(a, b, _RENAME_EXCHANGE)


def _move_in(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` to ``dst``, which must not exist (``RENAME_NOREPLACE``: never replaces what a
    user put there meanwhile). Raises OSError: ``dst`` exists, or the rename failed."""
    _rename2(src, dst, _RENAME_NOREPLACE)


def _exchange_folder(out: Path, manifest: dict) -> Path | None:
    """A new temporary folder beside ``out`` to build changed job folders in, when they can be
    exchanged with the old ones one by one; else None (use the whole-tree swap).

    Per-job exchange needs an output of ours that lists its files (``files``), and a file
    system that does ``renameat2(RENAME_EXCHANGE)`` (Linux 3.15+; tried on two empty folders in
    the temporary folder, which must be on the file system of ``out``).
    """
    if not manifest["jobs"] or manifest.get("files") is None or _libc_renameat2() is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_TMP}-", dir=out.parent))
    try:
        _write_manifest(tmp, {}, {})  # first: a leftover of a killed run is recognisably ours
        a, b = tmp / ".probe-a", tmp / ".probe-b"
        os.mkdir(a)
        os.mkdir(b)
        try:
            _exchange(a, b)
            supported = os.stat(tmp).st_dev == os.stat(out).st_dev
        except OSError:
            supported = False
        os.rmdir(a)
        os.rmdir(b)
    except BaseException:
        _remove(tmp)
        raise
    if not supported:
        _remove(tmp)
        return None
    return tmp


def _exchange_in(
    out: Path,
    tmp: Path,
    rendered,
    info: dict,
    manifest: dict,
    keep_others: bool,
    on_disk: dict[str, str],
    intact: set[str],
    inputs: Mapping[str, str] | None = None,
    stamp: int | None = None,
) -> list[str]:
    """Replace only the changed job folders of ``out``, each in one atomic step; leave the others
    alone. Returns the jobs of ``rendered`` left alone, in its order.

    1. Each job whose files differ from the ones on disk (or whose folder is not ``intact``) is
       written into ``tmp`` (beside ``out``); unchanged job folders are not touched (same inode,
       bytes and mtime). A job is not even rendered when ``rendered`` is a Mapping (rendering on
       lookup), its ``inputs`` digest is the one the manifest lists, its folder is intact, and
       the generator's code and templates are older than the manifest (``stamp``,
       :func:`_code_unchanged_since`). Nothing in ``out`` has changed yet: an error here removes
       ``tmp`` and leaves ``out`` as it was.
    2. ``tmp``'s manifest gets the plan: the new folders (by inode) and the job folders to remove.
    3. ``out``'s manifest is replaced (temp + rename) by the new one plus ``token`` (``tmp``'s
       name), ``previous`` (the old :func:`_job_digest` of each changed job) and ``removing``:
       from here it describes every mix of old and new job folders, and a killed run is rolled
       forward by :func:`recover`.
    4. Each changed folder is exchanged with the old one (``RENAME_EXCHANGE``: the job folder is
       never missing), a new one renamed in; removed job folders are renamed into ``tmp``.
    5. ``out``'s manifest is replaced by the final one, then ``tmp`` (the old folders) deleted.
    """
    old_jobs = manifest["jobs"]
    old_files = manifest["files"]
    old_inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    reuse = inputs is not None and isinstance(rendered, Mapping) and _code_unchanged_since(stamp)
    hashes, digests, changed, kept = {}, {}, [], []
    try:
        jobs_info = _entries(out, old_jobs) if keep_others else {}
        jobs_info.update(info)
        for name, files in _lazily(rendered):
            kept.append(name)
            if inputs is not None:
                digests[name] = inputs[name]
            if (
                reuse
                and name in intact
                and old_inputs.get(name) == digests[name]
                and isinstance(old_files.get(name), dict)
            ):
                hashes[name] = old_files[name]  # made from the same inputs by the same code: the same files
                continue
            files = rendered[name] if files is None else files
            _check_job(tmp / name, files, jobs_info[name], rendered=True)  # in memory, before it is written
            hashes[name] = _hashes(files)
            if name in intact and on_disk.get(name) == _job_digest(hashes[name]):
                continue
            _write_job(os.path.join(tmp, name), files)
            changed.append(name)
        if keep_others:
            for name in old_jobs:
                if name not in hashes and isinstance(old_files.get(name), dict):
                    hashes[name] = old_files[name]
                    if name in old_inputs:
                        digests[name] = old_inputs[name]
        digests = digests or None
        removed = [name for name in old_jobs if name not in jobs_info and os.path.lexists(out / name)]
        written = set(changed)
        kept = [name for name in kept if name not in written]
        if not changed and not removed:
            if (out / MANIFEST).read_bytes() != _manifest_bytes(jobs_info, hashes, digests):
                _write_manifest(out, jobs_info, hashes, digests)
            _remove(tmp)
            return kept
        new_inodes = {name: os.lstat(tmp / name).st_ino for name in changed}
        plan = {"token": tmp.name, "changed": new_inodes, "removed": removed}
        _write_manifest(tmp, {}, {}, extra={"plan": plan})
    except BaseException:
        _remove(tmp)
        raise
    previous = {name: on_disk[name] for name in changed if name in on_disk}
    progress = {"token": tmp.name, "previous": previous, "removing": removed}
    _write_manifest(out, jobs_info, hashes, digests, extra=progress)
    _apply_plan(out, tmp, plan)
    _write_manifest(out, jobs_info, hashes, digests)
    _remove(tmp)
    return kept


def _lazily(rendered) -> Iterable[tuple[str, dict | None]]:
    """``(name, files)`` of each job of ``rendered``; from a Mapping, ``files`` None (not rendered
    yet: look it up when needed), else as the iterable (or dict) gives them."""
    if isinstance(rendered, Mapping) and not isinstance(rendered, dict):
        return ((name, None) for name in rendered)
    return rendered.items() if isinstance(rendered, dict) else rendered


#: Where the code that writes job folders lives: the generator's package and its templates.
_CODE_ROOTS = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "templates")

#: Modules whose upgrade could change what is written (their package's ``__init__`` is checked).
_CODE_MODULES = ("jinja2", "markupsafe", "orjson", "json")


def _code_unchanged_since(stamp: int | None) -> bool:
    """Whether every file and folder of the generator's package and templates (caches aside) and
    the ``__init__`` of each of :data:`_CODE_MODULES` was last changed (ctime) before ``stamp``:
    then job folders written then are what this code writes. False when ``stamp`` is None or
    anything cannot be read. About 60 ``lstat`` calls."""
    if stamp is None:
        return False
    try:
        for root in _CODE_ROOTS:
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if d not in ("__pycache__", "__jinja2cache__")]
                for name in (".", *files):
                    if os.lstat(os.path.join(folder, name)).st_ctime_ns >= stamp:
                        return False
        for module in _CODE_MODULES:
            path = getattr(sys.modules.get(module), "__file__", None)
            if path and os.stat(path).st_ctime_ns >= stamp:
                return False
    except OSError:
        return False
    return True


def _apply_plan(out: Path, tmp: Path, plan: dict) -> None:
    """Step 4 of :func:`_exchange_in`, or what is left of it after a kill (each step is skipped
    when done: a folder whose inode is the new one is in place, a removed one already gone)."""
    for name, inode in plan["changed"].items():
        target, built = out / name, tmp / name
        try:
            if os.lstat(target).st_ino == inode:
                continue  # exchanged (or moved in) already
        except FileNotFoundError:
            _move_in(built, target)
            continue
        _exchange(built, target)
    for name in plan["removed"]:
        if os.path.lexists(out / name) and not os.path.lexists(tmp / name):
            _move_in(out / name, tmp / name)


def _finish_exchange(out: Path, tmp: Path) -> None:
    """Roll a killed :func:`_exchange_in` forward, if it got as far as step 3.

    ``tmp`` is a leftover temporary folder: if ``out``'s manifest names it (``token``), the new
    manifest is in place, so the rest of the plan in ``tmp`` is done and the final manifest
    written; otherwise ``out`` was not changed yet (or is complete) and ``tmp`` is only deleted
    (by :func:`recover`).
    """
    plan = (_manifest_of(tmp) or {}).get("plan")
    if not isinstance(plan, dict) or plan.get("token") != tmp.name:
        return
    current = _manifest_of(out)
    if current is None or current.get("token") != tmp.name:
        return
    _apply_plan(out, tmp, plan)
    _write_manifest(out, current["jobs"], current.get("files", {}), current.get("inputs"))


def _manifest_bytes(jobs: dict, files: dict, inputs: dict | None) -> bytes:
    """The bytes :func:`_write_manifest` writes for ``jobs``, ``files`` and ``inputs``."""
    import io

    buffer = io.BytesIO()
    _write_pretty(buffer, _manifest(jobs, files, inputs))
    return buffer.getvalue()


def differences(out: Path, rendered: Mapping[str, dict[str, bytes]]) -> list[tuple[str, Path]]:
    """How ``out`` on disk differs from freshly ``rendered`` jobs. Writes nothing.

    ``rendered`` maps job name -> {relative path -> bytes}; any mapping, e.g. a
    :class:`generator.pipeline.RenderedJobs` that renders each job when it is looked up.

    Returns:
        list[tuple[str, Path]]: ``(kind, path)`` with kind ``unexpected job folder``,
        ``missing``, ``no longer generated`` (a file the generator wrote, as it wrote it, that the
        rendering no longer has: ``generate`` removes it), ``unexpected`` (any other file the
        rendering does not have), ``changed`` (what is rendered now differs from the file the
        generator wrote: ``generate`` updates it) or ``edited`` (the file is not the one the
        generator wrote, by the manifest's SHA-256: ``generate`` refuses to overwrite it); empty
        when ``out`` is byte-identical to what would be generated (the manifest aside).

    Raises:
        OutputError: ``out`` is not a folder the generator made (see :func:`read_manifest`).
    """
    out = Path(out)
    found = []
    manifest = read_manifest(out, reading=True)
    on_disk = manifest["jobs"]
    written = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for name in sorted(set(on_disk) - set(rendered)):
        found.append(("unexpected job folder", out / name))
    for name in sorted(rendered):
        files = rendered[name]  # one job at a time: ``rendered`` may render it only now
        job_dir = out / name
        present = (
            {p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if p.is_file() or p.is_symlink()}
            if job_dir.is_dir() and not job_dir.is_symlink()
            else set()
        )
        hashes = written.get(name) if isinstance(written.get(name), dict) else {}
        for rel in sorted(set(files) | present):
            path = job_dir / rel
            if rel not in present:
                found.append(("missing", path))
            elif rel not in files:
                ours = rel in hashes and not path.is_symlink() and sha256(path.read_bytes()) == hashes[rel]
                found.append(("no longer generated" if ours else "unexpected", path))
            elif path.is_symlink():
                found.append(("edited", path))
            else:
                data = path.read_bytes()
                if data != files[rel]:
                    found.append(("edited" if rel in hashes and sha256(data) != hashes[rel] else "changed", path))
    return found


def diff_jobs(out: Path, rendered: Mapping[str, dict[str, bytes]]) -> list[str]:
    """What differs between ``out`` and freshly ``rendered`` jobs, as ``generate --check`` prints it.

    Returns:
        list[str]: one line per difference, ``KIND: PATH`` (see :func:`differences`); empty when
        the folders are byte-identical to what would be generated.

    Raises:
        OutputError: ``out`` is not a folder the generator made (see :func:`read_manifest`).
    """
    return [f"{kind}: {path}" for kind, path in differences(out, rendered)]
