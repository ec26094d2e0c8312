"""A training run in its own process, for the interrupt/resume tests in test_checkpoint.py.

    python tests/_fit_child.py OUT EPOCHS [--resume] [--exit-after K] [--crash-in-save K]

--exit-after K   the process dies (os._exit(17)) right after epoch K's checkpoint is written,
                 as a kill between epochs would leave it.
--crash-in-save K  while writing epoch K's checkpoint the process writes half of the bytes to the
                 temporary file and dies (os._exit(18)), as a kill in the middle of a write would.

The run uses dropout (torch RNG), AdamW, a StepLR scheduler and early stopping (with a patience it
does not reach), so a resume has every piece of state to restore.
"""

from __future__ import annotations

import argparse
import io
import os

import torch
from torch import nn

import losskit as lk
from losskit.train import EarlyStopping, fit


def data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 8, generator=g)
    y = (x[:, :3].sum(1) + 0.5 * torch.randn(300, generator=g) > 0).long() + (x[:, 3] > 1).long()
    return (x[:240], y[:240]), (x[240:], y[240:])


def model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))


def crash_in_save(epoch: int) -> None:
    """Make the checkpoint write of ``epoch`` die halfway through the temp file."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == epoch and "optimizer" in obj:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os._exit(18)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("epochs", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--exit-after", type=int, default=0)
    parser.add_argument("--crash-in-save", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # same arithmetic in every run
    if args.crash_in_save:
        crash_in_save(args.crash_in_save)

    def exit_after(record: dict) -> None:
        if record["epoch"] == args.exit_after:
            os._exit(17)

    train, val = data()
    fit(
        model(), lk.CrossEntropyLoss(), train, val, epochs=args.epochs, lr=3e-3, batch_size=32,
        seed=0, out=args.out, resume=args.resume, progress=False, metrics={},
        early_stopping=EarlyStopping(patience=50),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
        callbacks=[exit_after],
    )


if __name__ == "__main__":
    main()
