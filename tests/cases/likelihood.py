"""Cases for losskit/losses/likelihood.py.

Poisson targets are counts; with ``full=True`` the Stirling term switches on at ``target > 1``
(a jump), so target gradients are only checked on targets kept away from 1. Gaussian variances
stay above ``eps`` (below it torch clamps under no_grad: a kink in ``var``). A float ``var`` is
tested in tests/test_likelihood.py (the table's arguments are tensors).
"""

import torch

from cases import LossCase, rand, randn


def _poisson(shape, *, log_input=True, real_targets=False, **options):
    def make(gen):
        x = randn(gen, *shape) if log_input else rand(gen, *shape) * 3 + 0.2  # log-rate | rate
        if real_targets:  # non-integer counts away from the Stirling switch at 1
            y = rand(gen, *shape) * 4 + 1.5
        else:
            y = torch.poisson(torch.full(shape, 2.5, dtype=torch.float64), generator=gen)
        return (x, y), {"log_input": log_input, **options}

    return make


def _gaussian(shape, var_shape=None, **options):
    def make(gen):
        x, y = randn(gen, *shape), randn(gen, *shape)
        var = rand(gen, *(var_shape or shape)) + 0.1
        return (x, y, var), dict(options)

    return make


CASES = [
    LossCase("poisson_nll_loss", "(4,3)", _poisson((4, 3))),
    LossCase("poisson_nll_loss", "0-d", _poisson(())),
    LossCase("poisson_nll_loss", "real-targets-(5,)", _poisson((5,), real_targets=True),
             grad_args=(0, 1)),
    LossCase("poisson_nll_loss", "rates-(2,3,4)", _poisson((2, 3, 4), log_input=False)),
    LossCase("poisson_nll_loss", "rates-eps0.1", _poisson((6,), log_input=False, eps=0.1,
                                                          real_targets=True), grad_args=(0, 1)),
    LossCase("poisson_nll_loss", "full-(3,5)", _poisson((3, 5), full=True)),
    LossCase("poisson_nll_loss", "full-rates-real-targets",
             _poisson((4,), log_input=False, full=True, real_targets=True), grad_args=(0, 1)),
    LossCase("gaussian_nll_loss", "(4,3)", _gaussian((4, 3)), grad_args=(0, 1, 2)),
    LossCase("gaussian_nll_loss", "0-d", _gaussian(()), grad_args=(0, 1, 2)),
    LossCase("gaussian_nll_loss", "unbatched-(5,)", _gaussian((5,), full=True),
             grad_args=(0, 1, 2)),
    LossCase("gaussian_nll_loss", "var-one-dim-short", _gaussian((4, 3), (4,)),
             grad_args=(0, 1, 2)),
    LossCase("gaussian_nll_loss", "var-last-dim-1", _gaussian((2, 3, 4), (2, 3, 1), full=True),
             grad_args=(0, 2)),
    LossCase("gaussian_nll_loss", "var-shared-channel", _gaussian((2, 3, 4, 4), (2, 1, 4, 4)),
             grad_args=(0, 2)),
    # eps=0.5 clamps some variances (drawn from [0.1, 1.1)): values and input/target gradients
    # are compared; var's gradient is taken at the clamped value, which finite differences of a
    # flat function cannot see, so var is left out of grad_args.
    LossCase("gaussian_nll_loss", "eps0.5-clamps", _gaussian((3, 4), eps=0.5), grad_args=(0, 1)),
]
