"""Healthy input never warns, on real training: KL distillation and Dice segmentation.

tests/test_recipes.py trains the recipe losses on the built-in datasets; KLDivLoss and DiceLoss
have no recipe, so here each gets a small, correctly set-up training run with every value check on
(``lk.checks("always")``). Each run must record zero LossWarnings and must actually learn (the loss
falls well below its starting value, and the model does the task), so a run that silently breaks
fails here.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import losskit as lk
from losskit import data


def _loss_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, lk.LossWarning)]


# ----------------------------------------------------------------------------------------------
# KL divergence: distil a teacher MLP into a linear student on digits


@pytest.fixture(scope="module")
def digits() -> data.TaskData:
    return data.load("digits")


@pytest.mark.parametrize("log_target", [True, False])
def test_kl_distillation_on_digits_learns_without_loss_warnings(digits, log_target) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = digits.train.tensors  # (1437, 64) standardised pixels, (1437,) int64 labels
    x_val, y_val = digits.val.tensors
    temperature = 2.0  # Hinton et al. (2015): soften the teacher to expose its dark knowledge
    with warnings.catch_warnings(record=True) as caught, lk.checks("always"):
        warnings.simplefilter("always")
        # 1. A teacher: a small MLP trained briefly with cross-entropy on the labels.
        teacher = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
        for _ in range(60):
            opt.zero_grad()
            lk.CrossEntropyLoss()(teacher(x), y).backward()
            opt.step()
        with torch.no_grad():
            log_q = torch.log_softmax(teacher(x) / temperature, dim=1)  # (1437, 10)
            teacher_val = teacher(x_val).argmax(1)
        target = log_q if log_target else log_q.exp()

        # 2. The student: a linear model matching the teacher's softened distribution.
        student = nn.Linear(64, 10)
        kl = lk.KLDivLoss(reduction="batchmean", log_target=log_target)
        opt = torch.optim.Adam(student.parameters(), lr=1e-2)
        losses = []
        for _epoch in range(3):
            for idx in torch.randperm(len(x)).split(64):
                log_p = torch.log_softmax(student(x[idx]) / temperature, dim=1)  # (B, 10)
                loss = kl(log_p, target[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
    assert _loss_warnings(caught) == []
    assert (teacher_val == y_val).float().mean() > 0.9  # the teacher is worth distilling
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)
    agreement = (student(x_val).argmax(1) == teacher_val).float().mean()
    assert agreement > 0.85, agreement


# ----------------------------------------------------------------------------------------------
# Dice: a tiny conv net segments rectangles


def _rectangles(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, size, size) and masks (n, size, size): background 0 plus one rectangle of
    class 1 (bright, +1) and one of class 2 (dark, -1), with pixel noise; class 2 drawn last."""
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for cls in (1, 2):
            h, w = torch.randint(3, size // 2, (2,), generator=gen).tolist()
            top = int(torch.randint(0, size - h, (1,), generator=gen))
            left = int(torch.randint(0, size - w, (1,), generator=gen))
            masks[i, top:top + h, left:left + w] = cls
    brightness = torch.tensor([0.0, 1.0, -1.0])[masks]  # (n, size, size)
    images = brightness + 0.3 * torch.randn(n, size, size, generator=gen)
    return images.unsqueeze(1), masks  # (n, 1, H, W), (n, H, W)


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_dice_segmentation_learns_without_loss_warnings(ignore_index) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    images, masks = _rectangles(64, 16, gen)
    if ignore_index is not None:  # an unlabelled one-pixel border, as annotation tools leave
        masks[:, 0, :] = masks[:, -1, :] = masks[:, :, 0] = masks[:, :, -1] = ignore_index
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    dice = lk.DiceLoss() if ignore_index is None else lk.DiceLoss(ignore_index=ignore_index)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    with warnings.catch_warnings(record=True) as caught, lk.checks("always"):
        warnings.simplefilter("always")
        for _epoch in range(8):
            for idx in torch.arange(64).split(16):
                loss = dice(model(images[idx]), masks[idx])  # (B, 3, 16, 16) logits, (B, 16, 16)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
    assert _loss_warnings(caught) == []
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    with torch.no_grad():
        predicted = model(images).argmax(1)  # (64, 16, 16)
    labelled = masks != ignore_index if ignore_index is not None else torch.ones_like(masks) > 0
    accuracy = (predicted == masks)[labelled].float().mean()
    assert accuracy > 0.9, accuracy
