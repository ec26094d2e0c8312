"""The digits-contrastive task: augmentations, the k-NN metric, the losses from their records,
and the CLI on it (train, compare, doctor)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from losskit import data, registry
from losskit.cli import main
from losskit.distributed import loss_sum_and_count
from losskit.metrics import infer_task
from losskit.train import LOSSES_BY_TASK, fit, make_loss, make_metrics, make_model
from losskit.train.knn import KNNAccuracy as make_knn
from losskit.train.knn import knn_accuracy


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task() -> data.TaskData:
    return data.load("digits-contrastive")


# ---------------------------------------------------------------------------------------------
# Augmentations


def test_augmentations_repeat_under_a_seed_and_differ_across_seeds(task) -> None:
    x = task.train.images[:50]  # (50, 64)
    a = data.augment_digits(x, torch.Generator().manual_seed(3))
    b = data.augment_digits(x, torch.Generator().manual_seed(3))
    c = data.augment_digits(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(7)  # the dataset draws from the global generator, which fit seeds
    first = task.train.__getitems__([0, 5, 9])
    torch.manual_seed(7)
    again = task.train.__getitems__([0, 5, 9])
    for (v1, y1), (v2, y2) in zip(first, again, strict=True):
        assert torch.equal(v1, v2) and torch.equal(y1, y2)
    v, _ = first[0]
    assert v.shape == (2, 64) and not torch.equal(v[0], v[1])  # two different views


def test_shift_moves_the_image_by_at_most_one_pixel_and_uses_every_offset() -> None:
    img = torch.zeros(8, 8)
    img[3, 4] = 1.0  # one lit pixel
    x = img.reshape(1, 64).repeat(400, 1)
    v = data.augment_digits(x, torch.Generator().manual_seed(0), noise=0.0, dropout=0.0)
    lit = v.reshape(400, 8, 8).nonzero()  # (400, 3): every view keeps its pixel (none at a border)
    assert lit.shape[0] == 400
    offsets = {(int(r) - 3, int(c) - 4) for _, r, c in lit.tolist()}
    assert offsets == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def test_dropout_and_noise_have_their_stated_strength() -> None:
    x = torch.ones(200, 64)
    g = torch.Generator().manual_seed(0)
    dropped = data.augment_digits(x, g, shift=0, noise=0.0, dropout=0.25)
    assert abs(float((dropped == 0).float().mean()) - 0.25) < 0.02  # 12800 pixels: sd 0.004
    noisy = data.augment_digits(x, g, shift=0, noise=0.3, dropout=0.0)
    assert abs(float((noisy - x).std()) - 0.3) < 0.01


def test_validation_views_are_the_clean_image_and_one_fixed_augmentation(task) -> None:
    views, labels = task.val.tensors
    assert views.shape == (len(labels), 2, 64)
    again = data.load("digits-contrastive").val.tensors[0]
    assert torch.equal(views, again)  # same seed, same views
    assert float(views[:, 0].min()) >= 0 and float(views[:, 0].max()) <= 1  # clean pixels
    assert not torch.equal(views[:, 0], views[:, 1])


# ---------------------------------------------------------------------------------------------
# k-NN accuracy


def _at(*degrees: float) -> torch.Tensor:
    """Unit vectors at these angles: cosine similarity falls as the angle between them grows."""
    t = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([t.cos(), t.sin()], dim=1)  # (n, 2)


def test_knn_accuracy_on_a_hand_computed_case() -> None:
    ref, ref_y = _at(0, 10, 30, 80, 90), torch.tensor([0, 0, 1, 1, 1])
    q, q_y = _at(3, 85, 25), torch.tensor([0, 1, 0])
    # Nearest by angle: q0 (3 deg): 0, 10, 30 -> labels 0, 0, 1; q1 (85): 80/90, 30 -> 1, 1, 1;
    # q2 (25): 30, 10, 0 -> 1, 0, 0.
    # k=1: q0 right, q1 right, q2 wrong (its nearest, 30 deg, is a 1).
    assert knn_accuracy(q, q_y, ref, ref_y, k=1) == pytest.approx(2 / 3)
    # k=3: q0 0,0,1 -> 0 right; q1 1,1,1 -> 1 right; q2 1,0,0 -> 0 right.
    assert knn_accuracy(q, q_y, ref, ref_y, k=3) == 1.0
    # k=5: every query hears all five, 2 votes for 0 and 3 for 1: only q1 is right.
    assert knn_accuracy(q, q_y, ref, ref_y, k=5) == pytest.approx(1 / 3)
    # the metric, fed in two batches of (B, V, D) outputs, scores view 1 against the reference
    metric = make_knn(lambda: (ref, ref_y), k=3, view=1)
    out = torch.stack([torch.zeros_like(q), q], dim=1)  # (3, 2, 2): view 0 is not scored
    metric.update(out[:2], q_y[:2])
    metric.update(out[2:], q_y[2:])
    assert float(metric.compute()) == 1.0


def test_knn_tie_goes_to_the_more_similar_voters() -> None:
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ref_y = torch.tensor([4, 7])
    q = torch.tensor([[1.0, 0.5], [0.5, 1.0]])  # k=2: one vote each; q0 nearer label 4
    assert knn_accuracy(q, torch.tensor([4, 7]), ref, ref_y, k=2) == 1.0
    assert knn_accuracy(q, torch.tensor([7, 4]), ref, ref_y, k=2) == 0.0


def test_knn_k_out_of_range_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"k=3 must be in \[1, 2\].*Fix"):
        knn_accuracy(torch.ones(1, 2), torch.tensor([0]), torch.ones(2, 2), torch.tensor([0, 1]),
                     k=3)


# ---------------------------------------------------------------------------------------------
# Losses from their records


def test_the_fitting_losses_come_from_the_records() -> None:
    expected = [r.name for r in registry.records() if r.input == "embeddings" and any(
        row == "contrastive representation learning" for row, _ in r.catalog)]
    assert sorted(LOSSES_BY_TASK["contrastive"]) == sorted(expected)
    assert LOSSES_BY_TASK["contrastive"][0] == "info_nce"
    assert "triplet_margin_loss" not in LOSSES_BY_TASK["contrastive"]


@pytest.mark.parametrize("name", LOSSES_BY_TASK["contrastive"])
def test_each_loss_sees_the_views_it_should_and_counts_its_mean(task, name) -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.nn.functional.normalize(torch.randn(6, 2, 4, generator=g, dtype=torch.float64),
                                        dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    loss = make_loss(name, task)
    record = registry.get(name)
    fn = record.function
    # the oracle: the functional loss called by hand on the views its record says it takes
    expected = fn(out, labels) if "class-indices" in record.targets else fn(out[:, 0], out[:, 1])
    torch.testing.assert_close(loss(out, labels), expected, rtol=1e-12, atol=0)
    s, n = loss_sum_and_count(loss, out, labels)
    torch.testing.assert_close(s / n, expected, rtol=1e-12, atol=0)
    assert infer_task(loss, labels) is None  # no class scores: no classification metrics


# ---------------------------------------------------------------------------------------------
# Training


def test_a_healthy_run_beats_chance_and_its_untrained_start(task) -> None:
    model = make_model(task, hidden=64, seed=0)
    untrained = make_metrics(task, model)["knn_accuracy"]
    untrained.update(model(task.val.tensors[0]).detach(), task.val.tensors[1])
    start = float(untrained.compute())
    h = fit(model, make_loss("info_nce", task), task.train, task.val, epochs=4, lr=3e-3,
            batch_size=128, metrics=make_metrics(task, model), seed=0, progress=False)
    final = h.final["val_knn_accuracy"]
    # Chance is 0.1 (ten balanced digits). Measured (seeds 0, 1, 2): 0.23, 0.30, 0.32 untrained;
    # 0.60, 0.59, 0.65 after these 4 epochs (about 0.8 after the CLI's default 20).
    assert start < 0.4
    assert final > 0.45 and final > start + 0.2


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_compare_on_a_tiny_budget(tmp_path: Path, capsys) -> None:
    budget = ["--epochs", "1", "--batch-size", "256", "--no-progress", "--hidden", "32"]
    assert main(["compare", "--task", "digits-contrastive", "--out", str(tmp_path / "c"),
                 *budget]) == 0
    rows = _rows(tmp_path / "c" / "compare.csv")
    assert [r["loss"] for r in rows] == list(LOSSES_BY_TASK["contrastive"])
    for r in rows:
        value = float(r["final_val_knn_accuracy"])
        assert 0 <= value <= 1 and math.isfinite(float(r["final_val_loss"]))
    assert (tmp_path / "c" / "compare.png").stat().st_size > 0


def test_cli_train_and_doctor_on_a_tiny_budget(tmp_path: Path, capsys) -> None:
    budget = ["--epochs", "1", "--batch-size", "256", "--no-progress", "--hidden", "32"]
    assert main(["train", "--task", "digits-contrastive", "--loss", "info_nce",
                 "--out", str(tmp_path / "t"), *budget]) == 0
    assert "val_knn_accuracy" in capsys.readouterr().out
    assert (tmp_path / "t" / "history.csv").exists()
    assert main(["doctor", "--task", "digits-contrastive", "--loss", "clip_loss",
                 "--batch-size", "64", "--overfit-steps", "50"]) == 0
    assert main(["doctor", "--task", "digits-contrastive", "--loss", "supcon_loss"]) == 2
    err = capsys.readouterr().err
    assert "is not supported" in err and "Fix: check --loss info_nce or clip_loss" in err
    assert main(["train", "--task", "digits-contrastive", "--loss", "mse"]) == 2
    assert "use one of info_nce, clip_loss, supcon_loss" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Batches with a 1-row tail (a contrastive loss has no negative in a 1-row batch)


def test_batches_merge_a_short_tail_into_the_previous_batch() -> None:
    from losskit.train.loop import _Batches

    assert list(_Batches(range(7), 2, 2)) == [[0, 1], [2, 3], [4, 5, 6]]
    assert list(_Batches(range(7), 2, 1)) == [[0, 1], [2, 3], [4, 5], [6]]
    assert list(_Batches(range(8), 2, 2)) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert list(_Batches(range(1), 2, 2)) == [[0]]  # nothing to merge with
    for n in range(1, 25):
        for size in range(1, 7):
            for need in (1, 2):
                batches = list(_Batches(range(n), size, need))
                assert len(batches) == len(_Batches(range(n), size, need))
                assert [i for b in batches for i in b] == list(range(n))
                if size >= need <= n:  # a smaller batch_size is refused by fit
                    assert all(len(b) >= need for b in batches)


@pytest.mark.parametrize("name", ["info_nce", "clip_loss", "supcon_loss"])
def test_fit_trains_and_validates_with_one_row_tails(task, name) -> None:
    """5 train and 3 validation rows at batch_size 2 leave a 1-row last batch in both."""
    from torch.utils.data import Subset

    model = make_model(task, hidden=16, seed=0)
    h = fit(model, make_loss(name, task), Subset(task.train, range(5)),
            Subset(task.val, range(3)), epochs=1,
            batch_size=2, seed=0, progress=False, metrics=make_metrics(task, model))
    assert math.isfinite(h.final["train_loss"]) and math.isfinite(h.final["val_loss"])


def test_fit_refuses_a_one_row_batch_for_a_contrastive_loss(task) -> None:
    x, y = task.val.tensors
    with pytest.raises(ValueError, match=r"batch_size=1.*at least 2 rows.*Fix: batch_size=2"):
        fit(make_model(task, hidden=16), make_loss("info_nce", task), (x[:4], y[:4]),
            epochs=1, batch_size=1, progress=False)


def test_cli_batch_sizes_that_leave_one_row_and_a_batch_size_of_one(tmp_path: Path,
                                                                     capsys) -> None:
    # 360 validation rows at 359 per batch: a 1-row last validation batch
    budget = ["--epochs", "1", "--no-progress", "--hidden", "16"]
    assert main(["train", "--task", "digits-contrastive", "--loss", "clip_loss",
                 "--batch-size", "359", "--out", str(tmp_path / "t"), *budget]) == 0
    capsys.readouterr()
    assert main(["train", "--task", "digits-contrastive", "--batch-size", "1", *budget]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 1" in err and "at least 2 rows" in err and "Fix: --batch-size 2" in err


def test_cli_a_registered_loss_that_does_not_fit_is_not_called_unknown(capsys) -> None:
    assert main(["train", "--task", "digits-contrastive", "--loss", "triplet_margin_loss"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the contrastive task" in err and "it is a losskit loss" in err
    assert "is not a losskit loss name" not in err
    assert "use one of info_nce, clip_loss, supcon_loss" in err
    assert main(["train", "--task", "digits-contrastive", "--loss", "no_such_loss"]) == 2
    assert "is not a losskit loss name" in capsys.readouterr().err


def test_doctor_says_what_it_does_not_assess_for_an_embedding_loss(capsys) -> None:
    assert main(["doctor", "--task", "digits-contrastive", "--loss", "info_nce",
                 "--batch-size", "64", "--overfit-steps", "20"]) in (0, 1)
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "info_nce takes embeddings, which have no expected activation" in out
    assert "does not know this loss" not in out


def test_compare_table_headers_stay_readable_at_80_columns(monkeypatch, capsys) -> None:
    from losskit.cli import _print_compare

    monkeypatch.setenv("COLUMNS", "80")
    row = {"loss": "supcon_loss", "best_epoch": 3, "best_val_knn_accuracy": 0.61,
           "final_val_knn_accuracy": 0.6, "final_val_loss": 4.2, "seconds": 1.0}
    _print_compare([row], "digits-contrastive")
    out = capsys.readouterr().out
    assert "…" not in out  # nothing cut off
    header = " ".join(out.split("\n", 1)[1].replace("│", " ").replace("┃", " ").split())
    assert "knn" in header and "accuracy" in header and "val" in header
