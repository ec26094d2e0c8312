"""Crash-safe checkpoints: atomic writes, ``weights_only`` loads and RNG state capture.

A checkpoint is a dict of tensors and plain Python containers only, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs when a file is opened).
:func:`save_atomic` writes to a temporary file in the target's directory, fsyncs it, and renames it
over the target with ``os.replace`` (atomic on POSIX and Windows): a crash at any moment leaves
either the previous complete file or the new complete file, never a torn one.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "c.pt"
>>> save_atomic({"epoch": 3, "w": torch.ones(2)}, p)
>>> load(p)["epoch"], sorted(q.name for q in p.parent.iterdir())
(3, ['c.pt'])
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from typing import Any, cast

import numpy as np
import torch

FORMAT = 1  # bump when the checkpoint layout changes


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)  # make the rename itself durable


def _fsync_directory(directory: str) -> None:
    if os.name != "posix":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(directory: str | os.PathLike[str], name: str) -> None:
    """Delete temp files an interrupted :func:`save_atomic` of ``name`` left in ``directory``."""
    prefix = f".{name}."
    for entry in os.scandir(directory):
        if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
            os.remove(entry.path)


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of the expected kind."""


def load(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; check it holds the ``required`` keys.

    Raises :class:`CheckpointError` for a file torch cannot read or that lacks a required key.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, EOFError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(
            f"{os.fspath(path)} is not a readable checkpoint ({type(e).__name__}: "
            f"{str(e)[:120]}). Fix: delete it to start afresh, or point at the run's directory."
        ) from e
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{os.fspath(path)} lacks {', '.join(missing)}: it is not a training checkpoint "
            f"(best.pt holds weights only). Fix: restore the run's checkpoint.pt, or start a new "
            f"run."
        )
    return state


def rng_state() -> dict[str, Any]:
    """The state of every random generator training touches (torch CPU and CUDA, numpy, random).

    numpy's and Python's states are converted to tensors and lists so ``weights_only`` loads them.
    """
    # The legacy form (the default): a tuple, not the dict of get_state(legacy=False).
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = legacy
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        saved = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(saved)


def _to_lists(obj: Any) -> Any:
    return [_to_lists(v) for v in obj] if isinstance(obj, tuple) else obj


def _to_tuples(obj: Any) -> Any:
    return tuple(_to_tuples(v) for v in obj) if isinstance(obj, list) else obj
