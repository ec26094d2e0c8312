"""A training run in its own process, for the kill-and-resume tests in test_checkpoint.py.

    python tests/_fit_child.py OUT EPOCHS [--resume] [--batch-sleep S] [--slow-save K]

The child never stops itself: the test kills it from outside with SIGKILL (no handler runs, no
buffer is flushed, no ``finally`` block), at a moment it picks by watching OUT. The options only
make those moments long enough to hit:

--batch-sleep S  every forward pass sleeps S seconds, so an epoch lasts long enough for the test
                 to see a checkpoint appear and kill the run inside the next epoch.
--slow-save K    epoch K's checkpoint reaches its temporary file in 10 chunks, 0.5 s apart, so the
                 test can kill the run while ``save_atomic`` is still writing it.

The run uses dropout (torch RNG), AdamW, a StepLR scheduler and early stopping (with a patience it
does not reach), so a resume has every piece of state to restore.
"""

from __future__ import annotations

import argparse
import io
import time

import torch
from torch import nn

import losskit as lk
from losskit.train import EarlyStopping, fit

CHUNKS, CHUNK_PAUSE = 10, 0.5  # --slow-save: a write of about 5 s


def data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 8, generator=g)
    y = (x[:, :3].sum(1) + 0.5 * torch.randn(300, generator=g) > 0).long() + (x[:, 3] > 1).long()
    return (x[:240], y[:240]), (x[240:], y[240:])


def model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))


def slow_save(epoch: int) -> None:
    """Make the write of ``epoch``'s checkpoint trickle into its (temporary) file object."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("epoch") == epoch and "optimizer" in obj):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        blob = buf.getvalue()
        step = -(-len(blob) // CHUNKS)  # ceil
        for start in range(0, len(blob), step):
            f.write(blob[start : start + step])
            f.flush()  # the bytes so far are in the file, visible to the watching test
            time.sleep(CHUNK_PAUSE)
        return None

    torch.save = save  # save_atomic calls torch.save(obj, temp_file) through the module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("epochs", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--batch-sleep", type=float, default=0.0)
    parser.add_argument("--slow-save", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # same arithmetic in every run
    if args.slow_save:
        slow_save(args.slow_save)
    net = model()
    if args.batch_sleep:
        net.register_forward_pre_hook(lambda module, inputs: time.sleep(args.batch_sleep))
    train, val = data()
    fit(
        net, lk.CrossEntropyLoss(), train, val, epochs=args.epochs, lr=3e-3, batch_size=32,
        seed=0, out=args.out, resume=args.resume, progress=False, metrics={},
        early_stopping=EarlyStopping(patience=50),
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    )


if __name__ == "__main__":
    main()
