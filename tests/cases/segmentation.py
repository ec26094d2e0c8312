"""Cases for losskit/losses/segmentation.py."""

import oracle
import torch

from cases import LossCase, rand, randint, randn


def _dice(shape, **options):
    def make(gen):
        return (2 * randn(gen, *shape), randint(gen, shape[1], shape[0], *shape[2:])), options

    return make


def _dice_binary(gen):
    return (2 * randn(gen, 2, 3, 4), (rand(gen, 2, 3, 4) > 0.5).double()), {}


CASES = [
    LossCase("dice_loss", "(N,C,H,W)", _dice((2, 3, 4, 4)), reference=oracle.dice),
    LossCase("dice_loss", "smooth0-ignore", _dice((2, 3, 5), smooth=0.0, ignore_index=0),
             reference=oracle.dice),
    LossCase("dice_loss", "binary", _dice_binary, reference=oracle.dice_binary),
]


# ----------------------------------------------------------------------------------------------
# Tversky (Salehi et al., 2017) and focal Tversky (Abraham & Khan, 2019), written plainly


def _soft_counts(input, target, ignore_index):
    """Per class c, over the counted pixels i (loops, no fused tricks): TP = sum p t,
    FP = sum p (1 - t), FN = sum (1 - p) t; p = softmax over dim 1 for class indices, sigmoid
    for float labels of input's shape."""
    x = input.double()
    c = x.shape[1]
    if target.shape == x.shape and target.is_floating_point():
        p = torch.sigmoid(x).movedim(1, -1).reshape(-1, c)
        t = target.double().movedim(1, -1).reshape(-1, c)
    else:
        rows, y = x.movedim(1, -1).reshape(-1, c), target.reshape(-1)
        keep = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
        p = torch.softmax(rows[keep], dim=1)
        t = torch.stack([(y[keep] == k).double() for k in range(c)], dim=1)
    counts = []
    for k in range(c):
        tp = sum(p[i, k] * t[i, k] for i in range(p.shape[0]))
        fp = sum(p[i, k] * (1 - t[i, k]) for i in range(p.shape[0]))
        fn = sum((1 - p[i, k]) * t[i, k] for i in range(p.shape[0]))
        counts.append((tp, fp, fn))
    return counts


def _reduce(losses, reduction):
    out = torch.stack(losses)
    return {"none": out, "sum": out.sum(), "mean": out.mean()}[reduction]


def tversky(input, target, *, alpha=0.3, beta=0.7, smooth=1.0, ignore_index=None,
            reduction="mean"):
    """l_c = 1 - (TP + s) / (TP + alpha FP + beta FN + s); "none" gives the (C,) losses."""
    losses = [1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
              for tp, fp, fn in _soft_counts(input, target, ignore_index)]
    return _reduce(losses, reduction)


def focal_tversky(input, target, *, alpha=0.3, beta=0.7, gamma=4 / 3, smooth=1.0,
                  ignore_index=None, reduction="mean"):
    """l_c = (1 - TI_c) ** (1 / gamma), the paper's exponent convention."""
    losses = [(1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)) ** (1 / gamma)
              for tp, fp, fn in _soft_counts(input, target, ignore_index)]
    return _reduce(losses, reduction)


def _tversky_binary(**options):
    def make(gen):
        return (2 * randn(gen, 2, 3, 4), (rand(gen, 2, 3, 4) > 0.5).double()), options

    return make


CASES += [
    LossCase("tversky_loss", "(N,C,H,W)", _dice((2, 3, 4, 4)), reference=tversky),
    LossCase("tversky_loss", "alpha0.7-smooth0-ignore",
             _dice((2, 3, 5), alpha=0.7, beta=0.3, smooth=0.0, ignore_index=0),
             reference=tversky),
    LossCase("tversky_loss", "binary-alpha1-beta2", _tversky_binary(alpha=1.0, beta=2.0),
             reference=tversky),
    LossCase("focal_tversky_loss", "(N,C,H,W)", _dice((2, 3, 4, 4)), reference=focal_tversky),
    LossCase("focal_tversky_loss", "gamma2-ignore",
             _dice((2, 4, 5), gamma=2.0, smooth=0.5, ignore_index=3), reference=focal_tversky),
    LossCase("focal_tversky_loss", "binary-gamma3", _tversky_binary(gamma=3.0),
             reference=focal_tversky),
]


