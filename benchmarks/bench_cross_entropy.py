"""Cross-entropy forward+backward on materialised logits, [8192, 32000] float32 and bfloat16.

Variants: torch eager `F.cross_entropy`, `torch.compile`d `F.cross_entropy` (compile time apart),
`losskit.functional.cross_entropy` out of place and in place, and the copy floor (one read of the
logits plus one write of a gradient-sized buffer). Targets (issue 4): time <= 0.35x compiled,
<= 0.2x eager, <= 2x the copy floor; extra memory <= 1 logits-sized buffer (out of place),
<= 5% of the logits (in place).

Run from the repository root: `python benchmarks/bench_cross_entropy.py`
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
    sys.exit(bench.script("cross_entropy", __doc__.splitlines()[0], str(results)))
