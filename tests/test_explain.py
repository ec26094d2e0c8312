"""`losskit explain` and the gallery: every registered loss has explain data, its closed-form
derivative equals autograd's in float64, its worked example equals the loss's own output, and its
curves draw."""

from __future__ import annotations

import math
import os

import pytest
import torch

from losskit import explain, registry

RECORDS = list(registry.records())
# "family-name": the family lets benchmarks/mutate.py pick one module's losses with `-k`.
IDS = [f"{r.family}-{r.name}" for r in RECORDS]


def _input_noise(record, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` moved a little, kept where the loss accepts it (probabilities in (0, 1), distances
    non-negative, log-probabilities normalised)."""
    g = torch.Generator().manual_seed(seed)
    moved = x + 0.3 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    if record.input == "probabilities":
        return moved.clamp(0.05, 0.95)
    if record.input == "distances":
        return moved.abs()
    if record.input == "log-probabilities":
        return moved.log_softmax(dim=-1)
    return moved


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_every_record_has_explain_data(record):
    assert record.explain is not None, (
        f"{record.name} has no explain data: add registry.describe({record.name}, ...) in "
        f"losskit/losses/{record.family}.py (docs/design.md, 'What a record needs for explain')")


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_closed_form_derivative_equals_autograd(record, seed):
    """The printed derivative's callable against autograd of the loss itself (reduction "sum"),
    float64, at the worked example and at two nearby inputs."""
    info = record.explain
    args, kwargs = info.example()
    if seed is not None:
        args = (_input_noise(record, args[0], seed), *args[1:])
    x = args[0].clone().requires_grad_(True)
    loss = record.function(x, *args[1:], **{**kwargs, "reduction": "sum"})
    (auto,) = torch.autograd.grad(loss, x)
    closed = info.gradient(args[0], *args[1:], **kwargs)
    torch.testing.assert_close(closed, auto, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_worked_example_equals_the_loss(record):
    text, example = explain.explain_text(record.name)
    assert example.by_hand.dtype == torch.float64
    torch.testing.assert_close(example.by_hand, example.by_loss, rtol=1e-12, atol=1e-14)
    assert "(equal)" in text
    printed = text.split(f"{record.name}(...) returns: ")[1].split(" (")[0]
    assert printed == explain._fmt(record.function(*record.explain.example()[0],
                                                   **record.explain.example()[1]))


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_curve_claims(record):
    """The curve is finite; a loss that claims convexity has no negative curvature along it
    (second differences of the loss); a bounded gradient stays within 10 along it."""
    _, t, lines = explain.gradient_curves(record, points=121)
    step = float(t[1] - t[0])
    for label, loss, grad in lines:
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), label
        if record.explain.convex:
            curvature = (loss[2:] - 2 * loss[1:-1] + loss[:-2]) / step**2
            assert curvature.min() > -1e-6, (label, curvature.min())
        if record.explain.bounded_gradient:
            assert grad.abs().max() < 10, label


def test_names_resolve_by_function_module_cli_and_torch_name():
    assert explain.resolve("CrossEntropyLoss").name == "cross_entropy"
    assert explain.resolve("cross-entropy").name == "cross_entropy"
    assert explain.resolve("smooth_l1").name == "smooth_l1_loss"
    assert explain.resolve("bceloss").name == "binary_cross_entropy"


def test_unknown_name_names_close_matches():
    with pytest.raises(KeyError) as info:
        explain.resolve("focall")
    message = info.value.args[0]
    assert "no loss named 'focall'" in message and "focal" in message and "Fix:" in message


def test_explain_cli_writes_the_png(tmp_path, capsys):
    from losskit.cli import main

    assert main(["explain", "huber", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "huber_loss(...) returns: 0.6875 (equal)" in out  # 4 hand-checked terms, mean
    assert (tmp_path / "huber_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gallery_has_a_picture_for_every_record(tmp_path):
    page = tmp_path / "gallery.md"
    paths = explain.write_gallery(tmp_path / "images", page, notes=explain.GALLERY_NOTES)
    text = page.read_text()
    families = {r.family for r in RECORDS}
    assert sorted(os.path.basename(p) for p in paths) == sorted(f"{f}.png" for f in families)
    for record in RECORDS:
        section = text.split(f"## {record.family}\n")[1].split("\n## ")[0]
        assert f"`{record.name}`" in section and f"images/{record.family}.png" in section
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_committed_gallery_page_lists_every_record():
    """docs/gallery.md is `losskit gallery`'s output for today's registry (rerun `make gallery`
    after adding a loss)."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "gallery.md").read_text()
    for record in RECORDS:
        assert f"`{record.name}`" in text, f"{record.name}: run `make gallery`"
        assert (docs / "images" / "gallery" / f"{record.family}.png").exists()


def test_printed_values_never_show_negative_zero():
    """kl_div's worked example printed "-0.0" (an exact -0.0, or a tiny negative rounded)."""
    assert explain._fmt(torch.tensor(-0.0, dtype=torch.float64)) == "0.0"
    assert explain._fmt(torch.tensor([-1e-9, 0.25, -0.5])) == "[0.0, 0.25, -0.5]"


# Issue 16 (mutation survivors): the worked examples and the curves' options, pinned by hand.


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def _cos(a, b) -> float:
    dot = sum(p * q for p, q in zip(a, b, strict=True))
    return dot / math.sqrt(sum(p * p for p in a) * sum(q * q for q in b))


# (family-name, the worked example's loss by hand from its documented numbers, in math's float64)
HAND_EXAMPLES = [
    # the regression family's one example: d = x - y = (-0.5, 0.5, 0, 3); mean of d^2
    ("regression-mse_loss", (0.25 + 0.25 + 0.0 + 9.0) / 4),
    # the same d, quantile 0.9: u = y - x = (0.5, -0.5, 0, -3); mean of max(0.9 u, -0.1 u)
    # (the sign of d counts here, unlike in d^2)
    ("regression-quantile_loss", (0.9 * 0.5 + 0.1 * 0.5 + 0.0 + 0.1 * 3.0) / 4),
    # p = (0.9, 0.2, 0.6), y = (1, 0, 0): -(log 0.9 + log 0.8 + log 0.4) / 3
    ("binary-binary_cross_entropy", -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3),
    # x = (2, -1, 0.5), y = (1, 0, 0): mean of softplus(-x) for y = 1, softplus(x) for y = 0
    ("binary-binary_cross_entropy_with_logits",
     (_softplus(-2.0) + _softplus(-1.0) + _softplus(0.5)) / 3),
    # a = ((1, 0), (1, 1), (0.5, 2)), b = ((1, 1), (1, 0.5), (-1, 0.1)), y = (1, -1, -1), m = 0.2
    ("ranking-cosine_embedding_loss",
     ((1 - _cos((1, 0), (1, 1))) + max(0.0, _cos((1, 1), (1, 0.5)) - 0.2)
      + max(0.0, _cos((0.5, 2), (-1, 0.1)) - 0.2)) / 3),
    # x = (1, 2, 3), y = (1.5, 2, 1), var = (0.5, 1, 2): mean of (log var + (x - y)^2 / var) / 2
    # h = ((1, -0.5), (0.2, 0.8)), W rows (1, 0), (0, 1), (1, 1), y = (0, 2): z = h W^T =
    # ((1, -0.5, 0.5), (0.2, 0.8, 1.0)); mean of logsumexp(z) - z_y
    ("linear_cross_entropy-linear_cross_entropy",
     (math.log(math.exp(1.0) + math.exp(-0.5) + math.exp(0.5)) - 1.0
      + math.log(math.exp(0.2) + math.exp(0.8) + math.exp(1.0)) - 1.0) / 2),
    # log-rates x = (0, 1, 2), counts y = (1, 3, 5): mean of e^x - y x
    ("likelihood-poisson_nll_loss", (1.0 + (math.e - 3.0) + (math.exp(2.0) - 10.0)) / 3),
    ("likelihood-gaussian_nll_loss",
     ((math.log(0.5) + 0.25 / 0.5) + 0.0 + (math.log(2.0) + 4.0 / 2.0)) / 2 / 3),
]


@pytest.mark.parametrize(("name", "expected"), HAND_EXAMPLES, ids=[n for n, _ in HAND_EXAMPLES])
def test_worked_example_matches_the_hand_value(name, expected):
    """The numbers `losskit explain` prints are the documented example's, not just any numbers
    on which the steps and the loss agree."""
    record = explain.resolve(name.split("-", 1)[1])
    args, kwargs = record.explain.example()
    value = record.function(*args, **kwargs)
    torch.testing.assert_close(value, torch.tensor(expected, dtype=torch.float64), rtol=1e-6,
                               atol=1e-9)


def test_likelihood_poisson_steps_print_y_times_log_rate():
    # "likelihood" in the name: benchmarks/mutate.py selects this module's tests with -k
    """The intermediate row "y log(rate)" of poisson_nll_loss (log_input: log rate = x), by hand."""
    record = explain.resolve("poisson_nll_loss")
    (x, y, *_), kwargs = record.explain.example()
    assert kwargs.get("log_input", True)
    rows = dict(explain.worked_example(record).steps)
    torch.testing.assert_close(rows["rate = exp(x)"], x.exp(), rtol=1e-12, atol=0)
    torch.testing.assert_close(rows["y log(rate)"], y * x, rtol=1e-12, atol=0)


def test_ranking_triplet_steps_print_both_distances():
    """The triplet example a = ((0, 0), (1, 1)), p = ((1, 0), (1, 2)), n = ((0, 1.5), (3.5, 1)):
    d(a, p) = (1, 1), d(a, n) = (1.5, 2.5) by hand (the loss alone hides the second, clamped)."""
    rows = dict(explain.worked_example(explain.resolve("triplet_margin_loss")).steps)
    f64 = torch.float64  # atol: eps = 1e-6 inside the norm
    torch.testing.assert_close(rows["d(a, p) = ||a - p + eps||"],
                               torch.tensor([1.0, 1.0], dtype=f64), rtol=0, atol=1e-5)
    torch.testing.assert_close(rows["d(a, n) = ||a - n + eps||"],
                               torch.tensor([1.5, 2.5], dtype=f64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_logits_gradient_with_pos_weight_equals_autograd(seed):
    """The pos_weight branch of binary_cross_entropy_with_logits' closed-form derivative (the
    worked example has none), against autograd in float64."""
    record = explain.resolve("binary_cross_entropy_with_logits")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, dtype=torch.float64, generator=g)
    y = torch.rand(6, dtype=torch.float64, generator=g)
    pw = torch.tensor(3.0, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    loss = record.function(xg, y, pos_weight=pw, reduction="sum")
    (auto,) = torch.autograd.grad(loss, xg)
    torch.testing.assert_close(record.explain.gradient(x, y, pos_weight=pw), auto, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_curve_options_are_distinct_and_not_flat(record):
    """Each overlaid curve has its own label, and each moves somewhere along the span (a flat
    line means its option left the loss's domain, e.g. a target of -2 for hinge_embedding_loss)."""
    labels = [label for label, _ in record.explain.curve.options]
    assert len(set(labels)) == len(labels), labels
    _, _, lines = explain.gradient_curves(record, points=61)
    for label, _, grad in lines:
        assert grad.abs().max() > 1e-6, label


@pytest.mark.parametrize("record", RECORDS, ids=IDS)
def test_curve_options_draw_different_lines(record):
    """No two overlaid options draw the same loss line: an option that lost its setting
    (e.g. hinge_embedding_loss's "y=-1" drawn with y = +1) duplicates another."""
    _, _, lines = explain.gradient_curves(record, points=61)
    for i, (label_a, loss_a, _) in enumerate(lines):
        for label_b, loss_b, _ in lines[i + 1:]:
            assert not torch.allclose(loss_a, loss_b, rtol=1e-9, atol=1e-12), (label_a, label_b)


def test_ranking_triplet_gradient_with_a_users_distance_equals_autograd():
    """triplet_margin_with_distance_loss's derivative for a distance_function of the user's
    (the L1 distance), against autograd in float64. With L1 the worked example's second
    triplet is satisfied (1 - 2.5 + margin 1 < 0): its gradient must be 0."""
    record = explain.resolve("triplet_margin_with_distance_loss")
    (a, pos, neg), kwargs = record.explain.example()
    l1 = torch.nn.PairwiseDistance(p=1)
    ag = a.clone().requires_grad_(True)
    loss = record.function(ag, pos, neg, distance_function=l1, reduction="sum", **kwargs)
    (auto,) = torch.autograd.grad(loss, ag)
    assert auto[1].abs().max() == 0  # the satisfied triplet, by hand
    torch.testing.assert_close(record.explain.gradient(a, pos, neg, distance_function=l1),
                               auto, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_likelihood_poisson_gradient_on_rates_equals_autograd(seed):
    """poisson_nll_loss's derivative for log_input=False (x the rate itself; the worked example
    has log_input=True), with the default eps, against autograd in float64."""
    record = explain.resolve("poisson_nll_loss")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, dtype=torch.float64, generator=g) * 3 + 0.1
    y = torch.randint(0, 6, (6,), generator=g).double()
    xg = x.clone().requires_grad_(True)
    loss = record.function(xg, y, log_input=False, reduction="sum")
    (auto,) = torch.autograd.grad(loss, xg)
    torch.testing.assert_close(record.explain.gradient(x, y, log_input=False), auto, rtol=1e-9,
                               atol=1e-12)


def test_linear_cross_entropy_curve_is_the_one_its_axis_names():
    """The curve "h along the true class's weight row (W = [e1, e2, 0])": h = (t, 0) gives
    logits (t, 0, 0) and, without smoothing, l = log(e^t + 2) - t (by hand)."""
    record = explain.resolve("linear_cross_entropy")
    t = torch.linspace(-6.0, 6.0, 25, dtype=torch.float64)
    torch.testing.assert_close(record.explain.curve.loss(t, label_smoothing=0.0),
                               torch.log(t.exp() + 2) - t, rtol=1e-12, atol=1e-14)


_D = (-0.5, 0.5, 0.0, 3.0)  # the regression family's example residual d = x - y
_COSH = tuple(math.cosh(v) for v in _D)
# Every row `losskit explain` prints for the regression family, by hand from d (huber's delta and
# smooth_l1's beta are 1, quantile_loss's q is 0.9: u = -d, q u, (q - 1) u, their max).
_REGRESSION_ROWS = {
    "mse_loss": {"l = d^2": (0.25, 0.25, 0.0, 9.0), "mean over the 4 elements": 2.375},
    "l1_loss": {"l = |d|": (0.5, 0.5, 0.0, 3.0), "mean over the 4 elements": 1.0},
    "huber_loss": {"|d|": (0.5, 0.5, 0.0, 3.0),
                   "quadratic 0.5 d^2 (used where |d| < delta)": (0.125, 0.125, 0.0, 4.5),
                   "linear delta (|d| - delta/2) (elsewhere)": (0.0, 0.0, -0.5, 2.5),
                   "l": (0.125, 0.125, 0.0, 2.5), "mean over the 4 elements": 0.6875},
    "smooth_l1_loss": {"|d|": (0.5, 0.5, 0.0, 3.0),
                       "0.5 d^2 / beta (used where |d| < beta)": (0.125, 0.125, 0.0, 4.5),
                       "|d| - beta/2 (elsewhere)": (0.0, 0.0, -0.5, 2.5),
                       "l": (0.125, 0.125, 0.0, 2.5), "mean over the 4 elements": 0.6875},
    "log_cosh_loss": {"cosh(d)": _COSH, "l = log cosh(d)": tuple(math.log(c) for c in _COSH),
                      "mean over the 4 elements": sum(math.log(c) for c in _COSH) / 4},
    "quantile_loss": {"u = y - x = -d": (0.5, -0.5, 0.0, -3.0),
                      "q u (under-prediction)": (0.45, -0.45, 0.0, -2.7),
                      "(q - 1) u (over-prediction)": (-0.05, 0.05, 0.0, 0.3),
                      "l = max of the two": (0.45, 0.05, 0.0, 0.3),
                      "mean over the 4 elements": 0.2},
}


def test_regression_rows_table_covers_the_family():
    assert {r.name for r in RECORDS if r.family == "regression"} == set(_REGRESSION_ROWS)


@pytest.mark.parametrize("name", sorted(_REGRESSION_ROWS))
def test_regression_worked_example_rows_match_the_hand_values(name):
    """Every printed row, not only the last: an intermediate row may be wrong while the loss
    (computed apart) is right."""
    record = explain.resolve(name)
    rows = dict(explain.worked_example(record).steps)
    assert record.family == "regression"
    assert set(rows) == {"residual d = x - y", *_REGRESSION_ROWS[name]}, "a row with no hand value"
    torch.testing.assert_close(rows["residual d = x - y"], torch.tensor(_D, dtype=torch.float64))
    for label, want in _REGRESSION_ROWS[name].items():
        torch.testing.assert_close(rows[label], torch.tensor(want, dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12, msg=label)


def test_likelihood_gaussian_steps_rows_match_the_hand_values():
    """Every row of gaussian_nll_loss's worked example: x = (1, 2, 3), y = (1.5, 2, 1),
    var = (0.5, 1, 2), by hand."""
    rows = dict(explain.worked_example(explain.resolve("gaussian_nll_loss")).steps)
    want = {"v = max(var, eps)": (0.5, 1.0, 2.0), "d = x - y": (-0.5, 0.0, 2.0),
            "d^2 / v": (0.5, 0.0, 2.0),
            "l = (log v + d^2 / v) / 2": ((math.log(0.5) + 0.5) / 2, 0.0, (math.log(2.0) + 2) / 2)}
    for label, value in want.items():
        torch.testing.assert_close(rows[label], torch.tensor(value, dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12, msg=label)


# d^2 l / dx^2 by hand: Poisson (log input) e^x > 0; Gaussian (in the mean) 1 / var > 0.
@pytest.mark.parametrize("name", ["poisson_nll_loss", "gaussian_nll_loss"])
def test_likelihood_losses_claim_the_convexity_their_second_derivative_proves(name):
    assert explain.resolve(name).explain.convex is True
    assert "convex in the input:  yes" in explain.explain_text(name)[0]
