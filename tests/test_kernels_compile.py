"""torch.compile of a small model trained through the fused kernels: one graph, right gradients.

``fullgraph=True`` turns any graph break into an error, so a host sync (``.item()``, a data-
dependent shape) anywhere in the fused cross-entropy or the chunked linear+cross-entropy fails this
test. The ``aot_eager`` backend traces forward and backward through AOTAutograd like inductor does,
without inductor's C++ compile time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
import losskit.functional as LF
import losskit.kernels as kernels


def test_compiled_model_has_one_graph_and_matches_eager(gen):
    torch._dynamo.reset()
    vocab = 2048  # 64 x 2048 logits: above MIN_FUSED_ELEMENTS, so the fused paths run
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, vocab)
    )
    x = torch.randn(64, 16, generator=gen)
    y = torch.randint(0, vocab, (64,), generator=gen)
    y[:9] = -100

    def losses(x, y):
        hidden = model[:2](x)  # (N, 32)
        ce = kernels.cross_entropy(model[2](hidden), y, label_smoothing=0.1, lse_square_scale=1e-3)
        lce = kernels.linear_cross_entropy(hidden, model[2].weight, y, model[2].bias, softcap=5.0)
        return ce + lce

    compiled = torch.compile(losses, backend="aot_eager", fullgraph=True)
    compiled(x, y).backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # Oracle: torch's own cross-entropy on the materialised logits, z-loss and softcap by hand.
    hidden = model[:2](x)
    logits = model[2](hidden)
    counted = y != -100
    z_term = 1e-3 * (torch.logsumexp(logits, 1)[counted] ** 2).mean()
    capped = 5.0 * torch.tanh(logits / 5.0)
    expected = F.cross_entropy(logits, y, label_smoothing=0.1) + z_term + F.cross_entropy(capped, y)
    expected.backward()
    for g, p in zip(got, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["startup", "always"])
def test_public_api_compiles_in_one_graph_with_checks_on(gen, mode):
    """What a user compiles: lk.CrossEntropyLoss and LF.linear_cross_entropy, with the checks layer
    (metadata checks in every mode; value checks are skipped while compiling)."""
    torch._dynamo.reset()
    vocab = 2048
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh())
    head = torch.nn.Linear(32, vocab)
    x = torch.randn(2, 40, 16, generator=gen)  # (B, T, D): sequence logits (B, T, V)
    y = torch.randint(0, vocab, (2, 40), generator=gen)
    y[0, :7] = -100
    ce = lk.CrossEntropyLoss(label_smoothing=0.1)

    def losses(x, y):
        hidden = model(x)  # (B, T, 32)
        logits = head(hidden).transpose(1, 2)  # (B, V, T): torch's K-dim layout
        return ce(logits, y) + LF.linear_cross_entropy(
            hidden.reshape(-1, 32), head.weight, y.reshape(-1), linear_bias=head.bias)

    with lk.checks(mode):
        compiled = torch.compile(losses, backend="aot_eager", fullgraph=True)
        compiled(x, y).backward()
    got = [p.grad.clone() for p in [*model.parameters(), *head.parameters()]]
    for p in [*model.parameters(), *head.parameters()]:
        p.grad = None
    logits = head(model(x))  # (B, T, V)
    expected = (F.cross_entropy(logits.transpose(1, 2), y, label_smoothing=0.1)
                + F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1)))
    expected.backward()
    for g, p in zip(got, [*model.parameters(), *head.parameters()], strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
