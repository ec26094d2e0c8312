"""Cases for losskit/losses/classification.py."""

import oracle
import torch

from cases import LossCase, rand, randint, randn


def _indices(shape, *, weight=False, ignore_index=None, **options):
    """Logits of ``shape`` (class dim 1, or 0 for (C,)) and class indices, some ignored."""
    def make(gen):
        x = 2 * randn(gen, *shape)
        c = shape[1] if len(shape) > 1 else shape[0]
        tshape = (shape[0], *shape[2:]) if len(shape) > 1 else ()
        y = randint(gen, c, *tshape)
        kwargs = dict(options)
        if ignore_index is not None:
            kwargs["ignore_index"] = ignore_index
            if y.dim():
                y.view(-1)[::3] = ignore_index
        if weight:
            kwargs["weight"] = rand(gen, c) + 0.5
        return (x, y), kwargs

    return make


def _probs(shape, **options):
    def make(gen):
        x = 2 * randn(gen, *shape)
        y = randn(gen, *shape).softmax(1 if len(shape) > 1 else 0)
        return (x, y), options

    return make


def _log_probs(shape, **options):
    inner = _indices(shape, **options)

    def make(gen):
        (x, y), kwargs = inner(gen)
        return (x.log_softmax(1 if len(shape) > 1 else 0), y), kwargs

    return make


def _focal_binary(shape, **options):
    def make(gen):
        return (2 * randn(gen, *shape), (rand(gen, *shape) > 0.5).double()), options

    return make


CASES = [
    LossCase("cross_entropy", "(C,)", _indices((5,))),
    LossCase("cross_entropy", "(N,C)-weight-ignore-ls",
             _indices((6, 4), weight=True, ignore_index=-1, label_smoothing=0.2)),
    LossCase("cross_entropy", "(N,C,d1,d2)-ignore", _indices((2, 3, 4, 2), ignore_index=1)),
    LossCase("cross_entropy", "probs-(N,C)-weight-ls", _probs((4, 5), label_smoothing=0.1),
             grad_args=(0, 1)),
    LossCase("cross_entropy", "probs-(N,C,d)", _probs((2, 3, 4)), grad_args=(0, 1)),
    LossCase("nll_loss", "(N,C)-weight-ignore", _log_probs((6, 4), weight=True, ignore_index=2)),
    LossCase("nll_loss", "(N,C,d)", _log_probs((2, 3, 5))),
    LossCase("focal_loss", "binary", _focal_binary((4, 3), gamma=2.0),
             reference=oracle.focal_binary),
    LossCase("focal_loss", "binary-alpha", _focal_binary((7,), gamma=0.5, alpha=0.25),
             reference=oracle.focal_binary),
    LossCase("focal_loss", "multiclass-ignore", _indices((6, 4), ignore_index=-100, gamma=2.0),
             reference=oracle.focal_multiclass),
    LossCase("focal_loss", "multiclass-(N,C,d)-alpha", _indices((2, 3, 4), gamma=1.5, alpha=0.5),
             reference=oracle.focal_multiclass),
]


# ----------------------------------------------------------------------------------------------
# Poly-1 cross-entropy (Leng et al., 2022), the paper's formula written plainly


def poly1(input, target, *, epsilon=1.0, weight=None, ignore_index=-100, reduction="mean",
          label_smoothing=0.0):
    """Per target n with class y: q = (1 - s) onehot(y) + s / C (the paper's smoothed label),
    CE_n = -sum_c w_c' q_c log p_c, written as torch's weighted smoothing does:
    (1 - s) w_y (-log p_y) + (s / C) sum_c w_c (-log p_c); poly_n = eps w_y (1 - sum_c q_c p_c).
    Ignored targets give 0; "mean" divides by the sum of w_y over the counted targets."""
    x = input.double()
    class_dim = 1 if x.dim() >= 2 else 0
    c = x.shape[class_dim]
    rows = x.movedim(class_dim, -1).reshape(-1, c)  # (M, C)
    flat = target.reshape(-1)
    w = torch.ones(c, dtype=torch.float64) if weight is None else weight.double()
    s = label_smoothing
    terms, total = [], 0.0
    for n in range(flat.numel()):
        y = int(flat[n])
        if y == ignore_index:
            terms.append(torch.zeros((), dtype=torch.float64))
            continue
        p, logp = torch.softmax(rows[n], 0), torch.log_softmax(rows[n], 0)  # (C,), stable
        ce = (1 - s) * w[y] * -logp[y]
        if s > 0:  # the smoothing term (written only when there is one: 0 * inf is NaN)
            ce = ce + (s / c) * sum(w[k] * -logp[k] for k in range(c))
        q = torch.full((c,), s / c, dtype=torch.float64)
        q[y] += 1 - s
        terms.append(ce + epsilon * w[y] * (1 - (q * p).sum()))
        total = total + w[y]
    out = torch.stack(terms).reshape(target.shape)
    if reduction == "none":
        return out
    if reduction == "sum":
        return out.sum()
    return out.sum() / total if isinstance(total, torch.Tensor) else out.sum() * 0.0


CASES += [
    LossCase("poly1_cross_entropy", "(N,C)-eps1", _indices((6, 4), epsilon=1.0), reference=poly1),
    LossCase("poly1_cross_entropy", "(C,)-eps-0.5", _indices((5,), epsilon=-0.5),
             reference=poly1),
    LossCase("poly1_cross_entropy", "(N,C)-weight-ignore-ls",
             _indices((7, 3), weight=True, ignore_index=-1, epsilon=2.0, label_smoothing=0.2),
             reference=poly1),
    LossCase("poly1_cross_entropy", "(N,C,d1,d2)-ignore",
             _indices((2, 3, 4, 2), ignore_index=1, epsilon=1.0), reference=poly1),
]


def _focal_alpha_per_class(shape, **options):
    """Class indices with a (C,) alpha tensor: Lin et al.'s alpha_t = alpha[y] for C classes."""
    inner = _indices(shape, ignore_index=-100, **options)

    def make(gen):
        (x, y), kwargs = inner(gen)
        return (x, y), {**kwargs, "alpha": rand(gen, shape[1]) + 0.25}

    return make


CASES += [
    LossCase("focal_loss", "multiclass-(N,C,d)-alpha-per-class",
             _focal_alpha_per_class((3, 4, 5), gamma=2.0), reference=oracle.focal_multiclass),
]
