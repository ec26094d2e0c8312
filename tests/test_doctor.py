"""lk.doctor: each mistake is caught by the right check, healthy setups pass every check, and the
caller's model, gradients and random state are left exactly as they were.

Expected values come from hand formulas (ln C, ln 2, Var(y), mean |y - median|, N / (C n_c),
negatives / positives), never from the doctor's own output.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
from doctor_setups.setups import LoRALinear, ReZero  # the models `losskit doctor` is tested on
from torch import nn

import losskit as lk
from losskit.doctor import CheckResult, Report, _Adam, doctor, expected_init_loss

CHECKS = [
    "forward", "loss checks", "output activation", "loss at init", "gradients",
    "overfit one batch", "class balance",
]


def mlp(inputs: int, outputs: int, *extra: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 32), nn.ReLU(), nn.Linear(32, outputs), *extra)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.1), nn.Flatten(),
        )
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, 1, 8, 8) -> (N, 10)


class TokenModel(nn.Module):
    """Embedding + GRU + vocabulary head; (B, T) tokens -> (B, V, T) logits."""

    def __init__(self, vocab: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16, padding_idx=0)
        self.rnn = nn.GRU(16, 32, batch_first=True)
        self.head = nn.Linear(32, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(tokens))  # (B, T, H)
        return self.head(h).transpose(1, 2)  # (B, V, T)


def token_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, 12, (16, 10), generator=gen)
    tokens[:, 7:] = 0  # padding at the end of every sequence
    target = torch.roll(tokens, -1, dims=1)
    target[:, 6:] = -100  # no target after the last real token
    return tokens, target


def healthy(kind: str, gen: torch.Generator) -> tuple[nn.Module, object, tuple]:
    torch.manual_seed(0)
    x = torch.randn(128, 10, generator=gen)
    if kind == "mlp-ce":
        return mlp(10, 5), lk.CrossEntropyLoss(), (x, torch.randint(0, 5, (128,), generator=gen))
    if kind == "mlp-torch-ce":
        return mlp(10, 5), nn.CrossEntropyLoss(), (x, torch.randint(0, 5, (128,), generator=gen))
    if kind == "mlp-bce-logits":
        y = torch.randint(0, 2, (128, 3), generator=gen).float()
        return mlp(10, 3), lk.BCEWithLogitsLoss(), (x, y)
    if kind == "mlp-mse":
        return mlp(10, 1), lk.MSELoss(), (x, torch.randn(128, 1, generator=gen))
    if kind == "logsoftmax-nll":
        y = torch.randint(0, 5, (128,), generator=gen)
        return mlp(10, 5, nn.LogSoftmax(dim=1)), lk.NLLLoss(), (x, y)
    if kind == "cnn-ce":
        xs = torch.randn(64, 1, 8, 8, generator=gen)
        return SmallCNN(), lk.CrossEntropyLoss(), (xs, torch.randint(0, 10, (64,), generator=gen))
    if kind == "token-padding":
        return TokenModel(), lk.CrossEntropyLoss(ignore_index=-100), token_batch(gen)
    raise AssertionError(kind)


HEALTHY = ["mlp-ce", "mlp-torch-ce", "mlp-bce-logits", "mlp-mse", "logsoftmax-nll", "cnn-ce",
           "token-padding"]


@pytest.mark.parametrize("kind", HEALTHY)
def test_healthy_setups_pass_every_check(kind: str, gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy(kind, gen)
    report = doctor(model, loss_fn, batch)
    assert [c.name for c in report.checks] == CHECKS
    assert [c.status for c in report.checks] == ["pass"] * len(CHECKS), str(report)
    assert report.ok


@pytest.mark.parametrize(("dataset", "loss"), [("breast-cancer", "bce"), ("iris", "nll"),
                                              ("wine", "focal"), ("diabetes", "huber")])
def test_recipe_losses_that_apply_their_own_activation_pass(dataset: str, loss: str) -> None:
    # SigmoidBCELoss / LogSoftmaxNLLLoss take logits (output_kind = "logits"): no false alarm.
    from losskit.data import load
    from losskit.train import recipes

    data = load(dataset)
    model, loss_fn = recipes.make_model(data, hidden=32), recipes.make_loss(loss, data)
    report = doctor(model, loss_fn, data.train[:128])
    assert [c.status for c in report.checks] == ["pass"] * len(CHECKS), str(report)


def test_label_smoothing_overfits_to_its_floor_not_to_zero(gen: torch.Generator) -> None:
    model, _, batch = healthy("mlp-ce", gen)
    smoothed = lk.CrossEntropyLoss(label_smoothing=0.3)  # minimum ~0.9 for 5 classes, not 0
    check = doctor(model, smoothed, batch)["overfit one batch"]
    assert check.status == "pass" and "floor" in check.message


def test_internal_adam_matches_torch_adam() -> None:
    torch.manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    mine, theirs = _Adam([a], lr=0.05), torch.optim.Adam([b], lr=0.05)
    for _ in range(25):
        for p, opt in ((a, mine), (b, theirs)):
            p.grad = None
            (p.pow(3).sum() + p.sin().sum()).backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_doctor_leaves_the_model_and_rng_unchanged(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("cnn-ce", gen)  # BatchNorm buffers and Dropout both move
    model.eval()
    model.features[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = doctor(model, loss_fn, batch, lr=0.1)
    assert report["overfit one batch"].status == "pass"  # it really trained (on a copy)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bitwise
    assert all(p.grad is None for p in model.parameters())
    assert not model.features[0].weight.requires_grad and model.head.weight.requires_grad
    assert not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)


class Unpicklable(nn.Module):
    """Holds a lock, so deepcopy fails: the doctor must work in place and restore everything."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_model_that_cannot_be_copied_is_restored(gen: torch.Generator) -> None:
    model = Unpicklable()
    with pytest.raises(TypeError):
        import copy

        copy.deepcopy(model)
    x, y = torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    model.net[0].weight.grad = torch.ones_like(model.net[0].weight)  # a caller's pending gradient
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = doctor(model, lk.CrossEntropyLoss(), (x, y))
    assert report.ok, str(report)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.net[0].weight.grad, torch.ones_like(model.net[0].weight))
    assert model.net[3].weight.grad is None
    assert model.training


