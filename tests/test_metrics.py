"""TaskMetrics values against float64 torch: perplexity and token accuracy for each output kind a
language model can emit (logits for cross-entropy, log-probabilities for NLLLoss, probabilities).

Oracle: perplexity = exp(F.cross_entropy / F.nll_loss in float64, ignoring -100), token accuracy
from argmax; never the metrics' own output.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import losskit as lk
from losskit.metrics import TaskMetrics, output_kind

B, V, T = 3, 7, 5


def _batch(gen):
    logits = 2 * torch.randn(B, V, T, generator=gen)  # (B, V, T)
    target = torch.randint(0, V, (B, T), generator=gen)
    target[0, 3:] = -100  # padding
    return logits, target


@pytest.mark.parametrize("kind", ["logits", "log-probabilities", "probabilities"])
def test_language_model_perplexity_matches_float64_torch(gen, kind):
    logits, target = _batch(gen)
    emitted = {"logits": logits, "log-probabilities": logits.log_softmax(1),
               "probabilities": logits.softmax(1)}[kind]
    metrics = TaskMetrics("language-modelling", V, output=kind)
    metrics.update(emitted[:2], target[:2])  # two batches: the means are over tokens
    metrics.update(emitted[2:], target[2:])
    got = metrics.compute()
    nll = F.cross_entropy(logits.double(), target).item()  # mean over non-ignored tokens
    assert got["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert got["perplexity"] != pytest.approx(V, rel=1e-3)  # V is the uniform model's value
    counted = target != -100
    accuracy = (logits.argmax(1) == target)[counted].double().mean().item()
    assert got["token_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_nll_loss_module_gets_log_probability_metrics(gen):
    """What fit does for NLLLoss: output_kind says log-probabilities, and the perplexity is
    exp(nll_loss) on them."""
    logits, target = _batch(gen)
    logp = logits.log_softmax(1)
    kind = output_kind(lk.NLLLoss())
    assert kind == "log-probabilities"
    metrics = TaskMetrics("language-modelling", V, output=kind)
    metrics.update(logp, target)
    want = math.exp(F.nll_loss(logp.double(), target).item())
    assert metrics.compute()["perplexity"] == pytest.approx(want, rel=1e-5)
