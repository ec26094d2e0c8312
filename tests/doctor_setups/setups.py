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


class LoRALinear(nn.Module):
    """A frozen linear layer plus a rank-4 adapter x A^T B^T with B = 0 (LoRA's initialisation):
    on the first batch A's gradient is exactly zero, on purpose."""

    def __init__(self, inputs: int, outputs: int, rank: int = 4) -> None:
        super().__init__()
        self.base = nn.Linear(inputs, outputs).requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, inputs) * 0.01)
        self.B = nn.Parameter(torch.zeros(outputs, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.A.t() @ self.B.t()


def lora():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(8, 32), nn.ReLU()).requires_grad_(False)
    return nn.Sequential(body, LoRALinear(32, 4)), lk.CrossEntropyLoss(), _data()


class ReZero(nn.Module):
    """x + alpha * f(x) with alpha = 0 (ReZero): f's gradients are exactly zero at first."""

    def __init__(self, inputs: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(inputs, 32)
        self.f = nn.Sequential(nn.Linear(32, 32), nn.ReLU())
        self.alpha = nn.Parameter(torch.zeros(()))
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(h + self.alpha * self.f(h))


def rezero():
    torch.manual_seed(0)
    return ReZero(), lk.CrossEntropyLoss(), _data()


def multilabel_batchnorm():
    """40 labels per row: the overfit check keeps few rows, and BatchNorm needs two."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 40))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 8, generator=g), torch.randint(0, 2, (128, 40), generator=g).float()
    return model, lk.BCEWithLogitsLoss(), (x, y)
