"""``python -m losskit ...`` runs the ``losskit`` command (and ``torchrun -m losskit train ...``
runs it on every rank)."""

from losskit.cli import main

raise SystemExit(main())