def test_softmax_head_before_cross_entropy_fails(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("mlp-ce", gen)
    report = doctor(nn.Sequential(model, nn.Softmax(dim=1)), loss_fn, batch)
    check = report["output activation"]
    assert check.status == "fail" and not report.ok
    assert "Softmax" in check.message and "logits" in check.message
    assert report["loss checks"].status == "warn"  # losskit's own LossWarning, reported as a warn


class FunctionalSoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.lin(x), dim=1)  # no Softmax module to find: outputs tell


def test_softmax_in_forward_is_found_from_the_outputs(gen: torch.Generator) -> None:
    _, _, batch = healthy("mlp-ce", gen)
    report = doctor(FunctionalSoftmax(), nn.CrossEntropyLoss(), batch)
    assert report["output activation"].status == "fail"
    assert "probabilities" in report["output activation"].message


def test_sigmoid_before_bce_with_logits_fails(gen: torch.Generator) -> None:
    model, _, batch = healthy("mlp-bce-logits", gen)
    report = doctor(nn.Sequential(model, nn.Sigmoid()), nn.BCEWithLogitsLoss(), batch)
    assert report["output activation"].status == "fail"
    assert "Sigmoid" in report["output activation"].message


def test_logits_given_to_nll_fail(gen: torch.Generator) -> None:
    model, _, batch = healthy("mlp-ce", gen)
    report = doctor(model, nn.NLLLoss(), batch)  # no LogSoftmax
    assert report["output activation"].status == "fail"
    assert "LogSoftmax" in report["output activation"].message


def test_bounded_head_that_cannot_reach_regression_targets_fails(gen: torch.Generator) -> None:
    model, loss_fn, (x, y) = healthy("mlp-mse", gen)
    report = doctor(nn.Sequential(model, nn.Sigmoid()), loss_fn, (x, y * 5))
    assert report["output activation"].status == "fail"
    assert "[0, 1]" in report["output activation"].message


