"""Regression-loss shape mistakes: the error class follows torch (a shape torch would broadcast
raises a ValueError, one torch cannot broadcast a RuntimeError, as torch does) and the suggested
fix fits the shapes received (never ``view_as`` between different element counts)."""

from __future__ import annotations

import pytest
import torch

import losskit.functional as LF
from losskit.checks import LossInputError, LossRuntimeError

CASES = [  # input shape, target shape, error class, text the fix must contain, text it must not
    ((4, 1), (4,), LossInputError, "`input.squeeze(-1)`", "view_as"),
    ((4,), (4, 1), LossInputError, "`target.squeeze(-1)`", "view_as"),
    ((2, 3), (3, 2), LossRuntimeError, "`input.view_as(target)`", "squeeze"),
    ((4, 3), (5,), LossRuntimeError, "has 12 elements and `target` 5", "view_as"),
    ((8, 1), (4,), LossInputError, "has 8 elements and `target` 4", "squeeze"),  # broadcasts
]


@pytest.mark.parametrize("fn", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"])
@pytest.mark.parametrize(("x", "y", "error", "fix", "not_fix"), CASES)
def test_shape_mistake_gets_torchs_class_and_a_fix_for_these_shapes(fn, x, y, error, fix, not_fix):
    with pytest.raises(error) as caught:
        getattr(LF, fn)(torch.zeros(x), torch.zeros(y))
    message = str(caught.value)
    assert fix in message and not_fix not in message.split("Fix:")[1]
    if error is LossRuntimeError:  # torch raises RuntimeError for these shapes too
        with pytest.raises(RuntimeError):
            getattr(torch.nn.functional, fn)(torch.zeros(x), torch.zeros(y))
