"""What a job ships in ``app/custom/`` besides its script: the script's own modules and ``custom_files``.

Part of the validate stage (it reads ``client_scripts/`` but never imports from it, and never
imports nvflare). Takes a job's ``script`` and ``custom_files``; gives a :class:`Shipment`: every
file to copy (destination below ``app/custom/`` -> source below ``client_scripts/``), the mistakes
in ``custom_files`` (errors) and the findings about the imports (warnings).

Where files go is what NVFlare's own FedJob export does (``nvflare/job_config/fed_job_config.py``,
``_copy_ext_scripts`` and ``_copy_source_file``, the same layout on 2.7 and 2.9):
- the script keeps its path: ``app/custom/<script>``;
- each local module the script imports (``import x``, ``from x import y``, packages ``x/__init__.py``,
  transitively through the modules it ships) is copied to the path its import name has below
  ``app/custom/``: ``from mock_helper import train`` in ``helper_pkg/train.py`` ships
  ``helper_pkg/mock_helper.py`` as ``app/custom/mock_helper.py``. NVFlare puts ``app/custom/`` on
  ``sys.path`` in both modes (in-process: appended by the simulator worker,
  ``simulator_worker.py:152``; sub-process: ``PYTHONPATH`` via ``add_custom_dir_to_path``,
  ``external_process_backend.py:471``), while the script's own folder is on it only in a
  sub-process (``runpy.run_path`` in ``task_script_runner.py`` adds nothing), so only this layout
  imports in both modes. A module is looked for next to the script first, then in
  ``client_scripts/`` (the first match wins, as on ``sys.path``);
- ``custom_files`` entries (files or folders) keep their path below ``client_scripts/``.

Imports are read with :mod:`ast` (never executed). A top-level name found nowhere locally is
looked up among installed modules (``sys.stdlib_module_names``, ``importlib.machinery.PathFinder``
on the generator's ``sys.path`` without the project folder; nothing is imported).
"""

from __future__ import annotations

import ast
import difflib
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.machinery import PathFinder
from pathlib import Path, PurePosixPath

from .layout import custom_file

#: A job's shipped files above these totals (the script, its modules and ``custom_files``) get a
#: warning: every job folder holds its own copy and NVFlare sends the app to every site.
WARN_FILES, WARN_BYTES = 1_000, 20 * 2**20

#: ...and above these they are refused: the generator holds a job's files in memory while writing
#: it, and a tree this large is data, which a site should read from its own disk.
MAX_FILES, MAX_BYTES = 10_000, 200 * 2**20

#: Entries of ``client_scripts/`` looked at, at most, when searching it for a module no import finds.
MAX_WALK = 100_000

#: Never copied out of a ``custom_files`` folder: byte code caches and hidden entries
#: (``.git``, ``.ipynb_checkpoints``, ``.DS_Store``, ...).
SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")

#: Top-level packages never shipped even when a folder of that name is local (FedJob's FL_PACKAGES).
FL_PACKAGES = {"nvflare"}


@dataclass(frozen=True)
class Finding:
    """A warning about one import (or a script that does not parse), located in a shipped ``.py`` file.

    Attributes:
        file (Path): the ``.py`` file below ``client_scripts/`` (as found, not resolved).
        line (int): 1-based line, 0 when unknown.
        column (int): 1-based column of the module name, 0 when unknown.
        message (str): what is wrong and how to fix it.
    """

    file: Path
    line: int
    column: int
    message: str


@dataclass
class Shipment:
    """Everything a job copies into ``app/custom/`` and what was found on the way.

    Attributes:
        files (dict[str, str]): destination below ``app/custom/`` -> source below
            ``client_scripts/`` (posix paths), the script excluded, in a stable order.
        errors (list[tuple[tuple, str]]): ``(key path suffix, message)``: ``("custom_files", k)``
            for the k-th entry, ``("script",)`` for an import that collides with another file.
        warnings (list[tuple[tuple, str]]): the same, for non-fatal findings (size).
        findings (list[Finding]): warnings located in the scripts (imports).
    """

    files: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    findings: list = field(default_factory=list)


