"""Elementwise losses (MSE, L1, Huber, BCE) forward+backward on 2e7 float32 elements.

Each losskit function against its `torch.nn.functional` twin, after losskit's startup value checks
are done. Target (issue 4): within 1.1x of torch eager.

Run from the repository root: `python benchmarks/bench_elementwise.py`
(`--help` for options, `--quick` for small shapes). Appends its tables to
benchmarks/results.md; the harness is
losskit/bench.py.
"""

from __future__ import annotations

import pathlib
import sys

from losskit import bench

if __name__ == "__main__":
    results = pathlib.Path(__file__).resolve().parent / "results.md"
    sys.exit(bench.script("elementwise", __doc__.splitlines()[0], str(results)))
