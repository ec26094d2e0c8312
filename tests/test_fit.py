"""fit: learning on real data, exact loss reduction and gradient accumulation, NaN handling,
early stopping, inputs and outputs. Accuracies and losses are recomputed here independently
(argmax / torch.nn.functional in float64), not read back from fit's own metrics."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import losskit as lk
from losskit import data
from losskit.train import EarlyStopping, NonFiniteLossError, fit, make_loss, make_model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and reproducibly) on one thread, also on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _accuracy(model: nn.Module, ds: TensorDataset, binary: bool = False) -> float:
    x, y = ds.tensors
    with torch.no_grad():
        out = model(x)
    pred = (out > 0).float() if binary else out.argmax(1)
    return (pred == y).double().mean().item()


# --- learning on the built-in data --------------------------------------------------------------


def test_digits_reaches_95_percent_val_accuracy() -> None:
    d = data.load("digits")
    model = make_model(d)
    h = fit(model, make_loss("cross-entropy", d), d.train, d.val, epochs=8, seed=0, progress=False)
    acc = _accuracy(model, d.val)
    assert acc >= 0.95
    assert h.final["val_accuracy"] == pytest.approx(acc, abs=1e-6)  # torchmetrics agrees
    x, y = d.val.tensors
    with torch.no_grad():
        expected = F.cross_entropy(model(x).double(), y).item()
    assert h.final["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_diabetes_mse_beats_predicting_the_mean() -> None:
    d = data.load("diabetes")
    model = make_model(d, hidden=32)
    fit(model, make_loss("mse", d), d.train, d.val, epochs=10, lr=3e-3, batch_size=32, seed=0,
        progress=False)
    x, y = d.val.tensors
    with torch.no_grad():
        mse = F.mse_loss(model(x).double(), y.double()).item()
    train_mean = d.train.tensors[1].double().mean()
    baseline = F.mse_loss(train_mean.expand_as(y), y.double()).item()
    assert mse < 0.85 * baseline  # measured: 0.68 x baseline


def test_breast_cancer_bce_with_logits_reaches_95_percent() -> None:
    d = data.load("breast-cancer")
    model = make_model(d)
    h = fit(model, make_loss("bce-with-logits", d), d.train, d.val, epochs=10, seed=0,
            progress=False)
    acc = _accuracy(model, d.val, binary=True)
    assert acc >= 0.95
    assert h.final["val_accuracy"] == pytest.approx(acc, abs=1e-6)


# --- exact reductions ---------------------------------------------------------------------------


def _token_problem(dtype=torch.float64):
    """8 sequences of 6 tokens whose counted (non -100) targets range from 1 to 6."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 7, (8, 6), generator=g)
    y = torch.randint(0, 7, (8, 6), generator=g)
    for i, counted in enumerate([1, 6, 2, 5, 1, 3, 6, 2]):
        y[i, counted:] = -100
    torch.manual_seed(1)
    model = nn.Sequential(nn.Embedding(7, 5), nn.Tanh(), nn.Linear(5, 7)).to(dtype)

    class ClassDimFirst(nn.Module):  # (B, T, V) -> (B, V, T) as cross-entropy wants
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, t):
            return self.net(t).transpose(1, 2)

    weight = torch.rand(7, generator=g, dtype=dtype) + 0.5
    return x, y, ClassDimFirst(), weight


def test_grad_accumulation_equals_one_big_batch_with_uneven_ignore_counts() -> None:
    x, y, model, weight = _token_problem()
    oracle = copy.deepcopy(model)
    fit(model, lk.CrossEntropyLoss(weight=weight), (x, y), epochs=1, batch_size=2,
        grad_accum_steps=4, optimizer=lambda p: torch.optim.SGD(p, lr=0.5), metrics={}, seed=0,
        progress=False)
    # Oracle: one step of SGD on torch's weighted mean over the whole batch, in float64.
    F.cross_entropy(oracle(x), y, weight=weight).backward()
    with torch.no_grad():
        for p in oracle.parameters():
            p -= 0.5 * p.grad
    assert _max_diff(model, oracle) < 1e-6
    # The data is uneven enough for the naive mean of micro-batch means to miss by far.
    naive = _naive_step(_token_problem()[2], x, y, weight)
    assert _max_diff(naive, oracle) > 1e-3


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max((p - q).abs().max().item() for p, q in pairs)


