"""``python -m tinygrad_lstm``: the command line (see ``cli.py``)."""

from .cli import main

raise SystemExit(main())
