"""History: best epoch, CSV/JSON files read back with the standard library, and the PNG plot."""

from __future__ import annotations

import csv
import json
import math

from losskit.train import History
from losskit.train.plots import plot_compare

RECORDS = [
    {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5, "time": 0.1},
    {"epoch": 2, "train_loss": 0.6, "val_loss": 0.7, "val_accuracy": 0.7, "time": 0.1},
    {"epoch": 3, "train_loss": 0.4, "val_loss": 0.8, "val_accuracy": 0.8, "time": 0.1},
]


def test_best_is_lowest_val_loss_and_falls_back_to_train_loss() -> None:
    h = History(RECORDS)
    assert h.best["epoch"] == 2 and h.monitor == "val_loss"
    no_val = History([{k: v for k, v in r.items() if not k.startswith("val")} for r in RECORDS])
    assert no_val.best["epoch"] == 3 and no_val.monitor == "train_loss"
    assert History().best is None and History().final is None


def test_best_skips_nan_epochs() -> None:
    h = History([{"epoch": 1, "val_loss": math.nan}, {"epoch": 2, "val_loss": 3.0}])
    assert h.best["epoch"] == 2


def test_to_csv_round_trips(tmp_path) -> None:
    path = tmp_path / "h.csv"
    History(RECORDS).to_csv(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_accuracy", "time"]
    assert [float(r["val_loss"]) for r in rows] == [0.9, 0.7, 0.8]


def test_to_json_has_final_best_and_history_with_nan_as_null(tmp_path) -> None:
    path = tmp_path / "m.json"
    records = [*RECORDS, {"epoch": 4, "train_loss": math.nan, "val_loss": 1.0}]
    History(records, main_metric="val_accuracy").to_json(path)
    payload = json.loads(path.read_text())  # strict JSON: NaN would not parse in other readers
    assert payload["best"]["epoch"] == 2 and payload["final"]["epoch"] == 4
    assert payload["final"]["train_loss"] is None
    assert payload["main_metric"] == "val_accuracy" and len(payload["history"]) == 4
    assert "NaN" not in path.read_text()


def test_plot_writes_a_png(tmp_path) -> None:
    path = tmp_path / "curve.png"
    History(RECORDS, main_metric="val_accuracy").plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    without_metric = tmp_path / "loss_only.png"
    History([{"epoch": 1, "train_loss": 1.0}]).plot(without_metric)
    assert without_metric.read_bytes()[:4] == b"\x89PNG"


def test_plot_compare_overlays_runs(tmp_path) -> None:
    path = tmp_path / "compare.png"
    plot_compare({"a": History(RECORDS), "b": History(RECORDS[:2])}, path)
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 1000


def test_state_dict_round_trip() -> None:
    h = History(RECORDS, main_metric="val_accuracy")
    again = History.from_state_dict(h.state_dict())
    assert again.records == h.records and again.main_metric == "val_accuracy"