def _naive_step(model: nn.Module, x, y, weight) -> nn.Module:
    pairs = zip(x.split(2), y.split(2), strict=True)
    losses = [F.cross_entropy(model(xb), yb, weight=weight) for xb, yb in pairs]
    (sum(losses) / len(losses)).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.5 * p.grad
    return model


def test_train_loss_is_reduced_like_val_loss() -> None:
    """With lr=0 the weights never change, so train and val loss over the same padded data must
    both equal the weighted mean over all tokens, not a mean of batch means."""
    x, y, model, weight = _token_problem()
    h = fit(model, lk.CrossEntropyLoss(weight=weight), (x, y), (x, y), epochs=1, batch_size=3,
            optimizer=lambda p: torch.optim.SGD(p, lr=0.0), metrics={}, progress=False)
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, weight=weight).item()
    assert h[0]["train_loss"] == pytest.approx(expected, rel=1e-12)
    assert h[0]["val_loss"] == pytest.approx(expected, rel=1e-12)


def test_language_model_metrics_ignore_padding() -> None:
    d = data.load("sequence")
    model = make_model(d, hidden=32)
    h = fit(model, make_loss("cross-entropy", d), d.train, d.val, epochs=3, lr=1e-2,
            batch_size=64, seed=0, progress=False)
    x, y = d.val.tensors
    with torch.no_grad():
        out = model(x)  # (B, V, T)
    counted = y != -100
    token_acc = (out.argmax(1) == y)[counted].double().mean().item()
    nll = F.cross_entropy(out.double(), y).item()
    assert h.final["val_token_accuracy"] == pytest.approx(token_acc, abs=1e-6)
    assert h.final["val_perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
    assert token_acc > 0.8  # the count-up rule is learnable (best possible about 0.907)


# --- failures and control flow ------------------------------------------------------------------


class _NaNAt(nn.Module):
    """A linear model whose training forward number ``at`` returns NaN."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.at, self.calls = at, 0

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * float("nan")
        return out


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_checkpoint(tmp_path) -> None:
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    model = _NaNAt(at=4 + 3)  # 4 steps per epoch: the 3rd step of epoch 2
    with lk.checks("off"), pytest.raises(NonFiniteLossError) as err:
        fit(model, lk.CrossEntropyLoss(), (x, y), epochs=3, batch_size=10, seed=0, out=tmp_path,
            metrics={}, progress=False)
    message = str(err.value)
    assert "epoch 2, step 3" in message and "nan" in message
    assert str(tmp_path / "checkpoint.pt") in message
    assert "amp" not in message  # amp was off: no advice to turn it off
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step was not applied


def test_early_stopping_restores_best_weights(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 10, generator=g), torch.randint(0, 2, (64,), generator=g)
    xv, yv = torch.randn(64, 10, generator=g), torch.randint(0, 2, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 2))
    h = fit(model, lk.CrossEntropyLoss(), (x, y), (xv, yv), epochs=60, lr=1e-2, batch_size=16,
            early_stopping=EarlyStopping(patience=3), out=tmp_path, metrics={}, progress=False)
    losses = h.column("val_loss")
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(h) == best + 1 + 3 < 60  # random labels: val loss rises, training stops early
    with torch.no_grad():
        now = F.cross_entropy(model(xv).double(), yv).item()
    assert now == pytest.approx(losses[best], rel=1e-5)  # the model holds the best epoch again
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert saved["epoch"] == best + 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved["model"].items())


def test_accepts_dataset_and_dataloader_and_writes_outputs(tmp_path, capsys) -> None:
    x, y = torch.randn(50, 3), torch.randn(50, 1)
    ds = TensorDataset(x, y)
    h1 = fit(nn.Linear(3, 1), lk.MSELoss(), ds, DataLoader(ds, batch_size=7), epochs=2,
             progress=False, out=tmp_path)
    h2 = fit(nn.Linear(3, 1), lk.MSELoss(), DataLoader(ds, batch_size=8, shuffle=True), ds,
             epochs=2, progress=False)
    printed = capsys.readouterr()
    assert printed.out == printed.err == ""  # progress=False prints nothing
    assert len(h1) == len(h2) == 2 and "val_mae" in h1.final and "val_rmse" in h2.final
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"checkpoint.pt", "best.pt", "history.csv", "metrics.json", "loss_curve.png"}


def test_progress_prints_epoch_table(capsys) -> None:
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    fit(nn.Linear(3, 2), lk.CrossEntropyLoss(), (x, y), (x, y), epochs=2, progress=True)
    out = capsys.readouterr().out
    assert "train_loss" in out and "val_loss" in out and "val_accuracy" in out
    assert len([line for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]) == 2


def test_amp_bfloat16_trains_on_cpu() -> None:
    d = data.load("digits")
    model = make_model(d, hidden=64)
    h = fit(model, make_loss("cross-entropy", d), d.train, d.val, epochs=3, amp=True, seed=0,
            progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert h.final["val_loss"] < h[0]["train_loss"] and h.final["val_accuracy"] > 0.85


def test_resume_after_finishing_returns_history_without_training(tmp_path) -> None:
    x, y = torch.randn(20, 3), torch.randn(20, 1)
    model = nn.Linear(3, 1)
    first = fit(model, lk.MSELoss(), (x, y), epochs=2, out=tmp_path, progress=False)
    weights = copy.deepcopy(model.state_dict())
    again = fit(model, lk.MSELoss(), (x, y), epochs=2, out=tmp_path, resume=True, progress=False)
    assert again.records == first.records
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs=0"),
        ({"grad_accum_steps": 0}, "grad_accum_steps=0"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"resume": True}, "resume=True needs out="),
        ({"device": "nonsense"}, "device='nonsense'"),
        ({"early_stopping": "yes"}, "early_stopping='yes'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit(nn.Linear(3, 1), lk.MSELoss(), (torch.randn(4, 3), torch.randn(4, 1)),
            progress=False, **kwargs)


def test_bad_train_data_names_the_fix() -> None:
    with pytest.raises(TypeError, match="pair of tensors"):
        fit(nn.Linear(3, 1), lk.MSELoss(), [1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="4 and 5 rows"):
        fit(nn.Linear(3, 1), lk.MSELoss(), (torch.randn(4, 3), torch.randn(5, 1)), progress=False)


# --- resume: settings must match the checkpoint's run ------------------------------------------


def _small_run(**overrides):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g)
    kw = {"model": nn.Linear(3, 2), "loss_fn": lk.CrossEntropyLoss(), "train": (x, y),
          "val": (x, y), "seed": 0, "batch_size": 16, "metrics": {}, "progress": False}
    kw.update(overrides)
    return kw


@pytest.mark.parametrize(
    ("change", "pieces"),
    [
        ({"seed": 1}, ["seed=1", "used seed=0", "resume with seed=0"]),
        ({"batch_size": 8}, ["batch_size=8", "used batch_size=16"]),
        ({"grad_accum_steps": 2}, ["grad_accum_steps=2", "used grad_accum_steps=1"]),
        ({"loss_fn": lk.FocalLoss()}, ["loss=FocalLoss()", "used loss=CrossEntropyLoss()"]),
        ({"loss_fn": lk.CrossEntropyLoss(label_smoothing=0.1)}, ["label_smoothing=0.1"]),
        ({"task": "binary"}, ["task='binary'", "used task=None"]),
        ({"model": nn.Linear(3, 4)}, ["the model differs", "'weight' has shape (2, 3)"]),
        ({"train": (torch.randn(30, 3), torch.randint(0, 2, (30,)))},
         ["the data differs", "train had 40 rows, now 30"]),
        ({"val": (torch.randn(40, 3), torch.randint(0, 2, (40,)))},
         ["the data differs", "val has the same 40 rows"]),
    ],
)
def test_resume_refuses_settings_that_change_the_data_model_or_loss(tmp_path, change, pieces):
    fit(**_small_run(), epochs=1, out=tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(lk.train.ResumeMismatchError) as err:
        fit(**_small_run(**change), epochs=2, out=tmp_path, resume=True)
    message = str(err.value)
    for piece in [*pieces, str(tmp_path), "Fix:", "new out="]:
        assert piece in message
    assert (tmp_path / "checkpoint.pt").read_bytes() == before  # nothing was overwritten


def test_resume_applies_a_new_lr_to_the_restored_optimizer(tmp_path, capsys) -> None:
    # One full batch per epoch, so the resumed epoch is one AdamW step computed here by hand.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)
    model = nn.Linear(3, 1)
    fit(model, lk.MSELoss(), (x, y), epochs=1, batch_size=32, seed=0, out=tmp_path, lr=1e-3,
        progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    oracle = nn.Linear(3, 1)
    oracle.load_state_dict(state["model"])
    opt = torch.optim.AdamW(oracle.parameters(), lr=1e-3)
    opt.load_state_dict(state["optimizer"])
    for group in opt.param_groups:
        group["lr"] = 0.5
    F.mse_loss(oracle(x), y).backward()
    opt.step()
    h = fit(model, lk.MSELoss(), (x, y), epochs=2, batch_size=32, seed=0, out=tmp_path, lr=0.5,
            resume=True, progress=False)
    assert h.column("lr") == [1e-3, 0.5]
    for p, q in zip(model.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    out = capsys.readouterr().out  # progress=False still prints the resume notes
    assert "lr=0.5 replaces the run's lr=0.001" in out and "resuming from" in out


def test_resume_without_checkpoint_says_so_without_progress(tmp_path, capsys) -> None:
    fit(**_small_run(), epochs=1, out=tmp_path / "typo", resume=True)
    lines = capsys.readouterr().out.splitlines()
    path = tmp_path / "typo" / "checkpoint.pt"
    assert lines == [f"no checkpoint at {path}; starting from scratch"]


# --- a loss with its own learnable parameters ---------------------------------------------------


class _TemperatureCE(nn.Module):
    """Cross-entropy of ``logits / t`` with a learned temperature ``t`` (a custom loss Module)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.tensor(1.5))

    def forward(self, logits, target):
        return F.cross_entropy(logits / self.t, target)


