"""PyTorch jobs (``framework: pytorch``): the model's module, the checks of its settings, the final model.

Generate time (no torch, no nvflare, nothing imported from the project: Python's ``ast`` only):
:func:`model_files` finds the files of the ``model.path`` module below ``client_scripts/`` where
its import name finds it in ``app/custom/`` (NVFlare puts that folder on ``sys.path`` of the
server and of every client), :func:`framework_problems` checks a job's ``framework``, ``model`` and
``initial_ckpt`` settings (located in ``jobs.yaml``). Run time (``simulate``, ``poc``):
:func:`read_final_model` loads what PTFileModelPersistor saved with torch, imported only then.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path, PurePosixPath

from .errors import Problem
from .layout import SCRIPTS_DIR
from .load import Document
from .ship import Shipper
from .spec import Job

#: Top-level modules whose import marks a script as written for PyTorch (``torch.*``, its Lightning
#: wrappers) and the one that marks a numpy script.
TORCH_MODULES = frozenset({"torch", "lightning", "pytorch_lightning"})
NUMPY_MODULE = "numpy"


def model_files(
    scripts_root: Path, class_path: str, script: str | None = None
) -> tuple[list[tuple[str, str]], str | None]:
    """The files importing the module of ``class_path`` runs, as NVFlare finds it from ``app/custom/``.

    ``pkg.mod.Net``: ``pkg/__init__.py`` (none for a folder without one, a namespace package) and
    ``pkg/mod.py`` (or ``pkg/mod/__init__.py``) below ``client_scripts/``, each shipped to the same
    path below ``app/custom/``. Not there, the module is looked for beside the job's ``script`` (a
    script in ``client_scripts/exp/`` that imports its sibling ``net`` ships ``exp/net.py`` to
    ``app/custom/net.py``, where the server's ``net.Net`` is found too: a trial's ``model.path`` of
    the model its script imports was refused, and ``exp.net.Net`` shipped the file twice).

    Args:
        scripts_root (Path): the project's ``client_scripts/`` folder.
        class_path (str): ``model.path``, ``module.Class`` (the schema's pattern: dotted identifiers).
        script (str | None): the job's ``script``, a posix path below ``client_scripts/``.

    Returns:
        (files, problem): ``[(destination below app/custom/, source below client_scripts/)]``, the
        module's own file last; ``problem`` says why the module cannot be found (files then empty).
    """
    files, looked = _module_files(scripts_root, class_path, "")
    folder = str(PurePosixPath(script).parent) if script else "."
    if looked and folder != ".":
        beside, _ = _module_files(scripts_root / folder, class_path, folder + "/")
        if beside:
            return beside, None
        looked += f", nor beside the script in client_scripts/{folder}/"
    if not looked:
        return files, None
    module, _, name = class_path.rpartition(".")
    close = _close_module(scripts_root, module, folder)
    hint = f"; did you mean {close + '.' + name!r}?" if close else ""
    return [], (
        f"module {module!r} of {class_path!r} not found: no {looked}{hint} (the model's module is shipped "
        "from client_scripts/ into app/custom/, where the server imports it; an installed class such as "
        "torch.nn.Linear is not shipped: define your model in a module of your own)"
    )


def _close_module(scripts_root: Path, module: str, folder: str) -> str | None:
    """The import name nearest ``module`` among the ``.py`` modules below ``scripts_root`` (dotted from
    there) and beside the script in ``folder`` (by file name), for a did-you-mean (a trial's
    ``modle.MyNet`` beside ``mynet/model.py`` got none); None when none is close."""
    import difflib

    names = set()
    if scripts_root.is_dir():
        for file in scripts_root.rglob("*.py"):
            parts = file.relative_to(scripts_root).with_suffix("").parts
            names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            if folder != "." and file.parent == scripts_root / folder:
                names.add(file.stem)
    close = difflib.get_close_matches(module, sorted(n for n in names if n), n=1)
    return close[0] if close else None


def _module_files(root: Path, class_path: str, prefix: str) -> tuple[list[tuple[str, str]], str | None]:
    """:func:`model_files` below ``root``, a folder ``prefix`` (``""`` or ``"exp/"``) below
    ``client_scripts/``: ``(files, None)``, or ``([], what was not there)`` (``client_scripts/pkg/``)."""
    parts = class_path.split(".")[:-1]
    files: list[tuple[str, str]] = []
    folder = root
    for i, part in enumerate(parts):
        rel = "/".join(parts[: i + 1])
        last = i == len(parts) - 1
        if (folder / part / "__init__.py").is_file():
            files.append((f"{rel}/__init__.py", f"{prefix}{rel}/__init__.py"))
            folder = folder / part
        elif last and (folder / f"{part}.py").is_file():
            files.append((f"{rel}.py", f"{prefix}{rel}.py"))
        elif not last and (folder / part).is_dir():  # a namespace package: nothing to run in it
            folder = folder / part
        else:
            return [], f"client_scripts/{prefix}{rel}.py" if last else f"client_scripts/{prefix}{rel}/"
    return files, None


@lru_cache(maxsize=256)
def _parse(path: str, mtime_ns: int, size: int) -> ast.Module | str:
    try:
        return ast.parse(Path(path).read_bytes(), filename=path)
    except SyntaxError as e:
        return f"does not parse: line {e.lineno}, column {e.offset}: SyntaxError: {e.msg}"
    except (OSError, ValueError) as e:
        return f"cannot be read: {e}"


def _parsed(path: Path) -> ast.Module | str:
    """The syntax tree of a ``.py`` file (cached per version of it), or why there is none (str)."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    return _parse(str(path), st.st_mtime_ns, st.st_size)


def _tree(path: Path) -> ast.Module | None:
    """The syntax tree of a ``.py`` file (cached per version of it); None if it cannot be read or parsed."""
    tree = _parsed(path)
    return tree if isinstance(tree, ast.Module) else None


def _shown(module_file: Path) -> str:
    """``client_scripts/mynet/model.py``: a module file as a user finds it, below ``client_scripts/``
    (a trial's ``mynet/model.py`` was shown as ``client_scripts/model.py``)."""
    parts = module_file.parts
    if SCRIPTS_DIR in parts:
        at = len(parts) - 1 - parts[::-1].index(SCRIPTS_DIR)
        return "/".join(parts[at:])
    return str(module_file)


def class_problem(module_file: Path, class_path: str) -> str | None:
    """Why ``module_file`` does not define the class of ``class_path`` at its top level (None: it does).

    A ``class Name`` statement is looked for (read with ``ast``; the module is never imported).
    """
    name = class_path.rsplit(".", 1)[-1]
    tree = _parsed(module_file)
    if isinstance(tree, str):
        return f"{class_path!r}: {_shown(module_file)} {tree}"
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    if name in classes:
        if not _may_be_module({n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}, name):
            return (
                f"{class_path!r} is no torch.nn.Module (its class statement, and those of the bases in its module, "
                "name no other base): PTFileModelPersistor builds, loads and saves a torch.nn.Module"
            )
        return None
    module = class_path.rsplit(".", 1)[0]
    origin = _bound_elsewhere(tree, name, module, module_file.name == "__init__.py")
    if origin is not None:
        hint = f": write model.path: {origin}.{name}" if origin else ""
        return (
            f"module {module!r} imports or assigns {name!r} but defines no class {name!r} (generate reads the "
            f"module that defines the class, with a class statement at its top level){hint}"
        )
    nested = _nested_class(tree, name)
    if nested:  # a trial's class in a function was told only that the module defines no such class
        return (
            f"module {module!r} defines class {name!r} inside {nested}, not at its top level: "
            "PTFileModelPersistor imports it by module and name, which reaches only a top-level class; "
            "move the class statement out"
        )
    import difflib

    close = difflib.get_close_matches(name, classes, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else (f" (it defines {', '.join(classes)})" if classes else "")
    return f"module {module!r} defines no class {name!r}{hint}"


def _nested_class(tree: ast.Module, name: str) -> str | None:
    """Where a ``class name`` statement stands below the top level of ``tree``: ``function 'build'
    (line 3)``, ``class 'Outer' (line 1)``, or None when there is none."""
    for outer in ast.walk(tree):
        if outer is tree or not isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for node in ast.walk(outer):
            if node is not outer and isinstance(node, ast.ClassDef) and node.name == name:
                kind = "class" if isinstance(outer, ast.ClassDef) else "function"
                return f"{kind} {outer.name!r} (line {outer.lineno})"
    return None


#: Base classes whose ``__init__`` takes no argument: ``torch.nn.Module`` as a model module names it.
_MODULE_BASES = ("Module", "nn.Module", "torch.nn.Module")


def _init_of(classes: dict[str, ast.ClassDef], name: str, seen: frozenset = frozenset()):
    """The ``__init__`` class ``name`` runs: its own, else the first base's of this module that has
    one (followed, in base order); ``"module"`` when it is ``torch.nn.Module``'s (no argument);
    None when not known (a base imported from elsewhere)."""
    node = classes.get(name)
    if node is None or name in seen:
        return None
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is not None:
        return init
    for base in node.bases:
        text = ast.unparse(base)
        if text in _MODULE_BASES:
            return "module"
        if isinstance(base, ast.Name) and base.id in classes:
            return _init_of(classes, base.id, seen | {name})
        return None  # a base from elsewhere: its __init__ is not read
    return None


def _may_be_module(classes: dict[str, ast.ClassDef], name: str, seen: frozenset = frozenset()) -> bool:
    """Whether class ``name`` may be a ``torch.nn.Module``: False only when it and the bases of its
    module it derives from name no base but ``object`` (a trial's plain ``class NotAModule:`` passed)."""
    node = classes.get(name)
    if node is None or name in seen:
        return True  # not in this module: not known
    bases = [b for b in node.bases if ast.unparse(b) != "object"]
    return any(
        not (isinstance(b, ast.Name) and b.id in classes) or _may_be_module(classes, b.id, seen | {name}) for b in bases
    )


def _number_problem(kind: str | None, value) -> str | None:
    """Why ``value`` does not fit a parameter annotated ``kind`` (``int`` or ``float``; None: any),
    with the value to write: text (in quotes, or ``1e3``, which YAML reads as text), or a float with
    nothing after the point for an ``int``; None when it fits or is not checked."""
    if kind not in ("int", "float") or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return f"{value!r} (text)"
        if kind == "int":
            return (
                f"{value!r} (text): write {int(number)}, without quotes" if number.is_integer() else f"{value!r} (text)"
            )
        return f"{value!r} (text): write {number!r}, without quotes"
    if kind == "int" and isinstance(value, float):
        return f"{value!r}: write {int(value)}" if value.is_integer() else f"{value!r}"
    return None


def args_problems(module_file: Path, class_path: str, args: dict) -> list[tuple[str | None, str]]:
    """How ``model.args`` does not fit the ``__init__`` the class runs (read with ``ast``).

    PTFileModelPersistor builds the model as ``Class(**args)``. Checked when that ``__init__`` is
    known: the class's own, one inherited from a class of the same module, or ``torch.nn.Module``'s
    (which takes none; a trial's ``NoInit(nn.Module)`` with ``args: {hidden: 8}`` passed), and it takes
    no ``**kwargs``: every argument is a parameter it takes by name (with a did-you-mean; a
    positional-only one cannot be given by name), and every parameter without a default is given.

    Returns:
        list[tuple[str | None, str]]: ``(argument, message)``; the argument is None for a missing one.
    """
    name = class_path.rsplit(".", 1)[-1]
    tree = _tree(module_file) or ast.Module(body=[])
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    init = _init_of(classes, name)
    if init == "module":
        return [(arg, f"{class_path} takes no argument {arg!r}: it runs torch.nn.Module's __init__") for arg in args]
    if init is None or init.args.kwarg is not None:
        return []
    a = init.args
    params = [*a.posonlyargs, *a.args]
    positional = params[1:]  # without self
    posonly = {p.arg for p in a.posonlyargs}
    named = [p.arg for p in [*positional, *a.kwonlyargs] if p.arg not in posonly]
    problems: list[tuple[str | None, str]] = []
    import difflib

    annotations = {p.arg: ast.unparse(p.annotation) for p in [*positional, *a.kwonlyargs] if p.annotation is not None}
    for arg in args:
        why = _number_problem(annotations.get(arg), args[arg])
        if why:  # nn.Linear(4, "8") or nn.Linear(4, 8.0) fails when the server starts (a trial's hidden: "8")
            problems.append((arg, f"{class_path}.__init__ takes {arg}: {annotations[arg]}, got {why}"))
        if arg in posonly:
            problems.append(
                (
                    arg,
                    f"{class_path}.__init__ takes {arg!r} positional-only, and PTFileModelPersistor passes "
                    "model.args by name",
                )
            )
        elif arg not in named:
            close = difflib.get_close_matches(arg, named, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (it takes {', '.join(named) or 'none'})"
            problems.append((arg, f"{class_path}.__init__ takes no argument {arg!r}{hint}"))
    required = [p.arg for p in positional[: len(positional) - len(a.defaults)] if p.arg not in posonly]
    required += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None]
    missing = [p for p in required if p not in args]
    if missing:
        problems.append((None, f"{class_path}.__init__ needs {', '.join(map(repr, missing))}: give it in model.args"))
    unreachable = [p.arg for p in positional[: len(positional) - len(a.defaults)] if p.arg in posonly]
    if unreachable:
        problems.append(
            (
                None,
                f"{class_path}.__init__ needs {', '.join(map(repr, unreachable))} positional-only, and "
                "PTFileModelPersistor passes model.args by name: give it a default or make it a named parameter",
            )
        )
    return problems


def _bound_elsewhere(tree: ast.Module, name: str, module: str, is_package: bool) -> str | None:
    """How the top level of ``module`` binds ``name`` other than by a class statement: the module it
    imports it from (``from .nets import Net`` in package ``pkg``: ``pkg.nets``), ``""`` for an
    assignment or an import whose module is not known, None when it does not bind it."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            if any(a.name != name for a in node.names if (a.asname or a.name) == name):
                return ""  # imported under another name: its class has a name of its own
            if node.level == 0:
                return node.module or ""
            package = module.split(".") if is_package else module.split(".")[:-1]
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            return ".".join([*base, *([node.module] if node.module else [])])
        targets = node.targets if isinstance(node, ast.Assign) else []
        targets = [node.target] if isinstance(node, ast.AnnAssign) else targets
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ""
    return None


def imported_modules(files: list[Path]) -> set[str]:
    """The top-level module names the ``.py`` files among ``files`` import (absolute imports only)."""
    found: set[str] = set()
    for file in files:
        tree = _tree(file) if file.suffix == ".py" else None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def framework_problems(doc: Document, job: Job, scripts_root: Path, shipper: Shipper, script_ok: bool) -> list[Problem]:
    """What the schema cannot check about a job's ``framework``, ``model`` and ``initial_ckpt``.

    - ``framework: numpy`` sets neither ``model`` nor ``initial_ckpt`` (NPModelPersistor takes no model);
    - ``framework: pytorch`` sets ``model``; its module is found below ``client_scripts/``
      (:func:`model_files`) and defines the class (:func:`class_problem`);
    - a PyTorch job's script (with the modules it ships) imports torch, or at least not numpy alone:
      a script that imports numpy and never torch sends numpy arrays, which NVFlare's PyTorch
      exchange (``params_exchange_format: pytorch``) does not take.

    Args:
        doc (Document): the loaded ``jobs.yaml``. job (Job): an effective job (``job.shipment`` planned).
        scripts_root (Path): the project's ``client_scripts/`` folder.
        shipper (Shipper): plans what the model's module imports (``job.model_shipment``).
        script_ok (bool): the script passed its own checks (its imports are read only then).

    Returns:
        list[Problem]: located at the key that set each value.
    """
    s = job.settings
    framework = s["framework"]
    problems = []
    if framework != "pytorch":
        for key in ("model", "initial_ckpt"):
            if key in s:
                where = job.path_of(key)
                # a job cannot take out a key `defaults` sets (a trial's numpy job beside pytorch defaults)
                fix = (
                    f"move {key} from defaults into the pytorch jobs (a job cannot remove a key defaults sets)"
                    if where[0] == "defaults"
                    else f"remove {key}"
                )
                problems.append(
                    doc.problem(
                        where,
                        f"{key} is for framework: pytorch (PTFileModelPersistor); this job's framework is "
                        f"{framework}, whose NPModelPersistor takes no model: {fix}, or set framework: pytorch",
                    )
                )
        return problems
    if "model" not in s:
        return [
            doc.problem(
                job.path_of("framework"),
                "framework: pytorch needs a model: {path: module.Class, args: {...}}, the torch.nn.Module the "
                "server's PTFileModelPersistor builds (its module under client_scripts/)",
            )
        ]
    model_at = job.path_of("model")
    if "path" not in s["model"]:  # the schema leaves it to the merge: a job may set only model.args
        return [
            doc.problem(
                model_at,
                "missing required key 'path' (set it here or in `defaults`: model.path is module.Class, the "
                "torch.nn.Module the server's PTFileModelPersistor builds)",
            )
        ]
    # the layer whose model holds `path` (a matrix over model.args.hidden sets `model` too, and a
    # defaults typo was reported at each matrix value as `...[0].path`)
    at = job.path_of("model", "path")
    class_path = s["model"]["path"]
    files, why = model_files(scripts_root, class_path, s.get("script"))
    if why is None:
        why = class_problem(scripts_root / files[-1][1], class_path)
    shipped_files = job.shipment.files if job.shipment is not None else {}
    for dest, src in files if why is None else ():
        if shipped_files.get(dest, src) != src or dest == s["script"] != src:
            why = (
                f"the model's module file client_scripts/{src} would land on app/custom/{dest}, "
                f"where the job already ships client_scripts/{shipped_files.get(dest, s['script'])}"
            )
    if why:
        problems.append(doc.problem(at, why))
    else:
        job.model_shipment = shipper.plan_model(tuple(files))
        problems += [doc.problem(at, message) for _, message in job.model_shipment.errors]
        for arg, message in args_problems(scripts_root / files[-1][1], class_path, s["model"].get("args") or {}):
            where = job.path_of("model", "args", arg) if arg else model_at
            problems.append(doc.problem(where, message))
    ckpt_why = _checkpoint_problem(s.get("initial_ckpt"), job)
    if ckpt_why:
        problems.append(doc.problem(job.path_of("initial_ckpt"), ckpt_why))
    if script_ok:
        shipped = [scripts_root / s["script"]]
        if job.shipment is not None:
            shipped += [scripts_root / src for src in job.shipment.files.values()]
        modules = imported_modules(shipped)
        if NUMPY_MODULE in modules and not modules & TORCH_MODULES:
            problems.append(
                doc.problem(
                    job.path_of("framework"),
                    f"framework: pytorch, but script {s['script']!r} imports numpy and never torch: a numpy "
                    "script sends numpy arrays, and NVFlare's PyTorch exchange (params_exchange_format: pytorch) "
                    "expects torch tensors; use framework: numpy, or a script that trains with torch",
                )
            )
    return problems


def _checkpoint_problem(ckpt: str | None, job: Job) -> str | None:
    """Why a relative ``initial_ckpt`` cannot be found when the run starts (None: absolute, unset, or shipped).

    PTFileModelPersistor reads a relative ``source_ckpt_file_full_name`` below the server app's
    ``custom/`` folder (``nvflare/app_opt/pt/file_model_persistor.py``, ``_initialize``, on 2.9 and
    2.7), where only what the job ships lands: ``custom_files`` in a one-app job; in a multi-app job
    (``sites:``) the server app gets the model's module alone.
    """
    if not ckpt or PurePosixPath(ckpt).is_absolute():
        return None
    rel = PurePosixPath(ckpt).as_posix()
    if job.apps:
        return (
            f"initial_ckpt {ckpt!r} is relative, so NVFlare looks for it in app_server/custom/, and a multi-app "
            "job (sites:) ships only the model's module there: give an absolute path on the server"
        )
    if job.shipment is not None and rel not in job.shipment.files:
        return (
            f"initial_ckpt {ckpt!r} is relative, so NVFlare looks for it in the server app's custom/ folder, and "
            f"the job ships no {rel} there: add it to custom_files (a file below client_scripts/), or give an "
            "absolute path on the server"
        )
    return None


def read_final_model(path: Path) -> dict[str, list]:
    """What PTFileModelPersistor saved: each parameter's values as nested lists, in the model's order.

    The file is ``torch.save`` of the persistor's ``PTModelPersistenceFormatManager.to_persistence_dict()``
    (``{"model": state_dict, "train_conf": ...}``; ``nvflare/app_opt/pt/model_persistence_format_manager.py``),
    or a bare state_dict; loaded with ``weights_only=True`` (tensors and plain data only).

    Args:
        path (Path): the ``FL_global_model.pt`` file.

    Returns:
        dict[str, list]: parameter name -> its tensor as ``tolist()`` (a 0-d tensor: a float).

    Raises:
        ImportError: torch is not installed. Exception: anything ``torch.load`` raises for a bad file.
    """
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    state = data.get("model", data) if isinstance(data, dict) else data
    return {name: value.tolist() if hasattr(value, "tolist") else value for name, value in state.items()}
