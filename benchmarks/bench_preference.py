"""DPO forward+backward from hidden states: chosen and rejected (B, 256, 256), head (32000, 256).

Variants: plain torch written out (`cat(h_w, h_l) @ W.T`, log_softmax, gather, mask, the DPO
formula), losskit on the materialised logits (`cross_entropy(..., reduction="none")` sums, then
`dpo_loss`), and `losskit.functional.linear_preference_loss` (one chunked pass, no logits).
Targets (issue 13): fused time <= 1.3x the plain paths; fused extra memory below one logits
tensor (the (2B, S, V) float32 logits of chosen and rejected together).

Run from the repository root: `python benchmarks/bench_preference.py` (`--help` for options,
`--quick` for small shapes). Appends its tables to benchmarks/results.md; the harness is
losskit/bench.py. B=8, S=512 (the issue's size) takes several minutes per step set on a shared
2-core machine: pass it through `python -m losskit.bench --family preference --full` after
editing the sizes, where there is time.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from losskit import bench

if __name__ == "__main__":
    results = pathlib.Path(__file__).resolve().parent / "results.md"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    parser.add_argument("--quick", dest="full", action="store_false", help="small shapes")
    # No torch.compile variant; 2 rounds of 3 repeats keep the script under 3 minutes.
    parser.set_defaults(family="preference", full=True, compile=False, memory=True,
                        append=str(results), rounds=2, repeats=3)
    sys.exit(bench.run(parser.parse_args()))