def test_loss_parameters_get_the_mean_gradient_not_the_sum() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(5, 3), _TemperatureCE()
    oracle_model, oracle_loss = copy.deepcopy(model), copy.deepcopy(loss_fn)
    # By hand: one SGD step on the mean loss of the whole batch.
    oracle_loss(oracle_model(x), y).backward()
    with torch.no_grad():
        for p in [*oracle_model.parameters(), *oracle_loss.parameters()]:
            p -= 0.1 * p.grad
    params = [*model.parameters(), *loss_fn.parameters()]
    fit(model, loss_fn, (x, y), epochs=1, batch_size=64, metrics={}, progress=False,
        optimizer=torch.optim.SGD(params, lr=0.1))
    torch.testing.assert_close(loss_fn.t, oracle_loss.t, rtol=1e-6, atol=1e-7)
    for p, q in zip(model.parameters(), oracle_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_resume_restores_the_loss_parameters(tmp_path) -> None:
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    loss_fn = _TemperatureCE()
    model = nn.Linear(5, 3)
    fit(model, loss_fn, (x, y), epochs=1, metrics={}, progress=False, out=tmp_path,
        optimizer=lambda p: torch.optim.SGD([*p, loss_fn.t], lr=0.1))
    trained = loss_fn.t.item()
    fresh = _TemperatureCE()
    fit(nn.Linear(5, 3), fresh, (x, y), epochs=1, metrics={}, progress=False, out=tmp_path,
        resume=True, optimizer=lambda p: torch.optim.SGD([*p, fresh.t], lr=0.1))
    assert fresh.t.item() == trained != 1.5


# --- the loss's own input checks speak inside fit -----------------------------------------------


@pytest.mark.parametrize(
    ("loss_fn", "outputs", "target"),
    [
        (lk.MSELoss(), 3, torch.randint(0, 3, (200,))),  # (N, 3) vs (N,): not broadcastable
        (lk.MSELoss(), 1, torch.randn(200)),  # (N, 1) vs (N,): broadcasts to (N, N)
        (lk.BCEWithLogitsLoss(), 3, torch.randint(0, 2, (200, 2)).float()),
    ],
)
def test_shape_mistake_raises_the_loss_own_error(loss_fn, outputs, target) -> None:
    model = nn.Linear(5, outputs)
    x = torch.randn(200, 5)
    with pytest.raises(lk.LossInputError) as direct:  # what the loss says on one batch
        loss_fn(model(x[:64]), target[:64])
    with pytest.raises(lk.LossInputError) as in_fit:
        fit(model, loss_fn, (x, target), epochs=1, batch_size=64, progress=False)
    assert str(in_fit.value) == str(direct.value) and "Fix:" in str(in_fit.value)


# --- early stopping on a metric where higher is better ------------------------------------------


def test_early_stopping_on_accuracy_keeps_the_most_accurate_epoch() -> None:
    d = data.load("digits")
    model = make_model(d, hidden=32)
    stop = EarlyStopping(patience=2, monitor="val_accuracy")
    h = fit(model, make_loss("cross-entropy", d), d.train, d.val, epochs=6, seed=0,
            early_stopping=stop, progress=False)
    accuracies = h.column("val_accuracy")
    best = max(range(len(accuracies)), key=accuracies.__getitem__)  # the earliest maximum
    assert stop.mode == "max" and stop.best_epoch == best + 1
    assert accuracies[best] > accuracies[0]  # the review's run restored epoch 1, the worst
    assert _accuracy(model, d.val) == pytest.approx(accuracies[best], abs=1e-9)


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [("val_loss", "min"), ("train_loss", "min"), ("val_mae", "min"), ("val_rmse", "min"),
     ("val_ece", "min"), ("val_perplexity", "min"), ("val_accuracy", "max"), ("val_f1", "max"),
     ("val_precision", "max"), ("val_recall", "max"), ("val_auroc", "max"),
     ("val_token_accuracy", "max")],
)
def test_early_stopping_infers_the_direction_from_the_name(monitor, mode) -> None:
    assert EarlyStopping(monitor=monitor).mode == mode


