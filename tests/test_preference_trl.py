"""TRL's own loss code as a second oracle for the preference losses, in float64.

TRL computes each loss in a method of its trainer; these tests call the unbound method with a
stand-in ``self`` that holds only the attributes the method reads (checked against trl 0.24.0,
the last TRL line that accepts transformers 4.57):

* ``trl.trainer.dpo_trainer.DPOTrainer.dpo_loss``: DPO ("sigmoid", with label smoothing =
  conservative DPO) and IPO;
* ``trl.trainer.cpo_trainer.CPOTrainer.cpo_loss`` with ``loss_type="simpo"``: SimPO (TRL's
  ``simpo_gamma`` is the margin itself, as losskit's ``gamma``);
* ``trl.trainer.orpo_trainer.ORPOTrainer.odds_ratio_loss``: ORPO's odds-ratio term (TRL adds the
  NLL of the chosen tokens outside the method; losskit's NLL term is ``-policy_chosen_logps``);
* ``trl.trainer.kto_trainer.KTOTrainer.kto_loss``: KTO with the KL estimate of mismatched pairs.
"""

from __future__ import annotations

import types

import pytest
import torch

import losskit.functional as LF

trl = pytest.importorskip("trl")
dpo_trainer = pytest.importorskip("trl.trainer.dpo_trainer")
cpo_trainer = pytest.importorskip("trl.trainer.cpo_trainer")
orpo_trainer = pytest.importorskip("trl.trainer.orpo_trainer")
kto_trainer = pytest.importorskip("trl.trainer.kto_trainer")
FDivergenceType = pytest.importorskip("trl.trainer.dpo_config").FDivergenceType

CPU = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)


def _logps(n: int, seed: int, scale: float = 20.0) -> torch.Tensor:
    """Negative per-sequence log-probabilities, float64."""
    gen = torch.Generator().manual_seed(seed)
    return -torch.rand(n, generator=gen, dtype=torch.float64) * scale


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, inputs: tuple[torch.Tensor, ...]):
    """Values, and gradients under one random upstream gradient, to float64 rounding."""
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-13)
    upstream = torch.randn(ours.shape, generator=torch.Generator().manual_seed(99),
                           dtype=torch.float64)
    g1 = torch.autograd.grad(ours, inputs, upstream)
    g2 = torch.autograd.grad(theirs, inputs, upstream)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("loss_type,label_smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2),
                                                        ("ipo", 0.0)])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_matches_trl_dpo_trainer(loss_type, label_smoothing, beta):
    pc, pr = _logps(8, 1).requires_grad_(), _logps(8, 2).requires_grad_()
    rc, rr = _logps(8, 3), _logps(8, 4)
    trainer = types.SimpleNamespace(
        accelerator=CPU, reference_free=False, f_divergence_type=FDivergenceType.REVERSE_KL,
        f_divergence_params={}, beta=beta, label_smoothing=label_smoothing, loss_type=loss_type,
    )
    theirs, *_ = dpo_trainer.DPOTrainer.dpo_loss(trainer, pc, pr, rc, rr, loss_type=loss_type)
    ours = LF.dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing,
                       loss_type=loss_type, reduction="none")
    _assert_same(ours, theirs, (pc, pr))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_matches_trl_cpo_trainer(label_smoothing):
    pc, pr = _logps(8, 5, scale=3.0).requires_grad_(), _logps(8, 6, scale=3.0).requires_grad_()
    beta, gamma = 2.0, 1.2
    trainer = types.SimpleNamespace(accelerator=CPU, alpha=0.0, loss_type="simpo", beta=beta,
                                    simpo_gamma=gamma, label_smoothing=label_smoothing)
    theirs, *_ = cpo_trainer.CPOTrainer.cpo_loss(trainer, pc, pr)
    ours = LF.simpo_loss(pc, pr, beta=beta, gamma=gamma, label_smoothing=label_smoothing,
                         reduction="none")
    _assert_same(ours, theirs, (pc, pr))


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_odds_ratio_term_matches_trl_orpo_trainer(lam):
    """Mean log-probabilities from -3 to -1e-3 (TRL's log1p(-exp(x)) is accurate there)."""
    pc = (-torch.logspace(-3, 0.5, 8, dtype=torch.float64)).requires_grad_()
    pr = (-torch.logspace(0.5, -3, 8, dtype=torch.float64)).requires_grad_()
    trainer = types.SimpleNamespace(accelerator=CPU, beta=lam)
    losses, *_ = orpo_trainer.ORPOTrainer.odds_ratio_loss(trainer, pc, pr)
    theirs = -pc - losses  # TRL: loss = nll - mean(losses), its nll over the chosen tokens
    ours = LF.orpo_loss(pc, pr, lambda_=lam, reduction="none")
    _assert_same(ours, theirs, (pc, pr))


@pytest.mark.parametrize("kl_shift", [-2.0, 3.0])  # a negative KL estimate is clamped to 0
def test_kto_matches_trl_kto_trainer(kl_shift):
    policy = _logps(10, 7).requires_grad_()
    ref = _logps(10, 8)
    labels = torch.tensor([True] * 6 + [False] * 4)  # TRL returns desirable first
    kl_policy, kl_ref = _logps(10, 9) + kl_shift, _logps(10, 9)
    trainer = types.SimpleNamespace(accelerator=CPU, calculate_KL=True, loss_type="kto",
                                    beta=0.3, desirable_weight=1.0, undesirable_weight=1.5)
    theirs, *_ = kto_trainer.KTOTrainer.kto_loss(
        trainer, policy[labels], policy[~labels], kl_policy, ref[labels], ref[~labels], kl_ref)
    ours = LF.kto_loss(policy, ref, labels, kl_policy - kl_ref, beta=0.3, desirable_weight=1.0,
                       undesirable_weight=1.5, reduction="none")
    _assert_same(ours, theirs, (policy,))
