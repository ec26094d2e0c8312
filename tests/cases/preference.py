"""Cases for losskit/losses/preference.py, with each paper's formula written plainly here.

Log-probabilities are negative (summed over 3 to 40 tokens for DPO and KTO, means per token for
SimPO and ORPO). Reference log-probabilities are never differentiated (the guardrail warns when
they require grad), so only the policy's arguments are in ``grad_args``. The fused case's
reference materialises the logits in float64: log_softmax, gather, mask, then the DPO formula.
"""

import math

import torch

from cases import LossCase, rand, randint, randn


def _reduce(terms, reduction):
    if reduction == "none":
        return terms
    total = terms.new_zeros(())  # 0-d; a mean over no pair is 0 / 0 = NaN, as torch's
    for i in range(terms.shape[0]):
        total = total + terms[i]
    return total / terms.shape[0] if reduction == "mean" else total


def _log_sigmoid(x):
    return -torch.log1p(torch.exp(-x))  # log(1 / (1 + e^-x)); |x| stays small in these cases


def _sigmoid(x):
    return 1 / (1 + torch.exp(-x))


# Rafailov et al. 2023 eq. 7; conservative DPO (Mitchell 2023); IPO (Azar et al. 2023, eq. 17)
def dpo_reference(pc, pr, rc, rr, *, beta=0.1, label_smoothing=0.0, loss_type="sigmoid",
                  reduction="mean"):
    terms = []
    for i in range(pc.shape[0]):
        chosen_ratio = pc[i] - rc[i]  # log pi(y_w|x) / pi_ref(y_w|x)
        rejected_ratio = pr[i] - rr[i]
        if loss_type == "ipo":
            terms.append((chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2)
        else:
            u = beta * chosen_ratio - beta * rejected_ratio
            terms.append(-(1 - label_smoothing) * _log_sigmoid(u)
                         - label_smoothing * _log_sigmoid(-u))
    return _reduce(torch.stack(terms) if terms else pc.new_zeros(0), reduction)


# Meng et al. 2024 eq. 6 (with label smoothing as in the authors' trainer)
def simpo_reference(avg_c, avg_r, *, beta=2.0, gamma=1.0, label_smoothing=0.0,
                    reduction="mean"):
    u = beta * avg_c - beta * avg_r - gamma
    terms = -(1 - label_smoothing) * _log_sigmoid(u) - label_smoothing * _log_sigmoid(-u)
    return _reduce(terms, reduction)


# Hong et al. 2024 eqs. 4-7: odds(y|x) = P / (1 - P), P = exp(mean token log-prob)
def orpo_reference(avg_c, avg_r, *, lambda_=0.1, reduction="mean"):
    p_c, p_r = torch.exp(avg_c), torch.exp(avg_r)
    odds_c, odds_r = p_c / (1 - p_c), p_r / (1 - p_r)
    l_or = -_log_sigmoid(torch.log(odds_c / odds_r))
    return _reduce(-avg_c + lambda_ * l_or, reduction)


# Ethayarajh et al. 2024 eq. 8: L = E[lambda_y - v(x, y)]
def kto_reference(policy, ref, labels, kl=None, *, beta=0.1, desirable_weight=1.0,
                  undesirable_weight=1.0, reduction="mean"):
    z_ref = 0.0 if kl is None else max(float(kl.mean()), 0.0)
    terms = []
    for i in range(policy.shape[0]):
        r = policy[i] - ref[i]
        if bool(labels[i]):
            terms.append(desirable_weight - desirable_weight * _sigmoid(beta * (r - z_ref)))
        else:
            terms.append(undesirable_weight - undesirable_weight * _sigmoid(beta * (z_ref - r)))
    return _reduce(torch.stack(terms) if terms else policy.new_zeros(0), reduction)


def _plain_logps(hidden, weight, labels, bias, ignore_index, average):
    """Per-sequence log-probabilities through the materialised (B, S, V) logits."""
    logits = hidden @ weight.T + (0 if bias is None else bias)  # (B, S, V)
    out = []
    for b in range(hidden.shape[0]):
        total, count = hidden.new_zeros(()), 0
        for t in range(hidden.shape[1]):
            y = int(labels[b, t])
            if y == ignore_index:
                continue
            total = total + logits[b, t, y] - torch.logsumexp(logits[b, t], dim=0)
            count += 1
        out.append(total / max(count, 1) if average else total)
    return torch.stack(out)


def linear_preference_reference(hc, hr, w, yc, yr, ref_c=None, ref_r=None, *, loss="dpo",
                                bias=None, ignore_index=-100, chunk_size=None,
                                reduction="mean", **options):
    average = loss != "dpo"
    pc = _plain_logps(hc, w, yc, bias, ignore_index, average)
    pr = _plain_logps(hr, w, yr, bias, ignore_index, average)
    if loss == "dpo":
        return dpo_reference(pc, pr, ref_c, ref_r, reduction=reduction, **options)
    if loss == "simpo":
        return simpo_reference(pc, pr, reduction=reduction, **options)
    return orpo_reference(pc, pr, reduction=reduction, **options)


def _summed(gen, b):
    """Summed log-probabilities of answers of 3 to 40 tokens, each token about -1.5."""
    return -(3 + 37 * rand(gen, b)) * (0.5 + 2 * rand(gen, b))


def _pairs(b, **options):
    def make(gen):
        pc, pr = _summed(gen, b), _summed(gen, b)
        rc, rr = pc + 0.5 * randn(gen, b), pr + 0.5 * randn(gen, b)
        return (pc, pr, rc, rr), options

    return make


def _means(b, **options):
    def make(gen):
        return (-0.1 - 2 * rand(gen, b), -0.1 - 2 * rand(gen, b)), options

    return make


def _kto(b, with_kl=False, **options):
    def make(gen):
        policy = _summed(gen, b)
        ref = policy + 0.5 * randn(gen, b)
        labels = rand(gen, b) > 0.5
        labels[:2] = torch.tensor([True, False])
        args = (policy, ref, labels)
        if with_kl:
            args = (*args, 0.3 * randn(gen, 6) + 0.2)
        return args, options

    return make


def _linear(b, s_w, s_l, hid, vocab, *, refs, padded, **options):
    def make(gen):
        hc, hr = randn(gen, b, s_w, hid), randn(gen, b, s_l, hid)
        w = randn(gen, vocab, hid) / math.sqrt(hid)
        yc, yr = randint(gen, vocab, b, s_w), randint(gen, vocab, b, s_l)
        if padded:  # a prompt of 2 tokens and right padding of varying length
            yc[:, :2] = -100
            yr[:, :2] = -100
            yc[0, -1:] = -100
            yr[1, -1:] = -100
        args = (hc, hr, w, yc, yr)
        if refs:
            ref_c = _plain_logps(hc, w, yc, None, -100, False).detach() + 0.3 * randn(gen, b)
            ref_r = _plain_logps(hr, w, yr, None, -100, False).detach() + 0.3 * randn(gen, b)
            args = (*args, ref_c, ref_r)
        return args, options

    return make


POLICY = (0, 1)
HIDDEN = (0, 1, 2)  # both hidden states and the head

CASES = [
    LossCase("dpo_loss", "(6,)", _pairs(6), grad_args=POLICY, reference=dpo_reference),
    LossCase("dpo_loss", "(5,)-beta0.5", _pairs(5, beta=0.5), grad_args=POLICY,
             reference=dpo_reference),
    LossCase("dpo_loss", "(5,)-conservative", _pairs(5, beta=0.3, label_smoothing=0.2),
             grad_args=POLICY, reference=dpo_reference),
    LossCase("dpo_loss", "(5,)-ipo", _pairs(5, beta=0.5, loss_type="ipo"), grad_args=POLICY,
             reference=dpo_reference),
    LossCase("dpo_loss", "(1,)", _pairs(1), grad_args=POLICY, reference=dpo_reference),
    LossCase("simpo_loss", "(6,)", _means(6), grad_args=POLICY, reference=simpo_reference),
    LossCase("simpo_loss", "(4,)-smoothed", _means(4, beta=2.5, gamma=0.3, label_smoothing=0.1),
             grad_args=POLICY, reference=simpo_reference),
    LossCase("orpo_loss", "(6,)", _means(6), grad_args=POLICY, reference=orpo_reference),
    LossCase("orpo_loss", "(4,)-lambda1", _means(4, lambda_=1.0), grad_args=POLICY,
             reference=orpo_reference),
    LossCase("kto_loss", "(7,)", _kto(7), grad_args=(0,), reference=kto_reference),
    LossCase("kto_loss", "(6,)-kl-weights",
             _kto(6, with_kl=True, beta=0.5, desirable_weight=1.3, undesirable_weight=0.8),
             grad_args=(0,), reference=kto_reference),
    LossCase("linear_preference_loss", "dpo-padded",
             _linear(3, 5, 4, 6, 11, refs=True, padded=True, beta=0.5),
             grad_args=HIDDEN, reference=linear_preference_reference),
    LossCase("linear_preference_loss", "simpo",
             _linear(2, 4, 6, 5, 9, refs=False, padded=True, loss="simpo", gamma=0.4),
             grad_args=HIDDEN, reference=linear_preference_reference),
    LossCase("linear_preference_loss", "orpo-chunk3",
             _linear(2, 4, 3, 5, 9, refs=False, padded=False, loss="orpo", chunk_size=3),
             grad_args=HIDDEN, reference=linear_preference_reference),
]
