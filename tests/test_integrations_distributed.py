"""docs/integrations.md's FSDP2, tensor-parallel and Lightning sections run as written.

Each of these sections holds one complete program. The two-process ones define ``main()`` and
call it under ``if __name__ == "__main__"`` after ``init_process_group``, as ``torchrun`` runs
them; here ``_dist_workers.spawn`` starts two gloo ranks and each runs the page's ``main()``. The
programs check their own numbers (the tensor-parallel one against ``F.cross_entropy`` on the
gathered logits); tests/test_dtensor.py holds the oracle tests of these paths.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import _dist_workers as W
import pytest
import torch
import torch.nn.functional as F

PAGE = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
SECTION = re.compile(r"^## (.+?)\n(.*?)(?=^## |\Z)", re.S | re.M)
PYTHON = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def section_code(title: str) -> str:
    """The one python block of the section titled ``title``."""
    sections = dict(SECTION.findall(PAGE.read_text()))
    blocks = PYTHON.findall(sections[title])
    assert len(blocks) == 1, f"{title}: expected one program, found {len(blocks)} blocks"
    return blocks[0]


def _run_main(rank: int, world: int, code: str, title: str) -> None:
    namespace = {"__name__": "integrations_example"}  # not "__main__": the group exists already
    exec(compile(code, f"{PAGE}:{title}", "exec"), namespace)
    namespace["main"]()


@pytest.mark.parametrize("title", ["FSDP2", "Tensor parallel"])
def test_two_process_section_runs(title):
    code = section_code(title)
    assert 'if __name__ == "__main__":' in code and "def main()" in code
    W.spawn(_run_main, 2, code, title)


def test_lightning_section_runs(tmp_path, monkeypatch):
    pytest.importorskip("lightning", reason="pip install losskit[lightning]")
    monkeypatch.chdir(tmp_path)  # whatever Lightning writes stays out of the checkout
    namespace = {"__name__": "__main__"}
    exec(compile(section_code("Lightning"), f"{PAGE}:Lightning", "exec"), namespace)
    trainer, module = namespace["trainer"], namespace["trainer"].lightning_module
    assert trainer.global_step == 8  # 2 epochs of 4 batches: the loop really trained
    # The page's loss is cross-entropy on the logits it never builds: F.cross_entropy on the
    # materialised logits of the trained model, in float64, over the whole data set.
    tokens, target = (torch.cat(parts) for parts in zip(*namespace["data"], strict=True))
    with torch.no_grad():
        hidden = module.body(tokens).flatten(0, 1).double()
        logits = hidden @ module.loss_fn.linear.weight.double().T  # (512, 1000)
        expected = F.cross_entropy(logits, target.flatten())
        got = module.loss_fn(module.body(tokens).flatten(0, 1), target.flatten())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    assert expected < math.log(namespace["VOCAB"])  # below the uniform guess: it learned