class CutOff(nn.Module):
    """`side` is detached from the graph, `unused` never runs, `dead` is multiplied by 0."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(10, 5)
        self.side = nn.Linear(10, 5)
        self.unused = nn.Linear(10, 5)
        self.dead = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.side(x).detach() + 0 * self.dead


def test_parameters_cut_off_from_the_graph_are_named(gen: torch.Generator) -> None:
    _, loss_fn, batch = healthy("mlp-ce", gen)
    check = doctor(CutOff(), loss_fn, batch)["gradients"]
    assert check.status == "fail"
    for name in ("side.weight", "side.bias", "unused.weight", "unused.bias", "dead"):
        assert name in check.message
    assert "body.weight" not in check.message
    assert "no gradient" in check.message and "all-zero gradient" in check.message


class NaNGrad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(10, 5)
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + 0 * self.scale.sqrt()  # d sqrt(s)/ds at 0 is inf; 0 * inf is NaN


def test_non_finite_gradient_is_named(gen: torch.Generator) -> None:
    _, loss_fn, batch = healthy("mlp-ce", gen)
    check = doctor(NaNGrad(), loss_fn, batch)["gradients"]
    assert check.status == "fail"
    assert "scale got a NaN/Inf gradient" in check.message
    assert "lin.weight" not in check.message


def test_no_trainable_parameters_fails(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("mlp-ce", gen)
    model.requires_grad_(False)
    report = doctor(model, loss_fn, batch)
    # Nothing requires grad, so the loss has no graph; the cause is the frozen model, not a
    # detach, and the report says so in the gradients check.
    assert not report.ok
    assert "detached" not in report["loss checks"].message
    check = report["gradients"]
    assert check.status == "fail"
    assert "no trainable parameters (4 frozen)" in check.message and "Fix:" in check.message
    assert "requires_grad=True" in check.message


def test_no_trainable_parameters_with_a_graph_fails(gen: torch.Generator) -> None:
    _, loss_fn, (x, y) = healthy("mlp-ce", gen)
    frozen = nn.Linear(10, 5).requires_grad_(False)
    report = doctor(frozen, loss_fn, (x.requires_grad_(True), y))
    assert report["gradients"].status == "fail"
    assert "no trainable parameters" in report["gradients"].message
    assert report["overfit one batch"].status == "fail"


def test_learning_rate_zero_fails_the_overfit_check(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("mlp-ce", gen)
    report = doctor(model, loss_fn, batch, lr=0.0)
    check = report["overfit one batch"]
    assert check.status == "fail" and "lr=0" in check.message
    assert doctor(model, loss_fn, batch)["overfit one batch"].status == "pass"


def test_divergent_learning_rate_fails_the_overfit_check(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("mlp-mse", gen)
    assert doctor(model, loss_fn, batch, lr=1e6, overfit_steps=30)["overfit one batch"].status == (
        "fail"
    )


def test_loss_input_error_fails_the_loss_check(gen: torch.Generator) -> None:
    model, loss_fn, (x, y) = healthy("mlp-ce", gen)
    report = doctor(model, loss_fn, (x, y[:, None]))  # (N, 1) target for cross-entropy
    assert not report.ok
    assert report["loss checks"].status == "fail"
    assert [c.name for c in report.checks] == ["forward", "loss checks"]


def test_torch_loss_gets_losskit_checks(gen: torch.Generator) -> None:
    model, _, (x, y) = healthy("mlp-mse", gen)
    # torch would broadcast (N, 1) against (N,) to (N, N) with a UserWarning; losskit raises.
    report = doctor(model, nn.MSELoss(), (x, y[:, 0]))
    assert report["loss checks"].status == "fail"
    assert "broadcast" in report["loss checks"].message


def test_loss_warning_is_a_warn(gen: torch.Generator) -> None:
    model, loss_fn, (x, _) = healthy("mlp-ce", gen)
    soft = torch.rand(128, 5, generator=gen)  # probability targets whose rows do not sum to 1
    report = doctor(model, loss_fn, (x, soft))
    assert report["loss checks"].status == "warn"
    assert report.ok


def test_forward_error_fails(gen: torch.Generator) -> None:
    _, loss_fn, (x, y) = healthy("mlp-ce", gen)
    report = doctor(mlp(7, 5), loss_fn, (x, y))
    assert [(c.name, c.status) for c in report.checks] == [("forward", "fail")]
    assert "RuntimeError" in report["forward"].message


def test_overconfident_init_warns(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("mlp-ce", gen)
    with torch.no_grad():
        model[2].weight.mul_(100)
    report = doctor(model, loss_fn, batch)
    assert report["loss at init"].status == "warn"
    assert f"{math.log(5):.4g}" in report["loss at init"].message
    assert report.ok  # a warning, not a failure


def test_uncentred_regression_targets_warn(gen: torch.Generator) -> None:
    model, loss_fn, (x, y) = healthy("mlp-mse", gen)
    report = doctor(model, loss_fn, (x, y + 50))
    check = report["loss at init"]
    assert check.status == "warn" and "standardise" in check.message


def test_expected_init_loss_formulas(gen: torch.Generator) -> None:
    out = torch.randn(40, 7, generator=gen)
    y = torch.randint(0, 7, (40,), generator=gen)
    w = torch.rand(7, generator=gen) + 0.1
    for loss_fn in (lk.CrossEntropyLoss(), nn.CrossEntropyLoss(), lk.CrossEntropyLoss(weight=w),
                    lk.CrossEntropyLoss(label_smoothing=0.2)):
        assert expected_init_loss(loss_fn, out, y)[0] == pytest.approx(math.log(7), rel=1e-6)
    both = lk.CrossEntropyLoss(weight=w, label_smoothing=0.2)  # torch's weighted smoothing term
    by_hand = math.log(7) * (0.8 + 0.2 * float(w.mean() / w[y].mean()))
    assert expected_init_loss(both, out, y)[0] == pytest.approx(by_hand, rel=1e-5)
    assert expected_init_loss(lk.NLLLoss(), out, y)[0] == pytest.approx(math.log(7), rel=1e-6)

    yb = torch.randint(0, 2, (40, 7), generator=gen).double()
    pw = torch.rand(7, generator=gen, dtype=torch.float64) * 3
    by_hand = (math.log(2) * (1 + (pw - 1) * yb)).mean()  # ln 2 * (1 + (p_c - 1) y) per element
    value = expected_init_loss(lk.BCEWithLogitsLoss(pos_weight=pw), out.double(), yb)[0]
    assert value == pytest.approx(float(by_hand), rel=1e-9)
    assert expected_init_loss(lk.BCELoss(), out.double(), yb)[0] == pytest.approx(math.log(2))

    yr = torch.randn(41, 1, generator=gen, dtype=torch.float64) * 3 + 2
    out_r = torch.zeros(41, 1, dtype=torch.float64)
    assert expected_init_loss(lk.MSELoss(), out_r, yr)[0] == pytest.approx(
        float(yr.var(unbiased=False)), rel=1e-9
    )
    mad = float((yr - yr.flatten().sort().values[20]).abs().mean())  # 41 values: median is #20
    assert expected_init_loss(lk.L1Loss(), out_r, yr)[0] == pytest.approx(mad, rel=1e-9)
    assert expected_init_loss(lambda a, b: (a - b).abs().mean(), out_r, yr) is None


def test_imbalanced_binary_labels_suggest_pos_weight(gen: torch.Generator) -> None:
    model, loss_fn, (x, _) = healthy("mlp-bce-logits", gen)
    y = torch.zeros(128, 3)
    y[:10, 0] = 1  # label 0: 10 positives, 118 negatives
    y[:64, 1] = 1  # balanced
    y[:, 2] = 1  # label 2: all positive
    check = doctor(model, loss_fn, (x, y))["class balance"]
    assert check.status == "warn"
    assert f"pos_weight=torch.tensor([{118 / 10:.3g}, 1, 0])" in check.message
    weighted = lk.BCEWithLogitsLoss(pos_weight=torch.tensor([11.8, 1.0, 1.0]))
    assert doctor(model, weighted, (x, y))["class balance"].status == "pass"


def test_imbalanced_classes_suggest_weight(gen: torch.Generator) -> None:
    model, loss_fn, (x, _) = healthy("mlp-ce", gen)
    y = torch.tensor([0] * 80 + [1] * 30 + [2] * 10 + [3] * 8)  # class 4 never appears
    check = doctor(model, loss_fn, (x, y))["class balance"]
    assert check.status == "warn"
    n, c = 128, 4  # "balanced" weights over the classes present: N / (C n_c)
    expected = [n / (c * k) for k in (80, 30, 10, 8)] + [0.0]
    assert "weight=torch.tensor([" + ", ".join(f"{w:.3g}" for w in expected) + "])" in (
        check.message
    )


def test_small_batches_are_not_called_imbalanced(gen: torch.Generator) -> None:
    model, loss_fn, (x, _) = healthy("mlp-ce", gen)
    y = torch.tensor([0] * 9 + [1] * 3 + [2] * 2 + [3] * 2)  # 4.5x, but only 16 samples
    assert doctor(model, loss_fn, (x[:16], y))["class balance"].status == "pass"


def test_report_renders_and_summarises() -> None:
    report = Report([CheckResult("gradients", "fail", "w got no gradient. Fix: use it."),
                     CheckResult("forward", "pass", "ok")])
    text = str(report)
    assert "FAILED" in text and "gradients" in text and "w got no gradient" in text
    assert not report.ok and [c.name for c in report.failures] == ["gradients"]
    with pytest.raises(KeyError, match="forward"):
        report["missing"]
    with pytest.raises(ValueError, match="status"):
        CheckResult("x", "ok", "")


def test_rich_rendering(gen: torch.Generator) -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    doctor(*healthy("mlp-ce", gen)).print(console)
    text = console.export_text()
    assert all(name in text for name in CHECKS) and "OK" in text
    console = Console(record=True, width=120)
    Report([CheckResult("x", "warn", "weights w[y] and [bold] stay literal")]).print(console)
    assert "w[y] and [bold] stay literal" in console.export_text()


def test_bad_arguments_raise(gen: torch.Generator) -> None:
    model, loss_fn, batch = healthy("mlp-ce", gen)
    with pytest.raises(TypeError, match="inputs, targets"):
        doctor(model, loss_fn, batch[0])
    with pytest.raises(TypeError, match=r"nn\.Module"):
        doctor(lambda x: x, loss_fn, batch)
    with pytest.raises(ValueError, match="overfit_steps=0"):
        doctor(model, loss_fn, batch, overfit_steps=0)
    with pytest.raises(ValueError, match="lr=nan"):
        doctor(model, loss_fn, batch, lr=float("nan"))


def test_public_name_is_callable(gen: torch.Generator) -> None:
    assert lk.doctor(*healthy("mlp-mse", gen)).ok


# ----------------------------------------------------------------------------------------------
# Review fixes: zero-initialised partners, crashes inside a check, small sigmoid heads, buffers


@pytest.mark.parametrize("kind", ["lora", "rezero"])
def test_zero_initialised_adapters_and_gates_pass(kind: str, gen: torch.Generator) -> None:
    _, loss_fn, batch = healthy("mlp-ce", gen)
    torch.manual_seed(0)
    if kind == "lora":
        model = nn.Sequential(nn.Linear(10, 32).requires_grad_(False), nn.ReLU(),
                              LoRALinear(32, 5))
        zeroed = "2.A"
    else:
        model = ReZero(inputs=10, classes=5)
        zeroed = "f.0.weight"
    report = doctor(model, loss_fn, batch)
    assert report.ok, str(report)
    check = report["gradients"]
    assert check.status == "pass", check.message
    assert zeroed in check.message and "moved" in check.message


class DeadParameter(nn.Module):
    """`dead` is multiplied by 0: its gradient is zero and stays zero."""

    def __init__(self) -> None:
        super().__init__()
        self.body = mlp(10, 5)
        self.dead = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + 0 * self.dead


def test_an_all_zero_gradient_only_warns_and_names_the_usual_causes(gen: torch.Generator) -> None:
    _, loss_fn, batch = healthy("mlp-ce", gen)
    report = doctor(DeadParameter(), loss_fn, batch)
    check = report["gradients"]
    assert check.status == "warn" and report.ok, str(report)
    assert "dead got an all-zero gradient" in check.message
    assert "LoRA" in check.message and "did not move" in check.message and "Fix:" in check.message
    assert "body.weight" not in check.message


def test_batchnorm_with_many_labels_per_row_overfits_two_rows(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 40))
    x, y = torch.randn(128, 10, generator=gen), torch.randint(0, 2, (128, 40), generator=gen)
    report = doctor(model, lk.BCEWithLogitsLoss(), (x, y.float()))
    assert report.ok, str(report)
    assert "on 2 samples" in report["overfit one batch"].message  # 32 targets / 40 per row < 2


class RaisesAfterFirstCall(nn.Module):
    """Runs once, then raises: every later step of the doctor meets the error."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(10, 5)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("second call refused")
        return self.lin(x)


