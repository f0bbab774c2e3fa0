"""``python -m generator``: see :mod:`generator.cli`."""

from .cli import finish, main

finish(main())