@dataclass
class _Packing:
    """A shipment being planned: where each destination comes from, and the running totals.

    Attributes:
        script (str | None): the job's script (shipped by the render stage, not in ``out.files``).
        reserved (dict[str, str]): destinations the generator writes itself -> what it writes there.
        out (Shipment): the shipment so far.
        origin (dict[str, tuple[str, tuple]]): destination -> (source, key path suffix that brought it).
        files (int), bytes (int): files and bytes shipped so far, the script included.
    """

    script: str | None
    reserved: dict
    out: Shipment = field(default_factory=Shipment)
    origin: dict = field(default_factory=dict)
    files: int = 0
    bytes: int = 0

    @property
    def too_big(self) -> bool:
        """More than :data:`MAX_FILES` files or :data:`MAX_BYTES` bytes."""
        return self.files > MAX_FILES or self.bytes > MAX_BYTES

    def add(self, dest: str, src: str, who: tuple, why: str) -> bool:
        """Ship ``src`` as ``app/custom/<dest>``; False if it is not added.

        Not added: ``dest`` is already shipped (an error when from another source), or the
        generator writes a file there itself (an error). ``why`` names the file in the message.
        """
        if dest in self.reserved:
            self.out.errors.append(
                (
                    who,
                    f"{why} would be copied to {custom_file(dest)}, where the generator "
                    f"writes {self.reserved[dest]}: rename it",
                )
            )
            return False
        if dest in self.origin:
            if self.origin[dest][0] != src:
                other = self.origin[dest][0]
                self.out.errors.append(
                    (who, f"{why} and client_scripts/{other} would both be copied to {custom_file(dest)}: rename one")
                )
            return False
        self.origin[dest] = (src, who)
        if dest != self.script:
            self.out.files[dest] = src
        return True


@dataclass(frozen=True)
class _Import:
    module: str  # the module named after ``from`` / ``import`` ("" for ``from . import x``)
    names: tuple  # ``from m import a, b``: ("a", "b"); ``import m``: ()
    level: int  # leading dots
    line: int
    column: int  # 1-based column of the module name


def _column(line_text: bytes, start: int, name: str) -> int:
    """1-based column (in characters) of ``name`` at or after byte offset ``start`` of a line."""
    head = line_text[:start].decode("utf-8", "replace")
    rest = line_text[start:].decode("utf-8", "replace")
    found = rest.find(name) if name else -1
    return len(head) + (found if found >= 0 else 0) + 1


@lru_cache(maxsize=512)
def _parse(path: str, mtime_ns: int, size: int) -> tuple[tuple[_Import, ...], str | None, int, int]:
    """The imports of one ``.py`` file (cached per version of the file), or why it does not parse.

    Returns:
        (imports, error, line, column): ``error`` is None when the file parsed; line and column
        (1-based, 0 when unknown) locate it.
    """
    try:
        data = Path(path).read_bytes()
        tree = ast.parse(data, filename=path)
    except SyntaxError as e:
        return (), f"SyntaxError: {e.msg}", e.lineno or 0, (e.offset or 1) if e.lineno else 0
    except (OSError, ValueError) as e:  # ValueError: NUL bytes
        return (), f"{type(e).__name__}: {e}", 0, 0
    lines = data.splitlines()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                text = lines[alias.lineno - 1] if alias.lineno <= len(lines) else b""
                found.append(_Import(alias.name, (), 0, alias.lineno, _column(text, alias.col_offset, alias.name)))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            text = lines[node.lineno - 1] if node.lineno <= len(lines) else b""
            module = node.module or ""
            column = _column(text, node.col_offset + len("from"), "." * node.level + module)
            names = tuple(a.name for a in node.names)
            found.append(_Import(module, names, node.level, node.lineno, column))
    found.sort(key=lambda i: (i.line, i.column))
    return tuple(found), None, 0, 0


