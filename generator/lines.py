"""NVFlare release lines the generator writes job folders for, and which one is installed.

A job's ``nvflare_version`` (``"2.7"`` or ``"2.9"``) picks the template set
``templates/nvflare-<line>/``; templates both lines share live in ``templates/shared/``. When a job
does not say, it gets the line of the nvflare installed beside the generator, read from the
package metadata (``importlib.metadata``) so that generating never imports nvflare.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

#: Lines with a template set, oldest first.
SUPPORTED_LINES = ("2.7", "2.9")

#: The line used when nvflare is not installed, or the installed one has no template set.
FALLBACK_LINE = "2.9"


def line_of(version: str) -> str:
    """The release line (``major.minor``) of a version string, e.g. ``"2.7.3"`` -> ``"2.7"``."""
    return ".".join(version.split(".")[:2])


@lru_cache(maxsize=1)
def installed_line() -> str:
    """The default ``nvflare_version``: the installed nvflare's line if supported, else 2.9.

    Reads the ``nvflare`` distribution's metadata (no import of nvflare, a few milliseconds).

    Returns:
        str: one of :data:`SUPPORTED_LINES`.
    """
    try:
        line = line_of(metadata.version("nvflare"))
    except metadata.PackageNotFoundError:
        return FALLBACK_LINE
    return line if line in SUPPORTED_LINES else FALLBACK_LINE
