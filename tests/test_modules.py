"""The loss Modules: torch.nn's class names, constructor argument order, legacy arguments, buffers,
repr, and forward == one functional call."""

from __future__ import annotations

import inspect
import warnings

import oracle
import pytest
import torch
from torch import nn

import losskit as lk
import losskit.functional as LF
from losskit import registry


def _torch_named() -> list[str]:
    """Registered Modules with a torch twin that builds with no arguments and has a plain repr
    (TripletMarginWithDistanceLoss shows its PairwiseDistance() submodule: tests/test_ranking.py
    checks it against torch; LinearCrossEntropyLoss needs its sizes: test_linear_cross_entropy)."""
    names = []
    for record in registry.records():
        if record.torch_module is None:
            continue
        try:
            module = record.torch_module()
        except TypeError:  # required constructor arguments
            continue
        if repr(module) == f"{record.torch_module.__name__}()":
            names.append(record.module.__name__)
    return names


def _no_legacy_args(name: str) -> bool:
    """torch's Modules without ``size_average`` / ``reduce`` (HuberLoss, CTCLoss, ...)."""
    return "size_average" not in inspect.signature(getattr(nn, name)).parameters


TORCH_NAMED = _torch_named()
NO_LEGACY_ARGS = {n for n in TORCH_NAMED if _no_legacy_args(n)}


