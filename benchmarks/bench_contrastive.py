"""Contrastive (NT-Xent) forward+backward, z1, z2 [B, 128] float32, B = 1024, 2048, 4096.

Variants: NT-Xent written by hand in plain torch (the (2B, 2B) matrix, then cross-entropy),
`losskit.functional.info_nce` (plain path) and `info_nce(..., chunk_size=512)` (tiles, no
(2B, 2B) matrix). Targets (issue 13): chunked time <= 1.3x plain; chunked extra memory flat in B
(compare the MiB column across sizes) and a fraction of one (2B, 2B) matrix.

Run from the repository root: `python benchmarks/bench_contrastive.py` (`--quick` for B = 512,
1024). One round of 3 repeats by default (the whole script stays under 3 minutes on a shared
2-core machine); `--rounds`, `--repeats` override. Appends its tables to benchmarks/results.md;
the harness is losskit/bench.py.
"""

from __future__ import annotations

import pathlib
import sys

from losskit import bench

if __name__ == "__main__":
    results = pathlib.Path(__file__).resolve().parent / "results.md"
    sys.argv[1:1] = ["--rounds", "1", "--repeats", "3"]  # later options override these
    sys.exit(bench.script("contrastive", __doc__.splitlines()[0], str(results)))
