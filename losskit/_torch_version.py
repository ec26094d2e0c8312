"""The oldest torch losskit supports, checked once when ``losskit`` is imported.

losskit matches torch 2.13's loss semantics and calls APIs that older releases lack
(``torch.nn.LinearCrossEntropyLoss`` among them), and CI tests 2.13 only, so that is the floor
``pyproject.toml`` declares. An older torch gets one ``ImportError`` line at ``import losskit``
instead of an ``AttributeError`` from deep inside a loss.

>>> parse_version("2.13.0+cpu")
(2, 13)
>>> parse_version("2.14.0.dev20270101")
(2, 14)
"""

from __future__ import annotations

import re

TORCH_FLOOR = (2, 13)  # keep equal to `torch>=` in pyproject.toml (tests/test_packaging.py)


def parse_version(text: str) -> tuple[int, int]:
    """``(major, minor)`` of a torch version string such as ``"2.13.0+cu126"``."""
    found = re.match(r"(\d+)\.(\d+)", text)
    if found is None:
        raise ImportError(
            f"losskit cannot read torch.__version__={text!r}: expected 'MAJOR.MINOR...'. "
            f"Fix: install a released torch >= {TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}."
        )
    return int(found.group(1)), int(found.group(2))


def require_torch(version: str) -> None:
    """Raise ``ImportError`` (one line: what was found, what is needed, the fix) if ``version``
    is older than :data:`TORCH_FLOOR`."""
    if parse_version(version) < TORCH_FLOOR:
        floor = f"{TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}"
        raise ImportError(
            f"losskit needs torch >= {floor} but found torch {version}: losskit follows torch "
            f"{floor}'s loss API and is tested on it only. Fix: pip install 'torch>={floor}'."
        )