def _randn(gen, *shape):
    return torch.randn(shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", TORCH_NAMED)
def test_repr_and_attributes_match_torch(name):
    ours, theirs = getattr(lk, name)(), getattr(nn, name)()
    assert repr(ours) == repr(theirs) == f"{name}()"
    assert ours.reduction == theirs.reduction
    assert list(dict(ours.named_buffers())) == list(dict(theirs.named_buffers()))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == []


def test_positional_argument_order_is_torchs():
    w, pw = torch.rand(3), torch.rand(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-argument deprecation warning
        ce = lk.CrossEntropyLoss(w, None, 2, None, "sum", 0.1)
        nll = lk.NLLLoss(w, None, 1, None, "none")
        bcel = lk.BCEWithLogitsLoss(w, None, None, "sum", pw)
        bce = lk.BCELoss(w, None, None, "none")
        sl1 = lk.SmoothL1Loss(None, None, "sum", 0.5)
        kl = lk.KLDivLoss(None, None, "batchmean", True)
    huber = lk.HuberLoss("sum", 2.0)
    assert (ce.ignore_index, ce.reduction, ce.label_smoothing) == (2, "sum", 0.1)
    assert torch.equal(ce.weight, w)
    assert (nll.ignore_index, nll.reduction) == (1, "none")
    assert bcel.reduction == "sum" and torch.equal(bcel.pos_weight, pw)
    assert torch.equal(bcel.weight, w)
    assert bce.reduction == "none" and torch.equal(bce.weight, w)
    assert (sl1.reduction, sl1.beta) == ("sum", 0.5)
    assert (kl.reduction, kl.log_target) == ("batchmean", True)
    assert (huber.reduction, huber.delta) == ("sum", 2.0)


@pytest.mark.parametrize("name", [n for n in TORCH_NAMED if n not in NO_LEGACY_ARGS])
def test_legacy_arguments_store_only_reduction(name):
    with pytest.warns(UserWarning, match="size_average and reduce"):
        mod = getattr(lk, name)(size_average=False)
    assert mod.reduction == "sum"
    with pytest.warns(UserWarning, match="size_average and reduce"):
        mod = getattr(lk, name)(reduce=False, reduction="sum")
    assert mod.reduction == "none"


def test_huber_rejects_size_average_and_reduce():
    with pytest.raises(TypeError):
        lk.HuberLoss(size_average=True)
    with pytest.raises(TypeError):
        lk.HuberLoss(reduce=False)
    with pytest.raises(TypeError):
        lk.HuberLoss(delta=1j)  # torch: "delta must be a float or int"


@pytest.mark.parametrize(("name", "buffers"), [
    ("CrossEntropyLoss", {"weight": (4,)}),
    ("NLLLoss", {"weight": (4,)}),
    ("BCELoss", {"weight": (4,)}),
    ("BCEWithLogitsLoss", {"weight": (4,), "pos_weight": (4,)}),
    ("BCEWithLogitsLoss", {"pos_weight": (4,)}),
])
def test_class_weights_are_buffers(name, buffers):
    tensors = {k: torch.rand(shape) + 0.5 for k, shape in buffers.items()}
    mod = getattr(lk, name)(**tensors)
    assert sorted(mod.state_dict()) == sorted(buffers)
    assert sorted(dict(mod.named_buffers())) == sorted(buffers)
    assert not list(mod.parameters())
    doubled = mod.double()  # buffers follow the module's dtype
    for key in buffers:
        assert getattr(doubled, key).dtype == torch.float64
    reloaded = getattr(lk, name)(**{k: torch.zeros_like(v) for k, v in tensors.items()})
    reloaded.load_state_dict(mod.state_dict())
    for key in buffers:
        torch.testing.assert_close(getattr(reloaded, key), tensors[key].double().float())


def test_double_module_matches_float64_oracle(gen):
    """A module built with float32 weights, then .double(), computes the float64 loss."""
    w = torch.rand(5) + 0.5
    mod = lk.CrossEntropyLoss(weight=w, label_smoothing=0.1).double()
    x, y = _randn(gen, 4, 5), torch.tensor([0, 4, 2, 1])
    torch.testing.assert_close(mod(x, y), oracle.cross_entropy(x, y, weight=w.double(),
                                                               label_smoothing=0.1))
    pw = torch.rand(5) + 0.5
    bce = lk.BCEWithLogitsLoss(pos_weight=pw).double()
    t = (torch.rand(4, 5, generator=gen) > 0.5).double()
    torch.testing.assert_close(bce(x, t), oracle.binary_cross_entropy_with_logits(
        x, t, pos_weight=pw.double()))


def test_modules_are_drop_in_subclasses_of_torch():
    for name in TORCH_NAMED:
        assert isinstance(getattr(lk, name)(), getattr(nn, name))


def test_focal_alpha_tensor_is_a_buffer():
    mod = lk.FocalLoss(alpha=torch.tensor([0.2, 0.3, 0.5]))
    assert list(mod.state_dict()) == ["alpha"]
    assert mod.double().alpha.dtype == torch.float64
    assert list(lk.FocalLoss(alpha=0.25).state_dict()) == []
    assert list(lk.DiceLoss().state_dict()) == []


FORWARD = [  # (Module, constructor kwargs, functional, input/target maker)
    ("MSELoss", {"reduction": "sum"}, "mse_loss", "regression"),
    ("L1Loss", {"reduction": "none"}, "l1_loss", "regression"),
    ("HuberLoss", {"delta": 0.3}, "huber_loss", "regression"),
    ("SmoothL1Loss", {"beta": 0.3, "reduction": "sum"}, "smooth_l1_loss", "regression"),
    ("BCELoss", {"weight": "C"}, "binary_cross_entropy", "probabilities"),
    ("BCEWithLogitsLoss", {"weight": "C", "pos_weight": "C"}, "binary_cross_entropy_with_logits",
     "multilabel"),
    ("CrossEntropyLoss", {"weight": "C", "ignore_index": 1, "label_smoothing": 0.2},
     "cross_entropy", "classes"),
    ("NLLLoss", {"weight": "C", "ignore_index": 2, "reduction": "sum"}, "nll_loss", "log_probs"),
    ("KLDivLoss", {"reduction": "batchmean", "log_target": True}, "kl_div", "log_dists"),
    ("FocalLoss", {"alpha": 0.25, "gamma": 1.5}, "focal_loss", "multilabel"),
    ("FocalLoss", {"alpha": "C", "gamma": 2.0, "ignore_index": 1}, "focal_loss", "classes"),
    ("DiceLoss", {"smooth": 0.5, "ignore_index": 1, "reduction": "none"}, "dice_loss", "classes"),
]


def _pair(kind, gen):
    x = _randn(gen, 6, 4)
    if kind == "regression":
        return x, _randn(gen, 6, 4)
    if kind == "probabilities":
        return torch.sigmoid(x), torch.rand(6, 4, generator=gen, dtype=torch.float64)
    if kind == "multilabel":
        return 3 * x, (torch.rand(6, 4, generator=gen) > 0.5).double()
    if kind == "log_dists":
        return torch.log_softmax(x, 1), torch.log_softmax(_randn(gen, 6, 4), 1)
    y = torch.tensor([0, 1, 2, 3, 2, 0])
    return (torch.log_softmax(x, 1) if kind == "log_probs" else x), y


@pytest.mark.parametrize(("module", "kwargs", "fn", "kind"), FORWARD,
                         ids=[f"{m}-{i}" for i, (m, *_rest) in enumerate(FORWARD)])
def test_forward_is_the_functional_call(module, kwargs, fn, kind, gen):
    kwargs = {k: (torch.rand(4, generator=gen, dtype=torch.float64) + 0.5 if v == "C" else v)
              for k, v in kwargs.items()}
    x, y = _pair(kind, gen)
    torch.testing.assert_close(getattr(lk, module)(**kwargs)(x, y),
                               getattr(LF, fn)(x, y, **kwargs), rtol=0, atol=0)


def test_module_reduction_can_change_after_construction(gen):
    x, y = _randn(gen, 3, 4), _randn(gen, 3, 4)
    mod = lk.MSELoss()
    mod.reduction = "sum"
    torch.testing.assert_close(mod(x, y), oracle.mse_loss(x, y, reduction="sum"))