def test_a_check_that_raises_is_reported_not_raised(gen: torch.Generator) -> None:
    _, loss_fn, batch = healthy("mlp-ce", gen)
    report = doctor(RaisesAfterFirstCall(), loss_fn, batch)
    assert [c.name for c in report.checks] == CHECKS
    for name in ("output activation", "overfit one batch"):
        check = report[name]
        assert check.status == "fail"
        assert "RuntimeError: second call refused" in check.message and "Fix:" in check.message
    assert report["gradients"].status == "pass"  # the first call's graph was fine


def test_sigmoid_layer_before_bce_with_logits_fails_on_a_tiny_batch(gen: torch.Generator) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid())
    x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 2, (8, 1), generator=gen).float()
    check = doctor(model, nn.BCEWithLogitsLoss(), (x, y))["output activation"]
    assert check.status == "fail"  # 8 outputs: too few to judge by their values alone
    assert "Sigmoid" in check.message and "Fix:" in check.message


class SigmoidGate(nn.Module):
    """A Sigmoid module runs last, but as a gate: the output is logits, not its values."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(10, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * (1 + self.gate(x[:, :1]))


def test_a_sigmoid_gate_that_is_not_the_output_is_not_blamed(gen: torch.Generator) -> None:
    x, y = torch.randn(8, 10, generator=gen), torch.randint(0, 2, (8, 1), generator=gen).float()
    assert doctor(SigmoidGate(), nn.BCEWithLogitsLoss(), (x, y))["output activation"].status == (
        "pass"
    )


class UnpicklableCounter(nn.Module):
    """A lock (no deepcopy) and a non-persistent buffer that every forward changes."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.lin = mlp(10, 5)
        self.register_buffer("calls", torch.ones(()), persistent=False)
        self.register_buffer("seen", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1  # in place
        self.seen = self.seen + 1  # a new tensor each call
        return self.lin(x)


def test_in_place_fallback_restores_non_persistent_buffers(gen: torch.Generator) -> None:
    _, loss_fn, batch = healthy("mlp-ce", gen)
    model = UnpicklableCounter()
    calls, seen = model.calls, model.seen
    assert doctor(model, loss_fn, batch).ok
    assert model.calls is calls and model.seen is seen
    assert float(model.calls) == 1.0 and float(model.seen) == 0.0


@pytest.mark.parametrize("bias", [0.0, 0.4])
def test_zero_or_prior_bias_bce_head_is_not_taken_for_a_sigmoid(
    gen: torch.Generator, bias: float
) -> None:
    """A zero-initialised head (all logits 0, as torchvision's ViT head) or a tiny head with a
    positive prior bias gives logits on one side of 0.5 inside [0, 1]: healthy, not sigmoid."""
    model, loss_fn, batch = healthy("mlp-bce-logits", gen)
    head = model[-1]
    with torch.no_grad():
        head.weight.mul_(0.0 if bias == 0.0 else 1e-3)
        head.bias.fill_(bias)
    report = doctor(model, loss_fn, batch)
    assert report["output activation"].status == "pass", report["output activation"].message


def test_imbalanced_single_label_of_shape_n_suggests_pos_weight(gen: torch.Generator) -> None:
    """Issue 16, seed 4: a 1-D float target (one binary label per sample) is one label of N
    samples, (N,) read as (N, 1): 10 positives, 118 negatives -> pos_weight 11.8."""
    x = torch.randn(128, 4, generator=gen)
    model = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Flatten(0))  # (N,) logits
    y = torch.zeros(128)
    y[:10] = 1
    check = doctor(model, lk.BCEWithLogitsLoss(), (x, y))["class balance"]
    assert check.status == "warn"
    assert f"pos_weight=torch.tensor([{118 / 10:.3g}])" in check.message
    assert "[118, 10]" in check.message  # (negatives, positives)