def test_early_stopping_refuses_an_unknown_direction_or_monitor() -> None:
    with pytest.raises(ValueError, match=r"monitor='val_score'.*Fix: pass mode='min'"):
        EarlyStopping(monitor="val_score")
    assert EarlyStopping(monitor="val_score", mode="max").mode == "max"
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    with pytest.raises(ValueError, match=r"monitor='val_los' is not among the logged metrics: "
                                         r"train_loss, val_loss, val_accuracy.*Fix:"):
        fit(nn.Linear(3, 2), lk.CrossEntropyLoss(), (x, y), (x, y), epochs=3, progress=False,
            early_stopping=EarlyStopping(monitor="val_los", mode="min"))


def test_reduce_lr_on_plateau_is_stepped_with_the_validation_loss() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 10, generator=g), torch.randint(0, 2, (64,), generator=g)
    xv, yv = torch.randn(64, 10, generator=g), torch.randint(0, 2, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 2))
    plateau = {"patience": 0, "factor": 0.5}
    h = fit(model, lk.CrossEntropyLoss(), (x, y), (xv, yv), epochs=8, lr=1e-2, batch_size=16,
            metrics={}, progress=False,
            scheduler=lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **plateau))
    # torch's scheduler fed the logged validation losses by hand gives the same lr per epoch.
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-2)
    oracle = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **plateau)
    expected = []
    for loss in h.column("val_loss"):
        expected.append(opt.param_groups[0]["lr"])
        oracle.step(loss)
    assert h.column("lr") == expected and min(expected) < 1e-2  # random labels: it plateaus


