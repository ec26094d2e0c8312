"""What a user's install relies on: the torch floor pyproject.toml declares is the one the import
enforces, an older torch fails at import with one clear line, and the package ships py.typed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import losskit
from losskit._torch_version import TORCH_FLOOR, parse_version, require_torch

ROOT = Path(__file__).resolve().parents[1]


def test_declared_torch_floor_is_the_enforced_one():
    text = (ROOT / "pyproject.toml").read_text()
    declared = re.findall(r'"torch>=(\d+)\.(\d+)"', text)
    assert declared == [tuple(str(n) for n in TORCH_FLOOR)], declared


@pytest.mark.parametrize("version", ["2.4.1", "2.12.1+cu121"])
def test_older_torch_fails_import_with_one_line(version):
    code = f"import torch; torch.__version__ = {version!r}; import losskit"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: losskit needs torch >= 2.13 but found torch " + version)
    assert "Fix: pip install 'torch>=2.13'" in last
    assert "AttributeError" not in run.stderr


@pytest.mark.parametrize("version", ["2.13.0", "2.13.0+cpu", "2.14.0a0+git1234", "3.0.0"])
def test_supported_torch_passes(version):
    require_torch(version)  # does not raise


def test_version_text_without_numbers_is_refused():
    with pytest.raises(ImportError, match=re.escape("cannot read torch.__version__='unknown'")):
        parse_version("unknown")


def test_py_typed_ships_in_the_package():
    assert (Path(losskit.__file__).parent / "py.typed").is_file()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()
