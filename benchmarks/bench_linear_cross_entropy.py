"""Linear + cross-entropy forward+backward, hidden [4096, 512], weight [32000, 512], float32.

Variants: eager `F.cross_entropy(h @ W.T, y)`, its `torch.compile` (compile time apart), torch
2.13's chunked `F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())`,
`losskit.functional.linear_cross_entropy`, and the three bare matmuls (`h @ W.T`, `G @ W`,
`G.T @ h`). Targets (issue 4): time <= 1.15x the three matmuls; extra memory above inputs and
gradients <= torch's chunked version.

Run from the repository root: `python benchmarks/bench_linear_cross_entropy.py`
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
    sys.exit(bench.script("linear_cross_entropy", __doc__.splitlines()[0], str(results)))
