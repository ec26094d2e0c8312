"""Shared fixtures: seeded random generators. No global state is changed here."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded per test, so every test draws the same numbers in any order."""
    return torch.Generator().manual_seed(1234)
