"""``python -m toy_data``: see :mod:`toy_data.cli`."""

from .cli import main

raise SystemExit(main())
