"""Loss Modules: hold the settings, and ``forward`` is one call into :mod:`losskit.functional`.

The torch-named losses subclass their ``torch.nn`` twin, so constructor arguments (including the
legacy ``size_average`` / ``reduce`` pair), buffers (``weight``, ``pos_weight``), ``state_dict``
keys and ``repr`` are torch's own, and ``isinstance(lk.CrossEntropyLoss(), nn.CrossEntropyLoss)``
holds: losskit is a drop-in replacement. Only ``forward`` changes. The Modules live beside their
functions in :mod:`losskit.losses`; this module re-exports them.
"""

from losskit import registry
from losskit.losses import *  # noqa: F403

__all__ = sorted(record.module.__name__ for record in registry.records())
