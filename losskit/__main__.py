"""``python -m losskit ...`` runs the ``losskit`` command (and ``torchrun -m losskit train ...``
runs it on every rank)."""

from losskit.cli import main

if __name__ == "__main__":  # not when imported, e.g. by a doctest collector
    raise SystemExit(main())
