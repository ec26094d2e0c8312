"""Checkpoints: atomic writes, weights_only loads, RNG capture, and exact resume across processes.

The process tests run tests/_fit_child.py three times at once: an uninterrupted run; a run this
test SIGKILLs once its checkpoint.pt records a completed epoch (its batches are slowed, so the
kill lands in the next epoch, before that epoch's checkpoint); and a run this test SIGKILLs
while the temporary file of its epoch-2 checkpoint is being written. Each killed run is resumed
in a fresh process and must end with the uninterrupted run's weights and history, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from losskit.train import checkpoint as ckpt

CHILD = Path(__file__).with_name("_fit_child.py")
EPOCHS = 4
TORN_EPOCH = 2  # the run killed mid-write is killed while writing this epoch's checkpoint
POLL = 0.02  # seconds between looks at the children's output directories

needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")


def _start(out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(out), str(EPOCHS), *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait(proc: subprocess.Popen) -> int:
    stdout, stderr = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return proc.returncode


def _load(path: Path) -> dict:
    if path.is_dir():
        path = path / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=True)


def _records(state: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in state["history"]["records"]]


def _assert_same_run(a: Path, b: Path) -> None:
    sa, sb = _load(a), _load(b)
    assert sa["epoch"] == sb["epoch"] == EPOCHS
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    for pid, state in sa["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, sb["optimizer"]["state"][pid][name]), (pid, name)
    assert sa["scheduler"] == sb["scheduler"]
    assert _records(sa) == _records(sb)
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    # best.pt is written before checkpoint.pt, so a kill between the two cannot leave it stale.
    ba, bb = (torch.load(d / "best.pt", weights_only=True) for d in (a, b))
    assert ba["epoch"] == bb["epoch"]
    for key in ba["model"]:
        assert torch.equal(ba["model"][key], bb["model"][key]), key


# What the watcher waits for before it kills a child: each returns None until the moment comes.


def _completed_epoch(out: Path) -> int | None:
    """The epoch checkpoint.pt records, once it exists (it appears by an atomic rename)."""
    if not (out / "checkpoint.pt").exists():
        return None
    return _load(out)["epoch"]


def _checkpoint_being_written(out: Path) -> Path | None:
    """A temporary checkpoint file with bytes in it, looked for only after checkpoint.pt exists,
    so it belongs to a later epoch's write and not to epoch 1's, which may be renamed any moment."""
    if not (out / "checkpoint.pt").exists():
        return None
    for temp in out.glob(".checkpoint.pt.*.tmp"):
        try:
            if temp.stat().st_size > 0:
                return temp
        except FileNotFoundError:
            pass
    return None


def _kill_when_ready(procs: dict, watchers: dict, timeout: float = 90.0) -> dict:
    """Poll every watched child's directory; SIGKILL each child the moment its watcher returns a
    value, and return those values. A child that ends by itself first fails the test."""
    seen, deadline = {}, time.monotonic() + timeout
    while len(seen) < len(watchers):
        for name, ready in watchers.items():
            if name in seen:
                continue
            value = ready()
            if value is not None:
                os.kill(procs[name].pid, signal.SIGKILL)
                seen[name] = value
            elif procs[name].poll() is not None:
                out, err = procs[name].communicate()
                raise AssertionError(f"{name} ended ({procs[name].returncode}) before the kill:"
                                     f"\n{out}\n{err}")
        if time.monotonic() > deadline:
            for proc in procs.values():
                proc.kill()
            raise AssertionError(f"timed out waiting to kill {set(watchers) - set(seen)}")
        time.sleep(POLL)
    return seen


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Start the three children at once, kill two of them from here, record what the killed
    runs left on disk, then resume both in fresh processes (at once) and let every run finish."""
    base = tmp_path_factory.mktemp("runs")
    dirs = {name: base / name for name in ("full", "killed", "torn")}
    procs = {
        "full": _start(dirs["full"]),
        "killed": _start(dirs["killed"], "--batch-sleep", "0.1"),  # epochs of about 1 s
        "torn": _start(dirs["torn"], "--slow-save", str(TORN_EPOCH)),  # a 5 s write
    }
    seen = _kill_when_ready(procs, {
        "killed": lambda: _completed_epoch(dirs["killed"]),
        "torn": lambda: _checkpoint_being_written(dirs["torn"]),
    })
    codes = {name: _wait(procs[name]) for name in ("killed", "torn")}
    temps = list(dirs["torn"].glob(".checkpoint.pt.*.tmp"))
    left = {
        "codes": codes,
        "killed_seen_epoch": seen["killed"],
        "killed_epoch": _load(dirs["killed"])["epoch"],
        "killed_temps": len(list(dirs["killed"].glob(".checkpoint.pt.*.tmp"))),
        "torn_temps": [t.name for t in temps],
        "torn_seen": seen["torn"].name,
        "torn_readable": _readable(temps[0]) if temps else None,
        "torn_epoch": _load(dirs["torn"])["epoch"],  # weights_only=True
    }
    resumed = {name: _start(dirs[name], "--resume") for name in ("killed", "torn")}
    left["resume_codes"] = {name: _wait(p) for name, p in resumed.items()}
    left["full_code"] = _wait(procs["full"])
    return {**dirs, **left}


def _readable(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
    except Exception:
        return False
    return True


@needs_sigkill
def test_killed_then_resumed_equals_uninterrupted(runs: dict) -> None:
    assert runs["codes"]["killed"] == -signal.SIGKILL  # killed from outside, not finished
    assert 1 <= runs["killed_seen_epoch"] < EPOCHS
    # The kill came before the next epoch's checkpoint: on disk is the checkpoint that was seen,
    # and the half-done epoch left no checkpoint write behind.
    assert runs["killed_epoch"] == runs["killed_seen_epoch"]
    assert runs["killed_temps"] == 0
    assert runs["resume_codes"]["killed"] == 0 and runs["full_code"] == 0
    _assert_same_run(runs["killed"], runs["full"])


@needs_sigkill
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(runs: dict) -> None:
    assert runs["codes"]["torn"] == -signal.SIGKILL
    assert runs["torn_temps"] == [runs["torn_seen"]]  # the write in progress was left behind ...
    assert runs["torn_readable"] is False  # ... torn
    assert runs["torn_epoch"] == TORN_EPOCH - 1  # while checkpoint.pt still held the epoch before
    assert runs["resume_codes"]["torn"] == 0 and runs["full_code"] == 0
    assert not list(runs["torn"].glob("*.tmp"))  # the resumed run cleaned up the torn file
    _assert_same_run(runs["torn"], runs["full"])


@needs_sigkill
def test_checkpoint_holds_only_weights_only_types(runs: dict) -> None:
    assert runs["full_code"] == 0
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