def test_min_delta_best_epoch_is_the_same_in_model_best_pt_and_metrics_json(tmp_path) -> None:
    import json

    torch.manual_seed(0)
    x, w = torch.randn(400, 10), torch.randn(10, 3)
    y = (x @ w + 2 * torch.randn(400, 3)).argmax(1)
    xv = torch.randn(200, 10)
    yv = (xv @ w + 2 * torch.randn(200, 3)).argmax(1)
    model = nn.Linear(10, 3)
    stop = EarlyStopping(patience=3, min_delta=0.02)
    h = fit(model, lk.CrossEntropyLoss(), (x, y), (xv, yv), epochs=30, lr=0.01, out=tmp_path,
            seed=0, progress=False, early_stopping=stop, metrics={})
    # By hand: the min_delta rule over the logged losses (an improvement beats the best by 0.02).
    losses, best, best_epoch = h.column("val_loss"), math.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        if loss < best - 0.02:
            best, best_epoch = loss, epoch
    assert best_epoch != min(range(len(losses)), key=losses.__getitem__) + 1  # the review's case
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert stop.best_epoch == saved["epoch"] == summary["best"]["epoch"] == h.best["epoch"] \
        == best_epoch
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved["model"].items())
    with torch.no_grad():
        now = F.cross_entropy(model(xv).double(), yv).item()
    assert now == pytest.approx(losses[best_epoch - 1], rel=1e-5)


