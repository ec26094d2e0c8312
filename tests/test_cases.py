"""Cross-cutting tests over every loss's case table (tests/cases/): each registered loss against
its float64 reference (values and gradients), its Module against its function, and
``torch.autograd.gradcheck`` for every reduction. A loss without a record or without cases fails
here, so nothing public goes untested.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from cases import ALL, LossCase
from torch.autograd import gradcheck

import losskit as lk
import losskit.functional as LF
from losskit import registry

KL_MEAN_WARNING = "ignore:reduction. 'mean' divides the total loss:UserWarning"


def _grid(predicate=lambda case: True):
    return [
        pytest.param(case, r, id=f"{case}-{r}")
        for case in ALL if predicate(case) for r in case.reductions
    ]


def _made(case: LossCase, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return case.make(gen)


def _leaves(args, grad_args):
    return tuple(
        a.detach().clone().requires_grad_(i in grad_args) if a.is_floating_point() else a
        for i, a in enumerate(args)
    )


def _reference(case: LossCase):
    if case.reference is not None:
        return case.reference
    twin = registry.get(case.loss).torch_function
    assert twin is not None, f"{case}: no torch twin, so the case must name a reference"
    return twin


def _run(fn, args, kwargs, reduction, grad_args, upstream_gen):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
        out = fn(*args, **kwargs, reduction=reduction)
    upstream = torch.randn(out.shape, generator=upstream_gen, dtype=out.dtype)
    wanted = [args[i] for i in grad_args]
    grads = torch.autograd.grad(out, wanted, upstream, allow_unused=True)
    return out, grads


@pytest.mark.parametrize(("case", "reduction"), _grid())
def test_matches_reference_float64(case, reduction):
    args, kwargs = _made(case)
    ours = _run(getattr(LF, case.loss), _leaves(args, case.grad_args), kwargs, reduction,
                case.grad_args, torch.Generator().manual_seed(1))
    theirs = _run(_reference(case), _leaves(args, case.grad_args), kwargs, reduction,
                  case.grad_args, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    for i, a, b in zip(case.grad_args, ours[1], theirs[1], strict=True):
        assert (a is None) == (b is None), f"gradient of arg {i}: ours {a}, reference {b}"
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"gradient of arg {i}")


def _module(case: LossCase, made, reduction):
    if case.module is not None:
        return case.module(made, reduction)
    args, kwargs = made
    return registry.get(case.loss).module(**kwargs, reduction=reduction), args


@pytest.mark.parametrize(("case", "reduction"), _grid(lambda c: not c.function_only))
def test_module_matches_function(case, reduction):
    made = _made(case)
    module, module_args = _module(case, made, reduction)
    assert isinstance(module, registry.get(case.loss).module)
    args, kwargs = made
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
        expected = getattr(LF, case.loss)(*args, **kwargs, reduction=reduction)
        got = module(*module_args)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("case", "reduction"), _grid(lambda c: c.gradcheck))
def test_gradcheck(case, reduction):
    args, kwargs = _made(case)
    leaves = _leaves(args, case.grad_args)
    fn = getattr(LF, case.loss)

    def f(*wanted):
        full = list(leaves)
        for i, w in zip(case.grad_args, wanted, strict=True):
            full[i] = w
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
            return fn(*full, **kwargs, reduction=reduction)

    wanted = tuple(leaves[i] for i in case.grad_args)
    assert gradcheck(f, wanted, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_every_loss_has_a_record_and_cases():
    public = {n for n in LF.__all__}
    recorded = {r.name for r in registry.records()}
    with_cases = {c.loss for c in ALL}
    assert public == recorded
    assert recorded <= with_cases, f"losses without cases in tests/cases/: {recorded - with_cases}"
    assert with_cases <= recorded, f"cases for unknown losses: {with_cases - recorded}"
    for record in registry.records():
        assert getattr(lk, record.module.__name__) is record.module
        assert getattr(LF, record.name) is record.function
        assert record.function.__module__ == f"losskit.losses.{record.family}"


def test_every_reduction_is_covered_per_loss():
    """Each loss is tested with "none", a mean ("mean" or "batchmean") and "sum" somewhere."""
    for record in registry.records():
        seen = {r for c in ALL if c.loss == record.name for r in c.reductions}
        assert "none" in seen and "sum" in seen and seen & {"mean", "batchmean"}, record.name


# ----------------------------------------------------------------------------------------------
# Records against their torch twins: signatures, Module classes


def _records(predicate):
    return [pytest.param(r, id=r.name) for r in registry.records() if predicate(r)]


def _same_prefix(ours, theirs, what):
    """torch's parameters come first, in torch's order, with torch's kinds and defaults; anything
    after them is losskit's own: keyword-only and defaulted."""
    ours_p, theirs_p = list(ours.parameters.values()), list(theirs.parameters.values())
    for a, b in zip(ours_p, theirs_p, strict=False):
        assert (a.name, a.kind, a.default) == (b.name, b.kind, b.default), f"{what}: {a} vs {b}"
    assert len(ours_p) >= len(theirs_p), f"{what}: missing {theirs_p[len(ours_p):]}"
    for extra in ours_p[len(theirs_p):]:
        assert extra.kind is extra.KEYWORD_ONLY and extra.default is not extra.empty, (
            f"{what}: losskit-only parameter {extra} must be keyword-only with a default")


