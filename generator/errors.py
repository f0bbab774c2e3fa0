"""The one error family of the generator.

Every stage raises :class:`JobgenError` (or a subclass); only the CLI prints them, one line per
problem, in the form ``FILE:LINE:COL: KEY.PATH: message``. Lines and columns are 1-based.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Problem:
    """One located problem in an input file.

    Attributes:
        file (str): the file as the user named it (e.g. ``jobs.yaml``).
        line (int): 1-based line, 0 when unknown.
        column (int): 1-based column, 0 when unknown.
        path (str): the key path, e.g. ``jobs[0].num_rounds``; ``""`` for the whole document. Code
            compares and parses this form (which job a problem is in, which problem echoes another).
        message (str): what is wrong and, where we know it, how to fix it.
        shown (str): the key path as the message prints it, when it differs from ``path``: a job
            named after its index, ``jobs[0] (np-full).num_rounds``
            (:meth:`generator.load.Document.shown_path`). Not compared: ``""`` prints ``path``.
    """

    file: str
    line: int
    column: int
    path: str = ""
    message: str = field(default="", compare=True)
    shown: str = field(default="", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        path = self.shown or self.path
        key = f" {path}:" if path else ""
        return f"{where}:{key} {self.message}".translate(_ONE_LINE)


#: Characters that start a new line somewhere (``str.splitlines``, terminals), escaped so that a
#: problem always prints as exactly one line whatever text it quotes.
_ONE_LINE = {
    ord(c): f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
}


#: The note :meth:`generator.overrides.Layered.problem` adds to a problem located in a ``matrix``.
_COMBINATION = re.compile(r"^(?P<head>.*) \(combination (?P<label>[^()]*)\)$", re.DOTALL)


def one_per_value(problems: Iterable[Problem]) -> list[Problem]:
    """``problems``, each once, with those that differ only in their ``(combination ...)`` note made
    one, whose note names the combinations in the order found (the first three): a wrong matrix
    value is found once per combination that takes it (a trial's ``[FULL, diff]`` beside
    ``num_rounds: [1, 3]`` printed the same line twice). Errors and warnings alike."""
    groups: dict[Problem, list[str]] = {}
    out = []
    for problem in dict.fromkeys(problems):
        found = _COMBINATION.match(problem.message)
        if not found:
            out.append(problem)
            continue
        key = dataclasses.replace(problem, message=found["head"])
        groups.setdefault(key, []).append(found["label"])
    for problem, labels in groups.items():
        if len(labels) == 1:
            note = f"combination {labels[0]}"
        else:
            more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
            note = f"{len(labels)} combinations: {'; '.join(labels[:3])}{more}"
        out.append(dataclasses.replace(problem, message=f"{problem.message} ({note})"))
    return out


class JobgenError(Exception):
    """Base of every error the generator reports to a user (exit code 2 unless said otherwise).

    Args:
        problems (list[Problem] | str): the located problems, or a plain message.
    """

    exit_code = 2

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(file="jobgen", line=0, column=0, message=problems)]
        # one line per problem, however many schema branches found it
        self.problems = sorted(one_per_value(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


class SpecError(JobgenError):
    """``jobs.yaml`` is not valid YAML, does not fit the schema, or fails a cross-field check."""


class OutputError(JobgenError):
    """The output folder cannot be written safely (it holds files we did not generate, ...)."""


class TemplateError(JobgenError):
    """A template failed to render or rendered invalid JSON (a bug in ``templates/``)."""


class SimulationError(JobgenError):
    """A job folder could not be simulated, or a simulated job failed its checks (exit code 1)."""

    exit_code = 1


class OptionError(JobgenError):
    """A command-line option names something that is not there (``simulate --out``, ``--job``)."""
