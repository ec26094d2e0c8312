"""Distillation forward+backward: student hidden [N, 256] + head [V, 256], teacher the same, fp32.

Variants: Hinton's KD written in plain torch (`F.kl_div` on both logits, times T^2),
`losskit.functional.kd_loss` and `jsd` on materialised logits, and the fused
`losskit.functional.linear_kd_loss` (KD and JSD) that never holds either [N, V] logits tensor.
Targets (issue 13): fused time <= 1.3x the plain path; the fused path's extra peak memory below
one [N, V] float32 logits tensor. Sizes are the issue's N=4096 tokens scaled down (N = 1024 and
2048, V = 16000) so that the script runs in about 3 minutes on the shared 2-core machine.

Run from the repository root: `python benchmarks/bench_distillation.py` (`--help` for options,
`--quick` for small shapes). One round of 3 timed repeats per variant unless the options say
otherwise; appends its tables to benchmarks/results.md; the harness is losskit/bench.py.
"""

from __future__ import annotations

import pathlib
import sys

from losskit import bench

if __name__ == "__main__":
    results = pathlib.Path(__file__).resolve().parent / "results.md"
    # Lighter defaults than the other scripts (given options still win: argparse keeps the last).
    sys.argv[1:1] = ["--rounds", "1", "--repeats", "3", "--no-compile"]
    sys.exit(bench.script("distillation", __doc__.splitlines()[0], str(results)))