@pytest.mark.parametrize("record", _records(lambda r: r.torch_function is not None))
def test_function_signature_is_torchs(record):
    import inspect

    _same_prefix(inspect.signature(record.function), inspect.signature(record.torch_function),
                 record.name)


@pytest.mark.parametrize("record", _records(lambda r: r.torch_module is not None))
def test_module_subclasses_its_twin_with_torchs_constructor(record):
    import inspect

    assert issubclass(record.module, record.torch_module)
    _same_prefix(inspect.signature(record.module.__init__),
                 inspect.signature(record.torch_module.__init__), record.module.__name__)


# ----------------------------------------------------------------------------------------------
# Every case under hostile or low-precision input


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL])
def test_nan_input_raises(case):
    args, kwargs = _made(case)
    x = args[0].clone()
    if x.numel() == 0:
        pytest.fail(f"{case}: the first case argument is empty; give the case a non-empty input")
    x.view(-1)[0] = float("nan")
    with lk.checks("always"), pytest.raises(lk.LossInputError, match="NaN"):
        getattr(LF, case.loss)(x, *args[1:], **kwargs)


# Per dtype: (rtol, atol) of a low-precision result against the float64 reference run on the same
# (rounded) values: the error of computing in that precision plus the output's rounding.
TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.float16: (4e-3, 2e-3),
             torch.bfloat16: (3e-2, 1.6e-2)}


def _cast(t, dtype):
    return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL])
def test_low_precision_follows_torch(case, dtype):
    """Inputs rounded to ``dtype``: torch's twin in the same dtype sets the output dtype (or the
    exception class, where torch has no kernel for it); values match the float64 reference on the
    rounded inputs within the dtype's tolerance."""
    args, kwargs = _made(case)
    args = tuple(_cast(a, dtype) for a in args)
    kwargs = {k: _cast(v, dtype) for k, v in kwargs.items()}
    fn = getattr(LF, case.loss)
    twin = registry.get(case.loss).torch_function if case.reference is None else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
        if twin is not None:
            try:
                expected_dtype = twin(*args, **kwargs).dtype
            except (RuntimeError, NotImplementedError) as error:
                with pytest.raises(type(error)):
                    fn(*args, **kwargs)
                return
        else:
            expected_dtype = args[0].dtype
        ours = fn(*args, **kwargs)
        reference = _reference(case)(*(_cast(a, torch.float64) for a in args),
                                     **{k: _cast(v, torch.float64) for k, v in kwargs.items()})
    assert ours.dtype == expected_dtype
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(ours.double(), reference, rtol=rtol, atol=atol)


def _silent(fn, *args, **kwargs):
    """Call under checks("always") and fail on any LossWarning (the healthy twin of a mistake)."""
    with lk.checks("always"), warnings.catch_warnings():
        warnings.simplefilter("error", lk.LossWarning)
        warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL])
def test_every_case_is_silent_under_always_checks(case):
    """The case tables hold healthy inputs: no check may fire on them (no false alarm)."""
    args, kwargs = _made(case)
    _silent(getattr(LF, case.loss), *args, **kwargs)


_NONFINITE = [("input", 0, float("nan"), "nan"), ("input", 0, float("inf"), "inf"),
              ("target", 1, float("nan"), "nan")]


@pytest.mark.parametrize(("what", "position", "value", "word"), _NONFINITE,
                         ids=[f"{w}-{v}" for w, _, _, v in _NONFINITE])
