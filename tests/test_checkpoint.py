"""Checkpoints: atomic writes, weights_only loads, RNG capture, and exact resume across processes.

The process tests run tests/_fit_child.py: an uninterrupted run, a run killed after an epoch's
checkpoint, and a run killed in the middle of writing a checkpoint; both broken runs are then
resumed in a fresh process and must end with the uninterrupted run's weights and history.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from losskit.train import checkpoint as ckpt

CHILD = Path(__file__).with_name("_fit_child.py")
EPOCHS = 4


def _start(out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(out), str(EPOCHS), *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait(proc: subprocess.Popen) -> int:
    stdout, stderr = proc.communicate(timeout=120)
    if proc.returncode not in (0, 17, 18):
        raise AssertionError(f"child failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return proc.returncode


def _load(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


def _records(state: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in state["history"]["records"]]


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
    assert a["scheduler"] == b["scheduler"]
    assert _records(a) == _records(b)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Stage 1, three processes at once: uninterrupted, killed after epoch 2's checkpoint, killed
    while writing epoch 3's. Stage 2: both broken runs resumed in fresh processes at once.
    What the broken runs left behind is recorded between the stages."""
    base = tmp_path_factory.mktemp("runs")
    dirs = {name: base / name for name in ("full", "killed", "crashed")}
    procs = {
        "full": _start(dirs["full"]),
        "killed": _start(dirs["killed"], "--exit-after", "2"),
        "crashed": _start(dirs["crashed"], "--crash-in-save", "3"),
    }
    codes = {name: _wait(p) for name, p in procs.items()}
    temps = [p for p in dirs["crashed"].iterdir() if p.name.endswith(".tmp")]
    left = {
        "codes": codes,
        "killed_epoch": _load(dirs["killed"])["epoch"],
        "crashed_epoch": _load(dirs["crashed"])["epoch"],
        "crashed_temps": len(temps),
        "torn_readable": _readable(temps[0]) if temps else None,
    }
    resumed = {name: _start(dirs[name], "--resume") for name in ("killed", "crashed")}
    left["resume_codes"] = {name: _wait(p) for name, p in resumed.items()}
    return {**dirs, **left}


def _readable(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except Exception:
        return False
    return True


def test_interrupted_then_resumed_equals_uninterrupted(runs: dict) -> None:
    assert runs["codes"]["killed"] == 17
    assert runs["killed_epoch"] == 2  # the kill came right after epoch 2's checkpoint
    assert runs["resume_codes"]["killed"] == 0
    _assert_same_run(_load(runs["killed"]), _load(runs["full"]))


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(runs: dict) -> None:
    assert runs["codes"]["crashed"] == 18
    assert runs["crashed_temps"] == 1  # the half-written temporary file was left behind ...
    assert runs["torn_readable"] is False  # ... and really is torn
    assert runs["crashed_epoch"] == 2  # while checkpoint.pt still held epoch 2, loadable
    assert runs["resume_codes"]["crashed"] == 0
    assert not any(p.name.endswith(".tmp") for p in runs["crashed"].iterdir())  # cleaned up
    _assert_same_run(_load(runs["crashed"]), _load(runs["full"]))


def test_checkpoint_holds_only_weights_only_types(runs: dict) -> None:
    state = _load(runs["full"])  # weights_only=True would raise on any pickled object
    assert set(state) >= {"model", "optimizer", "scheduler", "rng", "history", "epoch", "sampler"}
    assert state["sampler"] == {"seed": 0, "next_epoch": EPOCHS + 1}
    assert [r["epoch"] for r in state["history"]["records"]] == list(range(1, EPOCHS + 1))
    best = torch.load(runs["full"] / "best.pt", weights_only=True)
    assert best["epoch"] == min(state["history"]["records"], key=lambda r: r["val_loss"])["epoch"]


def test_save_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"w": torch.arange(3.0)}, path)
    ckpt.save_atomic({"w": torch.arange(5.0)}, path)
    assert torch.equal(ckpt.load(path)["w"], torch.arange(5.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_save_atomic_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    ckpt.save_atomic({"w": torch.ones(2)}, path)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        ckpt.save_atomic({"w": Unsaveable()}, path)
    assert torch.equal(ckpt.load(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_rng_state_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leave numpy with a cached Gaussian: part of its state
    ckpt.save_atomic({"rng": ckpt.rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    ckpt.set_rng_state(ckpt.load(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.normal())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and got[3] == expected[3]