# ----------------------------------------------------------------------------------------------
# Lovasz-softmax (Berman et al., 2018): the Lovasz extension of the Jaccard loss, written plainly


def _jaccard_loss(labelled, chosen):
    """J(A) = 1 - |F \\ A| / |F u A| for the set A of the first k sorted pixels."""
    union = len(labelled | chosen)
    return 1 - len(labelled - chosen) / union if union else 0.0


def _lovasz_class(errors, labelled):
    """sum_k e_(k) (J({1..k}) - J({1..k-1})) with the errors sorted in decreasing order (a
    stable sort: tied errors keep pixel order)."""
    order = sorted(range(len(errors)), key=lambda i: -float(errors[i].detach()))
    total, previous, chosen, labelled = errors.new_zeros(()), 0.0, set(), set(labelled)
    for k in range(len(order)):
        chosen.add(order[k])
        current = _jaccard_loss(labelled, chosen)
        total = total + errors[order[k]] * (current - previous)
        previous = current
    return total


def _lovasz_set(p, y, classes):
    """Per class over one set of pixels: p (M, C) probabilities, y (M,) labels. Returns the
    per-class losses and which classes count."""
    losses, counted = [], []
    for c in range(p.shape[1]):
        labelled = [i for i in range(len(y)) if int(y[i]) == c]
        errors = torch.stack([1 - p[i, c] if int(y[i]) == c else p[i, c]
                              for i in range(len(y))]) if len(y) else p.new_zeros(0)
        losses.append(_lovasz_class(errors, labelled))
        counted.append(classes == "all" or bool(labelled))
    return losses, counted


def lovasz(input, target, *, per_image=False, classes="present", ignore_index=None,
           reduction="mean"):
    x = input.double()
    c = x.shape[1]
    images = range(x.shape[0]) if per_image else [None]
    results = []
    for n in images:
        xs = x if n is None else x[n : n + 1]
        ys = target if n is None else target[n : n + 1]
        rows, y = xs.movedim(1, -1).reshape(-1, c), ys.reshape(-1)
        keep = [i for i in range(len(y)) if ignore_index is None or int(y[i]) != ignore_index]
        p = torch.softmax(rows[keep], dim=1)
        losses, counted = _lovasz_set(p, y[keep], classes)
        results.append((losses, counted))
    if not per_image:
        losses, counted = results[0]
        per_class = torch.stack([l if k else l * 0 for l, k in zip(losses, counted, strict=True)])
        if reduction == "none":
            return per_class
        if reduction == "sum":
            return per_class.sum()
        return per_class.sum() / max(sum(counted), 1)
    per_img = [sum(l for l, k in zip(losses, counted, strict=True) if k) / max(sum(counted), 1)
               if any(counted) else x.new_zeros(()) for losses, counted in results]
    per_img = torch.stack(per_img) if per_img else x.new_zeros(0)  # (N,)
    return {"none": per_img, "sum": per_img.sum(), "mean": per_img.mean()}[reduction]


def _lovasz(shape, num_labels=None, **options):
    """Logits (N, C, d...) and labels; ``num_labels < C`` leaves the last classes absent."""
    def make(gen):
        x = 2 * randn(gen, *shape)
        y = randint(gen, num_labels or shape[1], shape[0], *shape[2:])
        if "ignore_index" in options:
            y.view(-1)[::4] = options["ignore_index"]
        return (x, y), options

    return make


# Random logits: no two errors of a class tie, so gradcheck is valid (piecewise linear loss).
CASES += [
    LossCase("lovasz_softmax", "batch-present", _lovasz((2, 4, 3, 3), num_labels=3),
             reference=lovasz),
    LossCase("lovasz_softmax", "batch-all-ignore",
             _lovasz((2, 3, 5), classes="all", ignore_index=255), reference=lovasz),
    LossCase("lovasz_softmax", "per-image-present-ignore",
             _lovasz((3, 3, 2, 3), num_labels=2, per_image=True, ignore_index=0),
             reference=lovasz),
    LossCase("lovasz_softmax", "per-image-all", _lovasz((2, 3, 6), per_image=True,
                                                          classes="all"), reference=lovasz),
]
