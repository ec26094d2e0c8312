"""One training step of a Hugging Face causal LM, its own loss vs losskit's fuse_loss (CPU).

A 1-layer Llama (hidden 256) with the full vocabulary (32000, and 128256 as in Llama 3) on 2 x 512
tokens, float32: forward and backward of `model(input_ids, labels=input_ids).loss`, either as
transformers computes it (the (B, T, V) logits, upcast, then F.cross_entropy) or after
`losskit.integrations.transformers.fuse_loss(model)` (no logits). Targets (issue 12): time no worse
than 1.1x the model's own loss; extra peak memory above the parameters and their gradients below
the size of the float32 logits.

Run from the repository root: `python benchmarks/bench_transformers.py` (`--help` for options,
`--quick` for small shapes; needs `pip install losskit[transformers]`). Appends its tables to
benchmarks/results.md; the harness is losskit/bench.py.
"""

from __future__ import annotations

import pathlib
import sys

from losskit import bench

if __name__ == "__main__":
    results = pathlib.Path(__file__).resolve().parent / "results.md"
    sys.exit(bench.script("transformers", __doc__.splitlines()[0], str(results)))