def imports_of(path: Path) -> tuple[tuple[_Import, ...], str | None, int, int]:
    """Imports of a ``.py`` file, parsed once per file version (path, modification time, size).

    Args:
        path (Path): the file.

    Returns:
        tuple: the imports in file order, then why the file could not be read or parsed (None:
        it was), and the line and column of a syntax error (0 when there is none).
    """
    try:
        st = path.stat()
    except OSError as e:
        return (), f"cannot read it: {e.strerror}", 0, 0
    return _parse(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4096)
def _installed(name: str, search: tuple[str, ...]) -> str | None:
    """Where an installed top-level module ``name`` comes from ("the standard library", a path), or None.

    Looks without importing: built-in and standard-library names, then ``PathFinder.find_spec``
    over ``search`` (the generator's ``sys.path`` minus the project's own folders).
    """
    if name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return "the standard library"
    try:
        spec = PathFinder.find_spec(name, list(search))
    except (ImportError, ValueError, OSError):
        return None
    if spec is None:
        return None
    return spec.origin or (list(spec.submodule_search_locations or [""])[0])


def _is_identifier_path(module: str) -> bool:
    return bool(module) and all(part.isidentifier() for part in module.split("."))


def _entry_problem(entry: str) -> str | None:
    """Why a ``custom_files`` entry is not a plain relative path below ``client_scripts/``."""
    if not entry.strip():
        return "must not be empty: name a file or folder in client_scripts/"
    if "\0" in entry:
        return "holds a NUL character (\\0)"
    if entry.startswith(("/", "\\", "~")) or (len(entry) > 1 and entry[1] == ":"):
        return "must be a relative path below client_scripts/ (no leading /, ~ or drive)"
    if "\\" in entry:
        return "must use / between folders, not \\"
    if ".." in entry.split("/"):
        return "must not contain '..': name a file or folder below client_scripts/"
    return None


