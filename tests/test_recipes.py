"""Recipes: every loss trains on its task without a LossWarning; wrappers match torch in float64."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
from losskit import data
from losskit.train import (
    LOSSES,
    LOSSES_BY_TASK,
    default_loss,
    fit,
    make_loss,
    make_metrics,
    make_model,
)
from losskit.train.recipes import LogSoftmaxNLLLoss, SigmoidBCELoss

DATASET_OF_TASK = {
    "multiclass": "iris",
    "binary": "breast-cancer",
    "multilabel": "multilabel",
    "regression": "regression-outliers",
    "language-modelling": "sequence",
    "contrastive": "digits-contrastive",
}


@pytest.fixture(scope="module")
def datasets() -> dict[str, data.TaskData]:
    return {task: data.load(name) for task, name in DATASET_OF_TASK.items()}


CASES = [(task, loss) for task, losses in LOSSES_BY_TASK.items() for loss in losses]


@pytest.mark.parametrize(("task", "loss"), CASES)
def test_every_recipe_loss_trains_without_loss_warnings(datasets, task, loss) -> None:
    torch.set_num_threads(1)
    d = datasets[task]
    model = make_model(d, hidden=32)
    with warnings.catch_warnings(), lk.checks("always"):  # value checks on every call
        warnings.simplefilter("error", lk.LossWarning)
        h = fit(model, make_loss(loss, d), d.train, d.val, epochs=3, lr=1e-2, batch_size=128,
                metrics=make_metrics(d, model), seed=0, progress=False)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h.main_metric in h.final  # the task's metrics were computed


def test_loss_table_and_defaults() -> None:
    assert set(LOSSES) >= {"cross-entropy", "nll", "focal", "bce-with-logits", "bce", "mse", "l1",
                           "huber", "smooth-l1"}
    for task, losses in LOSSES_BY_TASK.items():
        assert default_loss(task) == losses[0]
    with pytest.raises(ValueError, match=r"task='ranking'.*multiclass"):
        default_loss("ranking")


def test_unknown_or_unfitting_loss_names_the_fitting_ones(datasets) -> None:
    with pytest.raises(ValueError, match=r"hinge.*Fix: use one of cross-entropy, nll, focal"):
        make_loss("hinge", datasets["multiclass"])
    with pytest.raises(ValueError, match="loss='mse' does not fit the multiclass task"):
        make_loss("mse", datasets["multiclass"])
    with pytest.raises(ValueError, match="mse, l1, huber, smooth-l1"):
        make_loss("cross-entropy", datasets["regression"])


def test_sigmoid_bce_matches_torch_in_float64() -> None:
    g = torch.Generator().manual_seed(0)
    x = (4 * torch.randn(6, 3, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randint(0, 2, (6, 3), generator=g).double()
    ours = SigmoidBCELoss()(x, y)
    (grad,) = torch.autograd.grad(ours, x)
    x2 = x.detach().clone().requires_grad_()
    ref = F.binary_cross_entropy(torch.sigmoid(x2), y)
    (ref_grad,) = torch.autograd.grad(ref, x2)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    # and, away from BCE's clamp, the same as BCE-with-logits
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(x, y), rtol=1e-10, atol=0)


def test_log_softmax_nll_equals_cross_entropy_on_padded_sequences() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)  # (B, V, T)
    y = torch.tensor([[1, 2, -100, -100], [0, 4, 3, -100]])
    torch.testing.assert_close(LogSoftmaxNLLLoss()(x, y), F.cross_entropy(x, y), rtol=1e-12, atol=0)


def test_models_have_the_task_shapes_and_are_seeded(datasets) -> None:
    for d in datasets.values():
        x, _ = d.train[:4]
        out = make_model(d, hidden=8)(x)
        if d.task == "language-modelling":
            assert tuple(out.shape) == (4, d.num_outputs, x.shape[1])  # (B, V, T)
        elif d.task == "contrastive":
            assert tuple(out.shape) == (4, 2, d.num_outputs)  # (B, views, D)
        else:
            assert tuple(out.shape) == (4, d.num_outputs)
    d = datasets["multiclass"]
    state = torch.get_rng_state()
    a, b = make_model(d, seed=5), make_model(d, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    c = make_model(d, seed=6)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    with pytest.raises(ValueError, match="hidden=0"):
        make_model(d, hidden=0)


def test_regression_outliers_separate_mse_from_l1_and_huber(datasets) -> None:
    """The dataset's point: gross outliers in the training targets pull MSE off, not L1/Huber."""
    torch.set_num_threads(1)
    d = datasets["regression"]
    x, y = d.val.tensors
    mae = {}
    for loss in ("mse", "l1", "huber"):
        model = make_model(d, hidden=32)
        fit(model, make_loss(loss, d), d.train, epochs=8, lr=3e-3, seed=0, progress=False)
        with torch.no_grad():
            mae[loss] = (model(x) - y).abs().mean().item()
    assert mae["l1"] < 0.5 * mae["mse"] and mae["huber"] < 0.5 * mae["mse"]
