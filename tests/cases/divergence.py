"""Cases for losskit/losses/divergence.py."""

from cases import LossCase, randn


def _kl(shape, log_target=False):
    def make(gen):
        x = randn(gen, *shape).log_softmax(-1)
        q = randn(gen, *shape).softmax(-1)
        return (x, q.log() if log_target else q), {"log_target": log_target}

    return make


CASES = [
    LossCase("kl_div", "(4,5)", _kl((4, 5)), grad_args=(0, 1),
             reductions=("none", "batchmean", "sum")),
    LossCase("kl_div", "log_target-(2,3,4)", _kl((2, 3, 4), log_target=True), grad_args=(0, 1),
             reductions=("none", "batchmean", "sum")),
]
