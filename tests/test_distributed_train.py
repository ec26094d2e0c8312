"""``lk.fit`` and ``losskit train`` on 2 CPU processes (gloo on 127.0.0.1).

- ``losskit train`` under torchrun: the first run trains one epoch and writes its checkpoint; the
  second, also on 2 processes, resumes from it and trains the second epoch. Only rank 0 prints.
- ``lk.fit`` in 2 forked ranks equals ``lk.fit`` in one process with twice the batch size.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import _dist_workers as W
import pytest
import torch
import torch.nn.functional as F

from losskit import data
from losskit.train import recipes

REPO = Path(__file__).resolve().parents[1]


def _torchrun_train(out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr", "127.0.0.1", "--master_port", str(W.free_port()),
        "-m", "losskit", "train", "--no-progress", "--out", str(out), *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_losskit_train_under_torchrun_runs_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = _torchrun_train(out, "--epochs", "1")
    assert first.stdout.count("losskit train:") == 1  # rank 0 prints, rank 1 does not
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["settings"]["world_size"] == 2
    assert all(math.isfinite(float(rows[0][k])) for k in ("train_loss", "val_loss"))
    after_first = {k: v.clone() for k, v in state["model"].items()}

    second = _torchrun_train(out, "--epochs", "2", "--resume")
    assert second.stdout.count("losskit train:") == 1
    resumed = _rows(out)
    assert [r["epoch"] for r in resumed] == ["1", "2"]
    # Epoch 1's record, its wall time included, comes from the checkpoint: not trained again.
    assert resumed[0] == rows[0]
    assert float(resumed[1]["train_loss"]) < float(resumed[0]["train_loss"])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    assert any(not torch.equal(v, after_first[k]) for k, v in state["model"].items())

    # Validation ran sharded over the 2 ranks; its logged loss and accuracy are those of one
    # process evaluating the saved weights on the whole validation split.
    task = data.load("digits", seed=0)
    model = recipes.make_model(task, seed=0)
    model.load_state_dict(state["model"])
    x, y = task.val.tensors
    with torch.no_grad():
        logits = model(x).double()
    assert float(resumed[1]["val_loss"]) == pytest.approx(F.cross_entropy(logits, y).item(),
                                                           rel=1e-5)
    accuracy = (logits.argmax(1) == y).double().mean().item()
    assert float(resumed[1]["val_accuracy"]) == pytest.approx(accuracy, abs=1e-6)


def test_fit_on_two_ranks_equals_fit_on_one_with_twice_the_batch(tmp_path):
    """fit shards each epoch's permutation over the ranks, so rank r's micro-batch b of 8 rows is
    half of the one-process micro-batch b of 16 rows: with exact normalisation (uneven ignored
    targets, class weights, 2 accumulation steps) the two runs give the same weights."""
    W.spawn(W.fit_worker, 2, str(tmp_path))
    expected_params, expected_losses = W.fit_run(batch_size=16)
    for r in (0, 1):
        params, losses = torch.load(tmp_path / f"fit{r}.pt", weights_only=True)
        assert max((p - q).abs().max().item() for p, q in zip(params, expected_params,
                                                              strict=True)) < 1e-9
        assert losses == pytest.approx(expected_losses, rel=1e-12, abs=0)
    # The 2-rank run's checkpoint resumes in one process: epoch 1 is kept, epoch 2 is trained.
    _, losses_1 = torch.load(tmp_path / "fit0.pt", weights_only=True)
    _, resumed = W.fit_run(batch_size=16, epochs=2, out=tmp_path / "run", resume=True)
    assert len(resumed) == 2 and resumed[0] == losses_1[0]


def test_a_loss_with_its_own_parameter_trains_alike_on_two_ranks_and_one(tmp_path):
    """DDP averages the model's gradients only; a loss's learned temperature must get the same
    global gradient, or the ranks' temperatures drift apart (and rank 0's is checkpointed)."""
    W.spawn(W.temperature_worker, 2, str(tmp_path))
    expected = W.temperature_run(batch_size=16)
    for r in (0, 1):
        params = torch.load(tmp_path / f"temperature{r}.pt", weights_only=True)
        assert max((p - q).abs().max().item() for p, q in zip(params, expected, strict=True)) \
            < 1e-9
    assert expected[-1].item() != 1.5  # the temperature did train
