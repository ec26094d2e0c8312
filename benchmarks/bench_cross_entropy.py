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

import argparse
import pathlib
import sys

from losskit import bench

RESULTS = pathlib.Path(__file__).resolve().parent / "results.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    parser.add_argument("--quick", dest="full", action="store_false", help="small shapes")
    parser.set_defaults(
        family="cross_entropy",
        full=True, compile=True, memory=True, append=str(RESULTS),
    )
    return bench.run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
