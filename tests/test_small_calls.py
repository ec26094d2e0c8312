"""Small calls take torch's C++ op directly after the checks; nothing the checks promise is lost.

* a tensor subclass (a ``__torch_function__`` override, as DTensor has) still reaches the public
  ``torch.nn.functional`` function, so its override runs;
* an out-of-range class index on CPU, after the startup calls, still raises losskit's detailed
  :class:`LossIndexError` (now from the kernel's error path, on every backend);
* a ``"mean"`` over no counted target is still 0 with zero gradient, and a zero total class weight
  still NaN, as torch;
* the benchmark harness runs each variant in a fresh process.
"""

from __future__ import annotations

import importlib
import os
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF
from losskit import bench, registry

STARTUP_CALLS = importlib.import_module("losskit.checks").STARTUP_CALLS


class Logged(torch.Tensor):
    """A tensor subclass that records every function its override sees."""

    calls: ClassVar[list] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.calls.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def _made(name: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    if name in ("cross_entropy", "nll_loss"):
        return (x.log_softmax(1) if name == "nll_loss" else x), torch.tensor([0, 2, 1, 2])
    if name.startswith("binary_cross_entropy"):
        x = x.sigmoid() if name == "binary_cross_entropy" else x
        return x, torch.rand(4, 3, generator=gen, dtype=torch.float64)
    if name == "kl_div":
        return x.log_softmax(1), torch.randn(4, 3, generator=gen, dtype=torch.float64).softmax(1)
    return x, torch.randn(4, 3, generator=gen, dtype=torch.float64)


def _past_startup(fn, *args, **kwargs) -> None:
    for _ in range(STARTUP_CALLS + 1):
        fn(*args, **kwargs)


TWO_TENSOR_TWINS = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
                    "binary_cross_entropy_with_logits", "kl_div", "cross_entropy", "nll_loss"]


@pytest.mark.parametrize("name", TWO_TENSOR_TWINS)
def test_tensor_subclass_goes_through_torchs_public_function(name: str) -> None:
    x, y = _made(name, torch.Generator().manual_seed(0))
    Logged.calls = []
    kwargs = {"reduction": "batchmean"} if name == "kl_div" else {}
    out = getattr(LF, name)(x.as_subclass(Logged), y, **kwargs)
    torch_fn = registry.get(name).torch_function
    assert torch_fn in Logged.calls, f"{name}: the override saw {Logged.calls[:4]}"
    torch.testing.assert_close(out.as_subclass(torch.Tensor), torch_fn(x, y, **kwargs))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # torch's kl_div "mean" warning
@pytest.mark.parametrize("name", TWO_TENSOR_TWINS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_direct_op_matches_torch_after_startup(name: str, reduction: str) -> None:
    """Past the startup calls (where the value checks stop), values and gradients are torch's."""
    x, y = _made(name, torch.Generator().manual_seed(1))
    x.requires_grad_()
    with lk.checks("startup"):
        _past_startup(getattr(LF, name), x.detach(), y, reduction=reduction)
        ours = getattr(LF, name)(x, y, reduction=reduction)
    theirs = registry.get(name).torch_function(x, y, reduction=reduction)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=0)


@pytest.mark.parametrize("offset", [0, -2, 297])  # past the last class: C, -2, C + 297
@pytest.mark.parametrize("path", ["torch op", "fused", "reference extras", "nll", "uint8"])
def test_out_of_range_index_after_startup_is_losskits_error(path: str, offset: int) -> None:
    gen = torch.Generator().manual_seed(2)
    n, c = (256, 512) if path == "fused" else (4, 3)  # 2**17 logits take the fused kernel
    x = torch.randn(n, c, generator=gen)
    x = x.log_softmax(1) if path == "nll" else x
    y = torch.randint(0, c, (n,), generator=gen)
    bad = offset if offset < 0 else c + offset
    kwargs = {"softcap": 30.0} if path == "reference extras" else {}
    fn = LF.nll_loss if path == "nll" else LF.cross_entropy
    if path == "uint8":
        y, bad = y.to(torch.uint8), bad % 256  # -2 wraps to 254: out of range too
    bad_y = y.clone()
    bad_y[n - 1] = bad
    with lk.checks("startup"):
        _past_startup(fn, x, y, **kwargs)
        with pytest.raises(lk.LossIndexError) as info:
            fn(x, bad_y, **kwargs)
    assert isinstance(info.value, IndexError)
    assert f"outside [0, {c}): {bad} at index ({n - 1},)" in str(info.value)
    assert f"Fix: labels must be 0..{c - 1}" in str(info.value)


def test_out_of_range_index_in_off_mode_is_torchs_own_error() -> None:
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    with lk.checks("off"), pytest.raises(IndexError, match="Target 3 is out of bounds") as info:
        LF.cross_entropy(x, y)
    assert not isinstance(info.value, lk.LossInputError)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_mean_over_nothing_after_startup_is_zero_with_zero_gradient(name: str) -> None:
    x = torch.randn(4, 3, dtype=torch.float64).log_softmax(1).requires_grad_()
    fn = getattr(LF, name)
    with lk.checks("startup"):
        _past_startup(fn, x, torch.tensor([0, 1, 2, 0]))
        out = fn(x, torch.full((4,), -100))  # every target ignored; no warning after startup
    assert out.item() == 0.0
    (g,) = torch.autograd.grad(out, x)
    assert torch.equal(g, torch.zeros_like(x))


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_zero_total_class_weight_is_nan_as_torch(name: str) -> None:
    """Only "nothing counted" becomes 0; a weighted mean dividing by a zero weight sum is torch's
    NaN, not hidden."""
    x = torch.randn(4, 3, dtype=torch.float64).log_softmax(1)
    y, w = torch.tensor([0, 0, 1, 1]), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    with lk.checks("off"):
        ours = getattr(LF, name)(x, y, weight=w)
    theirs = getattr(F, name)(x, y, weight=w)
    assert torch.isnan(ours) and torch.isnan(theirs)


def test_fresh_processes_are_fresh() -> None:
    """Each run is its own process, neither this one nor the previous run's."""
    first, second = bench.run_fresh(os.getpid), bench.run_fresh(os.getpid)
    assert len({os.getpid(), first, second}) == 3