class Shipper:
    """Works out the :class:`Shipment` of each job; one per validation run (it caches per script).

    Args:
        scripts_root (Path): the project's ``client_scripts/`` folder (resolved or not).
        display_root (Path): how to show that folder in messages (e.g. ``client_scripts``).
        reserved (dict[str, str]): destinations below ``app/custom/`` the generator writes itself
            (the W&B receiver), name -> what it is.
    """

    def __init__(self, scripts_root: Path, display_root: Path, reserved: dict | None = None):
        self.root = Path(scripts_root)
        self.real_root = self.root.resolve()
        self.display_root = Path(display_root)
        self.reserved = dict(reserved or {})
        self._plans: dict[tuple, Shipment] = {}
        self._entries: dict[str, tuple] = {}
        self._elsewhere: dict[str, list[str]] | None = None
        project = {str(self.real_root.parent), str(self.real_root), "", os.getcwd()}
        self._search = tuple(p for p in sys.path if p not in project and Path(p or ".").resolve() != self.real_root)

    def display(self, rel: str) -> Path:
        """A path below ``client_scripts/`` as messages show it.

        Args:
            rel (str): posix path below ``client_scripts/``.

        Returns:
            Path: ``rel`` below the folder as the user named it (``display_root``), not resolved.
        """
        return self.display_root / rel

    # -- custom_files -------------------------------------------------------------------------

    def _entry_files(self, entry: str) -> tuple[list[str], str | None, int]:
        """Files (posix paths below ``client_scripts/``) a ``custom_files`` entry copies, their bytes, or why not.

        Worked out once per entry and run (jobs with different scripts often share ``custom_files``).
        """
        if entry not in self._entries:
            self._entries[entry] = self._walk_entry(entry)
        return self._entries[entry]

    def _walk_entry(self, entry: str) -> tuple[list[str], str | None, int]:
        why = _entry_problem(entry)
        if why:
            return [], f"{entry!r} {why}", 0
        rel = PurePosixPath(entry).as_posix()  # drops a trailing / and ./ parts
        path = self.root / rel
        if not os.path.lexists(path):
            parent = path.parent
            siblings = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
            close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.6)
            hint = f"; did you mean {(PurePosixPath(rel).parent / close[0]).as_posix()!r}?" if close else ""
            return [], f"{entry!r} not found in client_scripts/{hint}", 0
        resolved = path.resolve()
        if not resolved.is_relative_to(self.real_root):
            return [], f"{entry!r} is a symlink to {resolved}, outside client_scripts/", 0
        if resolved.is_file():
            return [rel], None, resolved.stat().st_size
        if not resolved.is_dir():
            return [], f"{entry!r} is neither a file nor a folder", 0
        files, total, seen = [], 0, {resolved}
        for folder, dirs, names in os.walk(path, followlinks=True):
            here = Path(folder)
            kept = []
            for d in sorted(dirs):
                real = (here / d).resolve()
                if d in SKIPPED_DIRS or d.startswith("."):
                    continue
                if not real.is_relative_to(self.real_root):
                    inner = (here / d).relative_to(self.root).as_posix()
                    return [], f"{entry!r} holds {inner!r}, a symlink to {real}, outside client_scripts/", 0
                if real not in seen:  # a symlink loop or a second link to a folder: walked once
                    seen.add(real)
                    kept.append(d)
            dirs[:] = kept
            for name in sorted(names):
                if name.startswith(".") or name.endswith(SKIPPED_SUFFIXES):
                    continue
                file = here / name
                inner = file.relative_to(self.root).as_posix()
                real = file.resolve()
                if not real.is_relative_to(self.real_root):
                    return [], f"{entry!r} holds {inner!r}, a symlink to {real}, outside client_scripts/", 0
                if not real.is_file():
                    continue  # a dangling symlink, a socket, ...
                files.append(inner)
                total += real.stat().st_size
                if len(files) > MAX_FILES or total > MAX_BYTES:
                    return [], self._too_big(entry, len(files), total), 0
        return files, None, total

    @staticmethod
    def _too_big(entry: str, count: int, size: int) -> str:
        return (
            f"{entry!r} holds more than {MAX_FILES:,} files or {MAX_BYTES // 2**20} MB "
            f"(at least {count:,} files, {size / 2**20:.0f} MB): every job folder would hold a copy and NVFlare "
            "sends it to every site; ship code, and read data from a path on each site"
        )

    # -- imports ------------------------------------------------------------------------------

    def _locate(self, parts: list[str], root: Path) -> tuple[list[tuple[str, str]], str]:
        """Files that importing ``parts`` from ``root`` executes, as (destination, source) pairs.

        Python's order per folder: a package (``x/__init__.py``), a module (``x.py``), a
        namespace package (a folder without ``__init__.py``).

        Returns:
            (files, kind): kind ``module``, ``package``, ``namespace`` (the last part is a folder
            without ``__init__.py``), ``partial`` (a leading part was found, a later one not: it
            may be a name defined in the package) or ``absent`` (the first part is not in ``root``).
        """
        base = root.relative_to(self.root).as_posix() if root != self.root else ""
        files, dest = [], []
        folder = root
        for i, part in enumerate(parts):
            dest.append(part)
            src = "/".join(p for p in [base, *dest] if p)
            if (folder / part / "__init__.py").is_file():
                files.append(("/".join(dest) + "/__init__.py", src + "/__init__.py"))
                folder, kind = folder / part, "package"
            elif (folder / f"{part}.py").is_file():
                files.append(("/".join(dest) + ".py", src + ".py"))
                return files, "module" if i == len(parts) - 1 else "partial"
            elif (folder / part).is_dir() and part not in SKIPPED_DIRS:
                folder, kind = folder / part, "namespace"
            else:
                return files, "absent" if i == 0 else "partial"
        return files, kind

    def _elsewhere_of(self, name: str) -> list[str]:
        """Folders ``name`` and files ``name.py`` anywhere below ``client_scripts/``.

        Walked once per run, and only when an import is found nowhere else; at most
        :data:`MAX_WALK` entries are looked at (a data set kept below ``client_scripts/`` must not
        stall the check).
        """
        if self._elsewhere is None:
            self._elsewhere = {}
            seen = 0
            for folder, dirs, names in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
                here = Path(folder).relative_to(self.root)
                found = [(d, d) for d in dirs] + [(n[:-3], n) for n in sorted(names) if n.endswith(".py")]
                for module, entry in found:
                    self._elsewhere.setdefault(module, []).append((here / entry).as_posix())
                seen += len(dirs) + len(names)
                if seen > MAX_WALK:
                    break
        return self._elsewhere.get(name, [])

    def installed(self, name: str) -> str | None:
        """Where the installed top-level module ``name`` comes from, or None (see :func:`_installed`).

        A module found inside ``client_scripts/`` (the project installed in editable mode, say) is
        local, not installed.
        """
        origin = _installed(name, self._search)
        if origin and origin != "the standard library" and Path(origin).resolve().is_relative_to(self.real_root):
            return None
        return origin

    def plan(self, script: str | None, custom_files: tuple[str, ...]) -> Shipment:
        """The shipment of a job with ``script`` and ``custom_files`` (cached per pair).

        Args:
            script (str | None): the job's ``script``, relative to ``client_scripts/``, already
                checked to be a file below it; None when it was refused (only ``custom_files`` is
                checked then).
            custom_files (tuple[str, ...]): the job's ``custom_files`` entries, as written.

        Returns:
            Shipment: files, errors, warnings and findings; see the class.
        """
        key = (script, custom_files)
        if key not in self._plans:
            self._plans[key] = self._plan(script, custom_files)
        return self._plans[key]

    def plan_model(self, files: tuple[tuple[str, str], ...]) -> Shipment:
        """The local modules a PyTorch model's module imports, transitively (cached per module).

        The server's PTFileModelPersistor imports the model from ``app/custom/`` (a multi-app job's
        ``app_server/custom/``), where nothing but what the job ships is found: the model's own files
        (:func:`generator.ptmodel.model_files`) and every local module they import.

        Args:
            files (tuple[tuple[str, str], ...]): ``(destination, source)`` of the model module's files,
                posix paths below ``app/custom/`` and ``client_scripts/``, the module's own file last;
                a source is the destination, or the destination below the script's folder.

        Returns:
            Shipment: ``files`` holds what they import (not ``files`` themselves); errors and findings
            as for a script's imports.
        """
        key = ("model", files)
        if key not in self._plans:
            packing = _Packing(files[-1][1], self.reserved)
            for dest, src in files:
                packing.origin[dest] = (src, ("model",))
            packing.files = len(files)
            # absolute imports start where the module lands: client_scripts/, or the script's folder
            # for a model module found beside the script (``exp/net.py`` shipped to ``net.py``)
            self._pack_imports(
                packing, [(dest, src, self.root / src[: -len(dest)]) for dest, src in files if src.endswith(".py")]
            )
            self._plans[key] = packing.out
        return self._plans[key]

    def _plan(self, script: str | None, custom_files: tuple[str, ...]) -> Shipment:
        """The shipment of one (script, custom_files) pair: ``custom_files``, then the script's imports."""
        packing = _Packing(script, self.reserved)
        queue: list[tuple[str, str, Path]] = []  # (dest, source, the folder its absolute imports start in)
        if script is not None:
            packing.origin[script] = (script, ("script",))
            packing.files, packing.bytes = 1, (self.root / script).stat().st_size
            queue.append((script, script, (self.root / script).parent))
        queue += self._pack_custom_files(packing, custom_files)
        if packing.too_big:
            packing.out.errors.append((("custom_files",), self._too_big("custom_files", packing.files, packing.bytes)))
            return packing.out
        if script is None:  # the script itself is refused: only custom_files is checked
            return packing.out
        self._pack_imports(packing, queue)
        self._check_size(packing, bool(custom_files))
        return packing.out

    def _pack_custom_files(self, packing: _Packing, custom_files: tuple[str, ...]) -> list[tuple[str, str, Path]]:
        """Add every file of the ``custom_files`` entries; gives the ``.py`` files, whose imports are followed.

        An entry's bytes count whole, even when some of its files are already shipped.
        """
        queue = []
        for k, entry in enumerate(custom_files):
            files, error, size = self._entry_files(entry)
            if error:
                packing.out.errors.append((("custom_files", k), error))
                continue
            packing.bytes += size
            for rel in files:
                if packing.add(rel, rel, ("custom_files", k), f"client_scripts/{rel} (from custom_files {entry!r})"):
                    packing.files += 1
                    if rel.endswith(".py"):
                        queue.append((rel, rel, self.root))
        return queue

    def _pack_imports(self, packing: _Packing, queue: list[tuple[str, str, Path]]) -> None:
        """Follow the imports of the queued files, transitively, adding each local module they reach.

        A file that does not parse gets a finding and is not followed; a namespace folder from
        which nothing was shipped in the end gets its finding (see :meth:`_follow`).
        """
        script = packing.script
        out = packing.out
        # where Python run by hand finds modules: the script's folder (that of its target, for a
        # symlink: sys.path[0] is resolved), then client_scripts/
        script_dir = (self.root / script).parent
        real_dir = self.root / (self.root / script).resolve().parent.relative_to(self.real_root)
        roots = list(dict.fromkeys([script_dir, real_dir, self.root]))
        done: set[str] = set()
        namespaces: list[tuple[str, Finding]] = []
        while queue:
            dest, src, root = queue.pop(0)
            if dest in done:
                continue
            done.add(dest)
            imports, error, line, column = imports_of(self.root / src)
            if error:
                what = "the script" if dest == script else "this shipped module"
                out.findings.append(
                    Finding(
                        self.display(src),
                        line,
                        column,
                        f"warning: {error}: its imports are not followed, and NVFlare cannot run {what}",
                    )
                )
                continue
            for found in self._follow(dest, src, root, roots, imports, out, script, namespaces):
                new_dest, new_src, new_root, module = found
                if packing.add(new_dest, new_src, ("script",), f"client_scripts/{new_src} (imported as {module!r})"):
                    packing.files += 1
                    packing.bytes += (self.root / new_src).stat().st_size
                    queue.append((new_dest, new_src, new_root))
        for folder, finding in namespaces:
            if not any(d.startswith(folder + "/") for d in packing.origin):
                out.findings.append(finding)

    def _check_size(self, packing: _Packing, has_custom_files: bool) -> None:
        """Refuse a shipment over :data:`MAX_FILES` or :data:`MAX_BYTES`; warn over the ``WARN_`` totals."""
        total_files, total_bytes = packing.files, packing.bytes
        if packing.too_big:
            packing.out.errors.append((("script",), self._too_big(packing.script, total_files, total_bytes)))
        elif total_files > WARN_FILES or total_bytes > WARN_BYTES:
            who = ("custom_files",) if has_custom_files else ("script",)
            packing.out.warnings.append(
                (
                    who,
                    f"warning: the job ships {total_files:,} files, {total_bytes / 2**20:.1f} MB into app/custom/: "
                    "every job folder holds a copy and NVFlare sends it to every site",
                )
            )

    def _follow(self, dest, src, root, roots, imports, out: Shipment, script: str, namespaces: list):
        """Yield (dest, src, root, module) for each local module ``imports`` of one file reach.

        Findings go to ``out.findings``; a namespace folder imported with nothing shipped from it
        yet goes to ``namespaces`` as (folder below ``app/custom/``, finding), for :meth:`_pack_imports` to
        decide at the end.
        """
        shipped_dests = set(out.files) | {script}
        for imp in imports:
            where = self.display(src)
            target = self._import_target(imp, dest, root, roots, script, where, out)
            if target is None:
                continue
            parts, search = target
            if parts[0] in FL_PACKAGES:
                continue
            hit = None
            for candidate_root in search:
                files, kind = self._locate(parts, candidate_root)
                if kind != "absent":
                    hit = (files, kind, candidate_root)
                    break
            name = ".".join(parts)
            if hit is None:
                if imp.level == 0:
                    self._not_found(parts[0], imp, where, shipped_dests, out)
                continue
            files, kind, found_root = hit
            installed = self.installed(parts[0]) if imp.level == 0 else None
            top_files = [f for f in files if f[0] in (f"{parts[0]}.py", f"{parts[0]}/__init__.py")]
            if installed and not top_files:
                continue  # a plain local folder (./wandb/ of an offline run): the installed package wins
            if installed:
                first = top_files[0][1]
                out.findings.append(
                    Finding(
                        where,
                        imp.line,
                        imp.column,
                        f"warning: {parts[0]!r} is both client_scripts/{first} (shipped) and an installed "
                        f"module ({installed}): in-process, NVFlare appends app/custom/ to sys.path, so the "
                        "installed one is imported; rename the local one",
                    )
                )
            extra = self._imported_submodules(imp, parts, kind, found_root, files)
            if kind == "namespace" and not extra:  # decided once everything is shipped: see _pack_imports
                finding = Finding(
                    where,
                    imp.line,
                    imp.column,
                    f"warning: imports {name!r}, a folder without __init__.py, and nothing in it: not "
                    f"shipped, so the import fails under NVFlare; import its modules, add an "
                    f"__init__.py, or list it in `custom_files`",
                )
                namespaces.append(("/".join(parts), finding))  # its path below app/custom/ is its import name
            for file_dest, file_src in files + extra:
                yield file_dest, file_src, found_root, name

    def _import_target(
        self, imp: _Import, dest: str, root: Path, roots: list[Path], script: str, where: Path, out: Shipment
    ) -> tuple[list[str], list[Path]] | None:
        """The module path ``imp`` names (absolute) and the folders to look for it in, in order.

        A relative import resolves against the package of ``dest`` in ``root``; one in the script
        or climbing above ``app/custom/`` fails under NVFlare: a finding, and None. None too for
        an absolute name that is not a dotted identifier.
        """
        package = dest.split("/")[:-1]  # the package a module (or an __init__.py) is in
        if not imp.level:
            return (imp.module.split("."), roots) if _is_identifier_path(imp.module) else None
        if dest != script and imp.level <= len(package):
            base = package[: len(package) - (imp.level - 1)]
            return base + (imp.module.split(".") if imp.module else []), [root]
        dots = "." * imp.level + imp.module
        reason = (
            "NVFlare runs the script as a file (__main__, in-process with runpy.run_path, in a "
            "sub-process as `python custom/<script>`), where relative imports fail"
            if dest == script
            else f"{custom_file(dest)} is not inside a package there, so the relative import fails"
        )
        fix = f"from {imp.module} import ..." if imp.module else f"import {', '.join(imp.names)}"
        fix = f"import it by name: `{fix}`"
        out.findings.append(Finding(where, imp.line, imp.column, f"warning: relative import {dots!r}: {reason}; {fix}"))
        return None

    def _imported_submodules(self, imp: _Import, parts: list[str], kind: str, found_root: Path, files: list) -> list:
        """``from package import submodule``: the files of the names of ``imp`` that are modules of the package.

        Returns:
            list[tuple[str, str]]: (destination, source) pairs not already in ``files``.
        """
        extra = []
        if kind in ("package", "namespace"):
            for sub in imp.names:
                if sub != "*":
                    sub_files, sub_kind = self._locate([*parts, sub], found_root)
                    if sub_kind in ("module", "package", "namespace"):
                        extra.extend(f for f in sub_files if f not in files)
        return extra

    def _not_found(self, top: str, imp: _Import, where: Path, shipped_dests, out: Shipment) -> None:
        """Warn when ``top`` is not installed and exists below ``client_scripts/`` where no import finds it."""
        if any(d == f"{top}.py" or d.startswith(f"{top}/") for d in shipped_dests):
            return  # shipped through custom_files at the right place
        if self.installed(top):
            return
        places = self._elsewhere_of(top)
        if not places:
            return  # not local: maybe installed on the sites only
        shown = ", ".join(f"client_scripts/{p}" for p in places[:3]) + (" ..." if len(places) > 3 else "")
        out.findings.append(
            Finding(
                where,
                imp.line,
                imp.column,
                f"warning: imports {imp.module!r}, which is not shipped: it is not installed, and {shown} is not "
                f"where app/custom/ (NVFlare's import folder) would hold it; move it next to the script or "
                f"into client_scripts/ itself, or import it by its path below client_scripts/",
            )
        )
