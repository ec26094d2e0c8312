"""Cases for losskit/losses/distillation.py.

The references are the papers' formulas written out here: softmax as exp / sum, KL(a || b) as
sum a (log a - log b), the generalised JSD of Agarwal et al. (2024) with its mixture m computed
in probability space (losskit works in log space), and the fused loss as the plain formula on
``hidden @ head.T + bias``. tests/test_distillation.py also compares kd_loss with torch's
``F.kl_div`` in float64.
"""


import losskit as lk
from cases import LossCase, randint, randn


def _softmax(z):
    e = (z - z.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def _kl(a, b):
    """KL(a || b) per row of two distributions."""
    return (a * (a.log() - b.log())).sum(-1)


def _reduce(rows, labels, ignore_index, reduction, num_items):
    if labels is not None:
        rows = rows * (labels != ignore_index)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    count = rows.numel() if labels is None else int((labels != ignore_index).sum())
    return rows.sum() / (count if num_items is None else num_items)


def kd(student_logits, teacher_logits, labels=None, *, temperature=1.0,
       scale_by_temperature_squared=True, ignore_index=-100, num_items=None, reduction="batchmean"):
    """Hinton et al. 2015: T^2 KL(softmax(t / T) || softmax(s / T)) per row."""
    p, q = _softmax(student_logits / temperature), _softmax(teacher_logits / temperature)
    rows = _kl(q, p) * (temperature**2 if scale_by_temperature_squared else 1.0)
    return _reduce(rows, labels, ignore_index, reduction, num_items)


def generalised_jsd(student_logits, teacher_logits, labels=None, *, beta=0.5, temperature=1.0,
                    ignore_index=-100, num_items=None, reduction="batchmean"):
    """Agarwal et al. 2024: beta KL(q || m) + (1 - beta) KL(p || m), m = beta q + (1 - beta) p;
    the forward KL(q || p) at beta = 0 and the reverse KL(p || q) at beta = 1."""
    p, q = _softmax(student_logits / temperature), _softmax(teacher_logits / temperature)
    if beta == 0.0:
        rows = _kl(q, p)
    elif beta == 1.0:
        rows = _kl(p, q)
    else:
        m = beta * q + (1 - beta) * p
        rows = beta * _kl(q, m) + (1 - beta) * _kl(p, m)
    return _reduce(rows, labels, ignore_index, reduction, num_items)


def linear_distill(student_hidden, student_weight, teacher_hidden, teacher_weight, labels=None,
                   *, student_bias=None, teacher_bias=None,
                   divergence="kl", beta=0.5, temperature=1.0, scale_by_temperature_squared=True,
                   ignore_index=-100, num_items=None, reduction="batchmean", chunk_size=None):
    """The plain formula on the whole logits: s = h W^T + b, t = h_t W_t^T + b_t."""
    s = student_hidden @ student_weight.T + (0 if student_bias is None else student_bias)
    t = teacher_hidden @ teacher_weight.T + (0 if teacher_bias is None else teacher_bias)
    common = dict(temperature=temperature, ignore_index=ignore_index, num_items=num_items,
                  reduction=reduction)
    if divergence == "kl":
        return kd(s, t, labels, scale_by_temperature_squared=scale_by_temperature_squared,
                  **common)
    return generalised_jsd(s, t, labels, beta=beta, **common)


def _logits(shape, *, labelled=False, ignore_index=-100, **options):
    def make(gen):
        s, t = 2 * randn(gen, *shape), 2 * randn(gen, *shape)
        if not labelled:
            return (s, t), dict(options)
        labels = randint(gen, shape[-1], *shape[:-1])
        labels.view(-1)[1::3] = ignore_index
        return (s, t, labels), dict(options, ignore_index=ignore_index)

    return make


def _hidden(rows, h_s, h_t, vocab, *, bias=False, labelled=False, **options):
    def make(gen):
        h, ht = randn(gen, *rows, h_s), randn(gen, *rows, h_t)  # (*, H), (*, H_t)
        w, wt = randn(gen, vocab, h_s) / h_s**0.5, randn(gen, vocab, h_t) / h_t**0.5
        args = (h, w, ht, wt)
        if labelled:
            labels = randint(gen, vocab, *rows)
            labels.view(-1)[::3] = -100
            args = (*args, labels)
        kwargs = dict(options)
        if bias:
            kwargs.update(student_bias=randn(gen, vocab), teacher_bias=randn(gen, vocab))
        return args, kwargs

    return make


def _linear_module(made, reduction):
    (h, w, ht, wt, *labels), kwargs = made
    kwargs = dict(kwargs)
    b, bt = kwargs.pop("student_bias", None), kwargs.pop("teacher_bias", None)
    module = lk.LinearKDLoss(**kwargs, reduction=reduction)
    return module, (h, w, ht, wt, labels[0] if labels else None, b, bt)


def linear(id, make, **fields):
    return LossCase("linear_kd_loss", id, make, grad_args=(0, 1), reference=linear_distill,
                    module=_linear_module, **fields)


# The teacher's gradient is not compared here: a teacher that requires grad warns (the loss would
# train it); tests/test_distillation.py compares it with the warning expected.
MEANS = ("none", "batchmean", "mean", "sum")
CASES = [
    LossCase("kd_loss", "(4,5)", _logits((4, 5)), reference=kd, reductions=MEANS),
    LossCase("kd_loss", "T2-(2,3,6)-labels", _logits((2, 3, 6), labelled=True, temperature=2.0),
             reference=kd),
    LossCase("kd_loss", "T4-(5,3)", _logits((5, 3), temperature=4.0), reference=kd),
    LossCase("jsd", "beta0.5-(4,5)", _logits((4, 5)), reference=generalised_jsd,
             reductions=MEANS),
    LossCase("jsd", "beta0.2-T2-labels", _logits((3, 4, 5), labelled=True, beta=0.2,
                                                 temperature=2.0), reference=generalised_jsd),
    LossCase("jsd", "beta0-forward-KL", _logits((4, 6), beta=0.0), reference=generalised_jsd),
    LossCase("jsd", "beta1-reverse-KL", _logits((4, 6), beta=1.0), reference=generalised_jsd),
    linear("kl-(7,4)x(11,4)-chunk3", _hidden((7,), 4, 5, 11, temperature=2.0, chunk_size=3)),
    linear("kl-bias-labels", _hidden((2, 4), 3, 6, 9, bias=True, labelled=True, chunk_size=2)),
    linear("jsd0.3-bias-labels", _hidden((7,), 5, 3, 8, bias=True, labelled=True,
                                         divergence="jsd", beta=0.3, chunk_size=4)),
    linear("jsd1-reverse", _hidden((5,), 4, 4, 6, divergence="jsd", beta=1.0)),
]
