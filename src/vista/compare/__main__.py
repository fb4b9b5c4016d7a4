"""``python -m vista.compare ...``: the same as ``vista compare ...``."""

from vista.compare.cli import main

raise SystemExit(main())
