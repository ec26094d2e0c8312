"""Every public name of ``losskit`` and ``losskit.functional`` carries a runnable example.

The public API is what the two ``__all__`` lists export (docs/design.md). For each
exported class or function this checks that its own docstring (not one inherited from a base class)
holds a ``>>>`` example, and that the doctest finder pytest uses (``--doctest-modules``) collects
that example from the module the object is defined in, so the example runs in the suite. A new
public name without an example fails here.
"""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import losskit
import losskit.functional

MODULES = (losskit, losskit.functional)

# Exported names that are not classes or functions, so they have no example of their own.
NOT_CALLABLE = {
    ("losskit", "functional"): "a module; each function in its __all__ is checked on its own",
    ("losskit", "registry"): "a module; its public functions carry their own doctests",
}


def _public() -> list:
    return [
        pytest.param(module, name, id=f"{module.__name__}.{name}")
        for module in MODULES
        for name in module.__all__
        if (module.__name__, name) not in NOT_CALLABLE
    ]


def test_all_lists_resolve_and_exclusions_are_real():
    """Every exported name resolves (lazy ones through ``__getattr__``), and each excluded name is
    still exported and really is not a class or function (a stale exclusion would hide a gap)."""
    for module in MODULES:
        assert len(module.__all__) == len(set(module.__all__)), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"
    for (module_name, name), reason in NOT_CALLABLE.items():
        obj = getattr(importlib.import_module(module_name), name)
        assert name in importlib.import_module(module_name).__all__, (name, reason)
        assert not (inspect.isclass(obj) or inspect.isroutine(obj)), (name, reason)


@pytest.mark.parametrize(("module", "name"), _public())
def test_public_name_has_a_collected_example(module, name):
    obj = getattr(module, name)  # resolves lazy attributes (lk.fit, lk.History, ...)
    assert inspect.isclass(obj) or inspect.isroutine(obj), (
        f"{module.__name__}.{name} is neither a class nor a function: add it to NOT_CALLABLE "
        f"with a reason, or give it a docstring example"
    )
    doc = obj.__doc__ or ""  # a class's own __doc__: base-class docstrings do not count
    assert ">>>" in doc, f"{module.__name__}.{name} has no runnable '>>>' example in its docstring"

    home = importlib.import_module(obj.__module__)
    assert home.__name__.startswith("losskit"), (name, home.__name__)
    found = {t.name: t for t in doctest.DocTestFinder(exclude_empty=True).find(home)}
    qualified = f"{home.__name__}.{obj.__qualname__}"
    assert qualified in found, f"{qualified}: its example is not collected by --doctest-modules"
    assert found[qualified].examples, qualified
