"""``python -m generator``: see :mod:`generator.cli`."""

import traceback

from .cli import finish, main

try:
    code = main()
except Exception:  # a bug of ours: its traceback, then an exit that no thread left open can hold up
    traceback.print_exc()
    finish(1, crashed=True)
finish(code)
