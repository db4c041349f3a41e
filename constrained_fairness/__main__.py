"""``python -m constrained_fairness`` is the ``cfair`` command."""

from .cli import main

raise SystemExit(main())
