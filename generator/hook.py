"""Pre-commit hook ``jobgen-validate``: ``validate`` each jobs file named on the command line, on its own.

Takes file paths (pre-commit passes every file that matches the hook's ``files`` pattern in
``.pre-commit-hooks.yaml``); gives an exit code. Each file is checked exactly as
``python -m generator validate --jobs FILE`` checks it (schema, then the checks across fields,
its scripts looked up in the ``client_scripts/`` beside it) and its problems are printed by the
CLI the same way, one ``FILE:LINE:COL: KEY.PATH: message`` line each. Files are never merged with
one another: two files may hold jobs of the same name. Nothing is written.
"""

from __future__ import annotations

import sys

from .reporter import Reporter

#: Modules the validate path needs beside the standard library (pyproject ``dependencies``).
VALIDATE_NEEDS = ("yaml", "jsonschema", "jsonschema_rs", "orjson", "jinja2")


def missing_module() -> str | None:
    """The first module of :data:`VALIDATE_NEEDS` this Python cannot import, or None."""
    for name in VALIDATE_NEEDS:
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    """Validate each file in ``argv`` (default: ``sys.argv[1:]``) on its own.

    Args:
        argv (list[str] | None): paths of jobs files, relative to the working folder or absolute.

    Returns:
        int: 0 when every file is valid (or none is given), else the highest exit code of
        ``validate`` over the files (2 for a bad jobs file; see :mod:`generator.cli`), or 2 when
        this Python lacks a module the validate path needs (the message says which and where).
    """
    files = sys.argv[1:] if argv is None else list(argv)
    if not files:
        return 0
    missing = missing_module()
    if missing:
        Reporter().line(
            f"jobgen-validate: {sys.executable} cannot import {missing!r}: run pre-commit with the project's "
            "environment first on PATH (e.g. `. .venv/bin/activate`), or install nvflare-jobgen's "
            "dependencies into this python (pip install pyyaml jsonschema jsonschema-rs orjson jinja2)",
            err=True,
        )
        return 2
    from .cli import main as cli_main

    return max(cli_main(["validate", f"--jobs={file}"]) for file in files)