@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL])
def test_nonfinite_values_raise_naming_where(case, what, position, value, word):
    args, kwargs = _made(case)
    if len(args) <= position or not args[position].is_floating_point():
        return  # an integer target cannot hold NaN: nothing to check for this case
    bad = list(args)
    bad[position] = args[position].clone()
    bad[position].view(-1)[0] = value  # the first element: never padding (CTC reads frame 0)
    with lk.checks("always"), pytest.raises(lk.LossInputError) as caught:
        getattr(LF, case.loss)(*bad, **kwargs)
    assert word in str(caught.value).lower() and "Fix:" in str(caught.value), caught.value


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL])
def test_integer_input_raises_naming_the_dtype(case):
    args, kwargs = _made(case)
    bad = ((args[0] * 3).long(), *args[1:])
    with pytest.raises(lk.LossInputError) as caught:
        getattr(LF, case.loss)(*bad, **kwargs)
    assert "int64" in str(caught.value) and "Fix:" in str(caught.value), caught.value


@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL])
def test_tensors_on_another_device_raise(case):
    """The second tensor on another device (the meta device stands in for a GPU on CPU-only
    machines): a LossInputError naming both devices and `.to(`. A 0-d CPU tensor is a scalar
    beside any device in torch, so when the first tensor is 0-d the call must go through."""
    args, kwargs = _made(case)
    other = "cuda" if torch.cuda.is_available() else "meta"
    bad = (args[0], args[1].to(other), *args[2:])
    if args[0].dim() == 0:
        with lk.checks("off"):  # value checks cannot read a meta tensor
            getattr(LF, case.loss)(*bad, **kwargs)
        return
    with pytest.raises(lk.LossInputError) as caught:
        getattr(LF, case.loss)(*bad, **kwargs)
    message = str(caught.value)
    assert "cpu" in message and other in message and ".to(" in message, message


def _on_meta(value):
    return value.to("meta") if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("mode", ["startup", "always"])
@pytest.mark.parametrize("case", [pytest.param(c, id=str(c)) for c in ALL
                                  if registry.get(c.loss).torch_function is not None])
def test_meta_tensors_compute_shapes_as_torch_does(case, mode):
    """Meta tensors (shapes without data: FLOP counts, deferred initialisation) run no value
    check: losskit gives what torch gives, a meta result of torch's shape and dtype, or torch's
    own exception class where torch cannot run on meta."""
    args, kwargs = _made(case)
    args = tuple(_on_meta(a) for a in args)
    kwargs = {k: _on_meta(v) for k, v in kwargs.items()}
    twin = registry.get(case.loss).torch_function
    for reduction in case.reductions:
        try:
            expected = twin(*args, **kwargs, reduction=reduction)
        except Exception as error:  # torch cannot run it on meta: losskit raises the same class
            with lk.checks(mode), pytest.raises(type(error)):
                getattr(LF, case.loss)(*args, **kwargs, reduction=reduction)
            continue
        with lk.checks(mode), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "reduction: 'mean' divides the total loss")
            got = getattr(LF, case.loss)(*args, **kwargs, reduction=reduction)
        assert got.is_meta and got.shape == expected.shape and got.dtype == expected.dtype


@pytest.mark.parametrize("call", ["cross_entropy", "linear_cross_entropy", "z-loss"])
def test_kernel_paths_on_meta_tensors_give_torchs_shape(call):
    """Inputs past the small-call size take losskit's chunked kernels, which read the targets;
    on meta tensors they must give way to the reference, as torch computes a meta scalar."""
    meta = "meta"
    target = torch.empty(4096, dtype=torch.long, device=meta)
    with lk.checks("startup"):
        if call == "linear_cross_entropy":
            hidden, head = torch.empty(4096, 64, device=meta), torch.empty(32000, 64, device=meta)
            got = LF.linear_cross_entropy(hidden, head, target)
            expected = torch.nn.functional.linear_cross_entropy(hidden, head, target)
        else:
            logits = torch.empty(4096, 512, device=meta)
            extras = {"lse_square_scale": 1e-4} if call == "z-loss" else {}
            got = LF.cross_entropy(logits, target, **extras)
            expected = torch.nn.functional.cross_entropy(logits, target)
    assert got.is_meta and got.shape == expected.shape and got.dtype == expected.dtype
