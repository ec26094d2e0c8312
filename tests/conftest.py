"""Shared fixtures: seeded random generators. No global state is changed here."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded per test, so every test draws the same numbers in any order."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_process_mesh():
    """A one-rank gloo group (in-memory store, no port) and its CPU mesh; torn down after."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh

    assert not dist.is_initialized(), "a process group leaked from another test"
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield DeviceMesh("cpu", [0])
    finally:
        dist.destroy_process_group()
