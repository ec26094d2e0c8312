"""Worker side of the 2-rank gloo test of the contrastive losses' ``gather=True``
(tests/test_contrastive.py). Each rank holds some rows of one batch, computes its loss against
every rank's rows and saves the value and its gradients for the parent to compare with one
process on the whole batch. The data builder is shared by both sides."""

from __future__ import annotations

import os

import torch

import losskit.functional as LF

# (loss, reduction, chunk_size, rows held by rank 0 and rank 1). "mean" splits evenly: DDP
# averages the ranks' gradients, which is the global mean only when every rank holds as many
# rows; "sum" splits unevenly (the gather pads and slices).
SCENARIOS = [
    (loss, reduction, chunk, (2, 2) if reduction == "mean" else (3, 2))
    for loss in ("info_nce", "clip_loss", "supcon_loss")
    for reduction in ("mean", "sum")
    for chunk in (None, 2)
]


def batch(loss: str, n: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The whole batch of ``n`` samples (float64) and the learnt temperature / log-scale."""
    g = torch.Generator().manual_seed(3)
    if loss == "supcon_loss":
        features = torch.randn(n, 2, 3, generator=g, dtype=torch.float64)  # (B, V=2, D)
        labels = torch.tensor([0, 1, 0, 2, 1])[:n]
        return (features, labels), torch.tensor(0.5, dtype=torch.float64)
    a = torch.randn(n, 4, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    return (a, b), torch.tensor(0.5 if loss == "info_nce" else 1.2, dtype=torch.float64)


def call(loss: str, tensors, knob: torch.Tensor, **kwargs) -> torch.Tensor:
    """The loss with ``knob`` as its temperature (info_nce, supcon) or logit_scale (clip)."""
    key = "logit_scale" if loss == "clip_loss" else "temperature"
    return getattr(LF, loss)(*tensors, **{key: knob}, **kwargs)


def worker(rank: int, world: int, out: str) -> None:
    results = []
    for loss, reduction, chunk, sizes in SCENARIOS:
        tensors, knob = batch(loss, sum(sizes))
        start = sum(sizes[:rank])
        mine = [t[start : start + sizes[rank]].clone() for t in tensors]
        for t in mine:
            if t.is_floating_point():
                t.requires_grad_(True)
        knob = knob.clone().requires_grad_(True)
        value = call(loss, mine, knob, reduction=reduction, chunk_size=chunk, gather=True)
        value.backward()
        grads = [t.grad for t in mine if t.is_floating_point()]
        results.append({"value": value.detach(), "grads": grads, "knob": knob.grad})
    torch.save(results, os.path.join(out, f"contrastive{rank}.pt"))
