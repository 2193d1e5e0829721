"""``python -m piko``: the same as the ``piko`` command."""

from piko.cli import main

raise SystemExit(main())
