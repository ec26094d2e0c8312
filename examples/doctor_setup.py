"""Check a training setup before a long run: `losskit doctor examples/doctor_setup.py`.

`losskit doctor FILE.py[:FUNC]` imports this file, calls FUNC (default `setup`) and checks what it
returns: the model, the loss and one batch `(inputs, targets)`. Nothing is trained for real and the
model you return is left untouched. Exit code 0 means no check failed, 1 that one did.

    losskit doctor examples/doctor_setup.py                 # healthy: every check passes
    losskit doctor examples/doctor_setup.py:softmax_head    # the classic mistake: exit code 1

The same from Python: `lk.doctor(*setup()).print()`.
"""

import torch
from torch import nn

import losskit as lk
from losskit.data import load


def setup():
    """An MLP on the digits dataset (8x8 images, 10 classes) with cross-entropy on logits."""
    data = load("digits")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(data.num_features, 128), nn.ReLU(),
        nn.Linear(128, data.num_outputs),  # logits: CrossEntropyLoss applies log_softmax itself
    )
    inputs, targets = data.train[:256]  # (256, 64) float32, (256,) int64 class indices
    return model, lk.CrossEntropyLoss(), (inputs, targets)


def softmax_head():
    """The same with a Softmax at the end: cross-entropy then sees probabilities, not logits."""
    model, loss_fn, batch = setup()
    return nn.Sequential(*model, nn.Softmax(dim=1)), loss_fn, batch


if __name__ == "__main__":
    lk.doctor(*setup()).print()
