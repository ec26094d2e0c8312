"""Setups for `losskit doctor tests/doctor_setups/setups.py[:FUNC]` (see tests/test_cli.py).

Each function returns ``(model, loss_fn, (inputs, targets))`` on small random data: ``setup`` is
healthy, ``softmax_head`` has the classic mistake, the others are malformed on purpose.
"""

import torch
from torch import nn

import losskit as lk


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g)


def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    return model, lk.CrossEntropyLoss(), _data()


def softmax_head():
    model, loss_fn, batch = setup()
    return nn.Sequential(model, nn.Softmax(dim=1)), loss_fn, batch


def returns_two_things():
    model, loss_fn, _ = setup()
    return model, loss_fn


def raises():
    raise RuntimeError("dataset server unreachable")


NOT_A_FUNCTION = 3
