"""losskit on ``torch.distributed``: global loss normalisation and vocab-parallel cross-entropy.

- :mod:`~losskit.distributed.group`: rank / world-size queries and an all-reduce that are
  no-ops in a single process.
- :mod:`~losskit.distributed.normalise`: :func:`loss_sum_and_count`, :func:`count_targets`,
  :func:`global_denominator` and :class:`GlobalMean`, so k micro-batches on W ranks give the
  gradient of one big batch.
- :mod:`~losskit.distributed.vocab_parallel`: cross-entropy of logits (or a linear head) sharded
  over the class dimension across ranks.

See docs/scaling-out.md.
"""

from losskit.distributed.group import all_reduce_sum_, is_distributed, rank, world_size
from losskit.distributed.normalise import (
    GlobalMean,
    count_targets,
    global_denominator,
    loss_sum_and_count,
)
from losskit.distributed.vocab_parallel import (
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
)

__all__ = [
    "GlobalMean",
    "all_reduce_sum_",
    "count_targets",
    "global_denominator",
    "is_distributed",
    "loss_sum_and_count",
    "rank",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
    "world_size",
]
