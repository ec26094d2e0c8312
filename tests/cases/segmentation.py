"""Cases for losskit/losses/segmentation.py."""

import oracle

from cases import LossCase, rand, randint, randn


def _dice(shape, **options):
    def make(gen):
        return (2 * randn(gen, *shape), randint(gen, shape[1], shape[0], *shape[2:])), options

    return make


def _dice_binary(gen):
    return (2 * randn(gen, 2, 3, 4), (rand(gen, 2, 3, 4) > 0.5).double()), {}


CASES = [
    LossCase("dice_loss", "(N,C,H,W)", _dice((2, 3, 4, 4)), reference=oracle.dice),
    LossCase("dice_loss", "smooth0-ignore", _dice((2, 3, 5), smooth=0.0, ignore_index=0),
             reference=oracle.dice),
    LossCase("dice_loss", "binary", _dice_binary, reference=oracle.dice_binary),
]