# --- arguments checked before any training -------------------------------------------------------


class _Counting(nn.Linear):
    """A linear model that counts its forward calls (none may happen before the error)."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter([(torch.randn(3), torch.randn(1)) for _ in range(8)])


@pytest.mark.parametrize(
    ("kwargs", "error", "pieces"),
    [
        ({"task": "classification"}, ValueError, ["task='classification'", "multiclass", "Fix:"]),
        ({"train": (torch.randn(0, 3), torch.randn(0, 1))}, ValueError, ["train=", "0 rows"]),
        ({"train": TensorDataset(torch.randn(0, 3), torch.randn(0, 1))}, ValueError,
         ["train has 0 rows"]),
        ({"val": DataLoader(TensorDataset(torch.randn(0, 3), torch.randn(0, 1)))}, ValueError,
         ["val has 0 rows"]),
        ({"train": _Stream()}, TypeError, ["train is an IterableDataset (_Stream)", "Fix:"]),
        ({"train": DataLoader(_Stream(), batch_size=4)}, TypeError, ["IterableDataset", "Fix:"]),
    ],
)
def test_bad_task_or_data_fails_before_training(kwargs, error, pieces) -> None:
    _Counting.calls = 0
    args = {"train": (torch.randn(8, 3), torch.randn(8, 1)), "epochs": 1, "progress": False,
            **kwargs}
    with pytest.raises(error) as err:
        fit(_Counting(3, 1), lk.MSELoss(), **args)
    assert _Counting.calls == 0
    for piece in pieces:
        assert piece in str(err.value)


def test_nan_message_suggests_amp_off_only_when_amp_is_on() -> None:
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    with lk.checks("off"), pytest.raises(NonFiniteLossError) as err:
        fit(_NaNAt(at=2), lk.CrossEntropyLoss(), (x, y), epochs=1, batch_size=10, amp=True,
            metrics={}, progress=False)
    assert "try amp=False" in str(err.value) and "No checkpoint was written" in str(err.value)


def test_resume_on_another_world_size_compares_the_global_batch() -> None:
    from losskit.train.resume import ResumeMismatchError, check_settings

    stored = {"batch_size": 8, "world_size": 2}
    check_settings(stored, {"batch_size": 16, "world_size": 1}, "run")  # 8 x 2 == 16 x 1
    with pytest.raises(ResumeMismatchError, match="global batch of 8; the run used 8 on 2"):
        check_settings(stored, {"batch_size": 8, "world_size": 1}, "run")


def test_loss_signature_holds_class_weights() -> None:
    """A resume with other class weights must be told apart: the buffers are in the signature."""
    from losskit.train.resume import loss_signature

    a = loss_signature(lk.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0])))
    b = loss_signature(lk.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0])))
    assert a["weight"] == [1.0, 2.0] and a != b
