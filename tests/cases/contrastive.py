"""Cases for losskit/losses/contrastive.py, with the papers' formulas written out as loops."""

import math

import torch
import torch.nn.functional as F

from cases import LossCase, randint, randn


def _reduce(rows, reduction):
    return {"none": rows, "mean": rows.mean(), "sum": rows.sum()}[reduction]


def _cosine(z, normalize):
    return z / z.norm(dim=1, keepdim=True) if normalize else z


def nt_xent(z1, z2, *, temperature=0.1, normalize=True, reduction="mean", **_):
    """SimCLR (Chen et al. 2020), Alg. 1: l(i, j) = -log exp(s_ij / t) / sum_{k != i}
    exp(s_ik / t), over the 2B rows [z1; z2], the positive of row i its other view."""
    z = _cosine(torch.cat([z1, z2]), normalize)
    b = z1.shape[0]
    rows = []
    for i in range(2 * b):
        j = (i + b) % (2 * b)
        sims = [z[i] @ z[k] / temperature for k in range(2 * b)]
        denominator = sum(torch.exp(sims[k]) for k in range(2 * b) if k != i)
        rows.append(-torch.log(torch.exp(sims[j]) / denominator))
    return _reduce(torch.stack(rows), reduction)


CLIP_INIT = math.log(1 / 0.07)  # CLIP's initial logit scale


def clip(image, text, *, logit_scale=CLIP_INIT, normalize=True, reduction="mean", **_):
    """CLIP (Radford et al. 2021), Fig. 3's pseudo-code: logits = scale * I @ T.T,
    (CE(logits, arange) + CE(logits.T, arange)) / 2, with the scale exp(t) at most 100."""
    scale = min(math.exp(logit_scale), 100.0)
    logits = scale * _cosine(image, normalize) @ _cosine(text, normalize).T  # (B, B)
    labels = torch.arange(image.shape[0])
    rows = (F.cross_entropy(logits, labels, reduction="none")
            + F.cross_entropy(logits.T, labels, reduction="none")) / 2
    return _reduce(rows, reduction)


def supcon(features, labels=None, *, temperature=0.1, normalize=True, reduction="mean", **_):
    """SupCon (Khosla et al. 2020), eq. 2: l_i = -1/|P(i)| sum_{p in P(i)} log exp(z_i.z_p/t) /
    sum_{a != i} exp(z_i.z_a/t), anchors i over every view; anchors without positives skipped."""
    bsz, views, _ = features.shape
    labels = torch.arange(bsz) if labels is None else labels
    anchors = [(s, v) for s in range(bsz) for v in range(views)]
    z = {a: features[a[0], a[1]] for a in anchors}
    if normalize:
        z = {a: x / x.norm() for a, x in z.items()}
    losses, counted = {}, 0
    for i in anchors:
        others = [a for a in anchors if a != i]
        positives = [p for p in others if labels[p[0]] == labels[i[0]]]
        if not positives:
            losses[i] = features.new_zeros(())
            continue
        counted += 1
        denominator = sum(torch.exp(z[i] @ z[a] / temperature) for a in others)
        losses[i] = -sum(torch.log(torch.exp(z[i] @ z[p] / temperature) / denominator)
                         for p in positives) / len(positives)
    rows = torch.stack([torch.stack([losses[(s, v)] for v in range(views)])
                        for s in range(bsz)])  # (B, V)
    return {"none": rows, "mean": rows.sum() / counted, "sum": rows.sum()}[reduction]


def _views(b, d, **options):
    def make(gen):
        z1 = randn(gen, b, d)
        z2 = z1 + 0.5 * randn(gen, b, d)  # a noisy second view
        if not options.get("normalize", True):  # dot products of rows near unit norm
            z1, z2 = z1 / z1.norm(dim=1, keepdim=True), z2 / z2.norm(dim=1, keepdim=True)
        return (z1, z2), dict(options)

    return make


def _features(b, v, d, classes=None, **options):
    def make(gen):
        f = randn(gen, b, v, d)
        labels = randint(gen, classes, b) if classes else torch.arange(b)
        return (f, labels), dict(options)

    return make


CASES = [
    LossCase("info_nce", "B6", _views(6, 4, temperature=0.5), grad_args=(0, 1),
             reference=nt_xent),
    LossCase("info_nce", "chunk4-B5", _views(5, 3, temperature=0.2, chunk_size=4),
             grad_args=(0, 1), reference=nt_xent),
    LossCase("info_nce", "dot", _views(4, 5, normalize=False, temperature=0.5),
             reference=nt_xent),
    LossCase("clip_loss", "B5", _views(5, 4), grad_args=(0, 1), reference=clip),
    LossCase("clip_loss", "chunk2-scale", _views(5, 3, logit_scale=1.5, chunk_size=2),
             grad_args=(0, 1), reference=clip),
    LossCase("supcon_loss", "labels", _features(6, 2, 3, classes=3, temperature=0.5),
             reference=supcon),
    LossCase("supcon_loss", "one-view-chunk3", _features(7, 1, 3, classes=3, chunk_size=3,
                                                         temperature=0.3), reference=supcon),
]
