"""Repository-wide pytest setup: names every doctest may use."""

import os

import pytest
import torch

# Tests and doctests build transformers models from configs; nothing may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
