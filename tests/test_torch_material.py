"""losskit against PyTorch's own loss test material (see tests/torch_material.py).

Each case of torch's module_db, op_db and common_nn material for the 22 criteria of torch.nn is
one test, named ``<source>-<loss or function>-<index>-<description>``. A case passes when
losskit agrees with torch (values and gradients in float64, or an exception of torch's class), or
when a documented departure applies and losskit does exactly what the departure says. Counts per
loss: ``python tests/torch_material.py --summary``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_material as tm
from torch import nn

CASES = tm.collect().cases


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_torch_material(case: tm.Case) -> None:
    with tm.value_checks_always():
        try:
            tm.check_case(case)
        except (tm.Missing, tm.Mismatch) as exc:
            pytest.fail(f"{case.loss}: {exc}", pytrace=False)


def test_case_ids_are_unique_and_cover_every_loss() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert {c.loss for c in CASES} == set(tm.LOSSES)


def test_every_source_contributes() -> None:
    assert {c.source for c in CASES} == set(tm.SOURCES)


# --- the harness itself -----------------------------------------------------------------------


def _first(loss: str, source: str) -> tm.Case:
    return next(c for c in CASES if c.loss == loss and c.source == source)


def test_harness_agrees_with_torch_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """With torch as the twin every case agrees; here the first case of each (loss, source)
    pair (the full run is ``LOSSKIT_MATERIAL_TARGET=torch python tests/torch_material.py
    --summary``)."""
    monkeypatch.setenv(tm.TARGET_ENV, "torch")
    seen = set()
    for case in CASES:
        if (case.loss, case.source) in seen:
            continue
        seen.add((case.loss, case.source))
        assert tm.check_case(case).status == "pass", case.id
    assert len(seen) >= 60


def _twin_is(monkeypatch: pytest.MonkeyPatch, fn) -> None:
    monkeypatch.setenv(tm.TARGET_ENV, "torch")
    monkeypatch.setattr(tm, "_twin", lambda case: fn)


def test_harness_catches_a_wrong_value(monkeypatch: pytest.MonkeyPatch) -> None:
    _twin_is(monkeypatch, lambda input, target, **kw: F.mse_loss(input, target, **kw) * (1 + 1e-6))
    with pytest.raises(tm.Mismatch, match="value"):
        tm.check_case(_first("MSELoss", "op"))


def test_harness_catches_a_wrong_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    def same_value_wrong_grad(input, target, **kw):
        return F.mse_loss(input, target, **kw) + 1e-3 * (input - input.detach()).sum()

    _twin_is(monkeypatch, same_value_wrong_grad)
    with pytest.raises(tm.Mismatch, match="gradient of argument 0"):
        tm.check_case(_first("MSELoss", "op"))


def test_harness_catches_a_missing_target_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    case = _first("MSELoss", "op")
    assert case.args[1].requires_grad  # torch's sample asks for the target's gradient too
    _twin_is(monkeypatch, lambda input, target, **kw: F.mse_loss(input, target.detach(), **kw))
    with pytest.raises(tm.Mismatch, match="gradient of argument 1"):
        tm.check_case(case)


def test_harness_catches_the_wrong_exception_class(monkeypatch: pytest.MonkeyPatch) -> None:
    case = _first("HuberLoss", "op-error")
    assert case.error is ValueError

    def raises_type_error(*args, **kwargs):
        raise TypeError("not the class torch raises")

    _twin_is(monkeypatch, raises_type_error)
    with pytest.raises(tm.Mismatch, match="instance of ValueError"):
        tm.check_case(case)


def test_harness_catches_a_silent_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    _twin_is(monkeypatch, lambda *args, **kwargs: torch.zeros(()))
    with pytest.raises(tm.Mismatch, match="instance of"):
        tm.check_case(_first("HuberLoss", "op-error"))


def test_harness_reports_a_missing_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    import losskit

    monkeypatch.setenv(tm.TARGET_ENV, "losskit")
    monkeypatch.delattr(losskit, "MSELoss")
    with pytest.raises(tm.Missing, match="losskit has no MSELoss"):
        tm.check_case(_first("MSELoss", "module"))


def test_common_nn_cases_are_rebuilt_with_their_own_reduction() -> None:
    from torch.testing._internal.common_nn import criterion_tests

    info = next(t for t in criterion_tests if t["fullname"] == "MSELoss_no_batch_dim_none")
    assert info["constructor"]().reduction == "sum"  # torch's late-bound loop variable
    rebuilt = next(c for c in CASES if c.id.endswith("MSELoss_no_batch_dim_none"))
    module = tm._build(nn.MSELoss, rebuilt, cast=True)
    assert module.reduction == "none"
    assert module(*rebuilt.args).shape == (3,)


def test_departure_table_names_the_documented_behaviour() -> None:
    from losskit.checks import LossInputError, LossRuntimeError

    x = torch.randn(4, 1, dtype=torch.float64)
    case = tm.Case("t", "MSELoss", "op", (x, torch.randn(4, dtype=torch.float64)), {})
    assert tm._departure(case, tm.Outcome()).raises is LossInputError
    nan = torch.tensor([1.0, float("nan")], dtype=torch.float64)
    case = tm.Case("t", "L1Loss", "op", (nan, torch.zeros(2, dtype=torch.float64)), {})
    assert tm._departure(case, tm.Outcome()).raises is LossRuntimeError
    ignored = torch.full((3,), -100)
    case = tm.Case("t", "CrossEntropyLoss", "op", (torch.zeros(3, 4, dtype=torch.float64),
                                                   ignored), {})
    assert tm._departure(case, tm.Outcome()).value == "zero"
    case = tm.Case("t", "CrossEntropyLoss", "op", (torch.zeros(3, 4, dtype=torch.float64),
                                                   ignored), {"reduction": "sum"})
    assert tm._departure(case, tm.Outcome()) is None
