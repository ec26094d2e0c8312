"""DPO forward+backward from hidden states: chosen and rejected (B, 256, 128), head (32000, 128).

Variants: plain torch written out (`cat(h_w, h_l) @ W.T`, log_softmax, gather, mask, the DPO
formula), losskit on the materialised logits (`cross_entropy(..., reduction="none")` sums, then
`dpo_loss`), and `losskit.functional.linear_preference_loss` (one chunked pass, no logits).
Targets (issue 13): fused time <= 1.3x the plain paths; fused extra memory below one logits
tensor (the (2B, S, V) float32 logits of chosen and rejected together).

Run from the repository root: `python benchmarks/bench_preference.py` (`--help` for options,
`--quick` for small shapes). Appends its tables to benchmarks/results.md; the harness is
losskit/bench.py. The issue's B=8, S=512, H=256 (1 GiB of logits) takes minutes per step on a
shared 2-core machine; the sizes here keep the logits 2x and 4x the fused path's 64 MiB chunk.
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
    # No torch.compile variant; one round of 3 repeats keeps the script near 3 minutes on a
    # quiet 2-core machine.
    parser.set_defaults(family="preference", full=True, compile=False, memory=True,
                        append=str(results), rounds=1, repeats=3)
    sys.exit(bench.run(parser.parse_args()))
