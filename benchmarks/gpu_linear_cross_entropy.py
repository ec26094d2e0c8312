"""GPU benchmark: linear + cross-entropy forward+backward, N=8192, D=4096, V=128256 bf16 (issue 5).

Variants, each skipped with a note when unavailable: torch eager ``F.cross_entropy(h @ W.T, y)``,
``torch.compile`` of it, torch's own ``F.linear_cross_entropy`` (where this torch has it),
Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``, Cut Cross-Entropy (default gradient
filtering, and ``filter_eps=None`` for exact gradients), and losskit's Triton path. Per variant:
relative error of loss and gradients (hidden, weight) against float32 torch on the same inputs,
median fwd+bwd time, achieved TFLOP/s of the three unavoidable matmuls (``3 * 2 N D V`` FLOPs) as a
fraction of the measured bf16 matmul rate, and peak memory above the inputs. Rows go to
``benchmarks/results.md`` with the device name. Harness: ``gpu_cross_entropy.py``.

    python benchmarks/gpu_linear_cross_entropy.py             # on an H100/H200 (gpu_README.md)
    python benchmarks/gpu_linear_cross_entropy.py --dry-run   # on a CPU: tiny shapes, interpreter
"""

from __future__ import annotations

import os
import sys

if "--dry-run" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first `import triton`

import importlib
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from gpu_cross_entropy import (
    Row,
    append_results,
    common_args,
    environment,
    matmul_rate,
    median_ms,
    optional,
    peak_mib_above,
    print_table,
    rel_err,
    results_path,
    sync,
    sync_quietly,
)


def eager(h, w, y):
    return F.cross_entropy(h @ w.T, y)


def lce_variants(args) -> dict[str, tuple[Callable | None, str]]:
    """name -> (fn(hidden, weight, target) -> loss, note); fn None when unavailable."""
    from losskit.kernels import triton as tk

    out: dict[str, tuple[Callable | None, str]] = {"torch eager h @ W.T + F.cross_entropy":
                                                   (eager, "")}
    if not args.no_compile:
        backend = "eager" if args.dry_run else "inductor"
        out["torch.compile of eager"] = (torch.compile(eager, backend=backend, dynamic=False),
                                         f"backend={backend}")
    if hasattr(F, "linear_cross_entropy"):
        out["torch F.linear_cross_entropy"] = (lambda h, w, y: F.linear_cross_entropy(h, w, y), "")
    else:
        out["torch F.linear_cross_entropy"] = (None, f"not in torch {torch.__version__}")
    liger, why = optional(lambda: importlib.import_module(
        "liger_kernel.transformers.fused_linear_cross_entropy").LigerFusedLinearCrossEntropyLoss)
    liger_fn = liger() if liger else None
    out["Liger-Kernel fused linear CE"] = (
        (lambda h, w, y: liger_fn(w, h, y)) if liger_fn else None, why or ""
    )
    liger_fp32 = liger(accum_dtype=torch.float32) if liger else None  # fp32 dW, as losskit
    out["Liger-Kernel fused linear CE fp32 accum"] = (
        (lambda h, w, y: liger_fp32(w, h, y)) if liger_fp32 else None, why or ""
    )
    cce, why = optional(lambda: importlib.import_module("cut_cross_entropy").linear_cross_entropy)
    out["Cut Cross-Entropy (cce)"] = (
        (lambda h, w, y: cce(h, w, y, impl="cce")) if cce else None,
        why or "default filter_eps: approximate gradients",
    )
    out["Cut Cross-Entropy (cce, exact)"] = (
        (lambda h, w, y: cce(h, w, y, impl="cce", filter_eps=None)) if cce else None, why or ""
    )
    out["losskit triton"] = (tk.linear_cross_entropy, "fp32 grad_weight accumulator")
    lce_mod = sys.modules["losskit.kernels.triton.linear_cross_entropy"]

    def low_memory(h, w, y, chunk_size=None):
        lce_mod.WEIGHT_GRAD_FP32 = False  # read inside the call, where the gradients are made
        try:
            return tk.linear_cross_entropy(h, w, y, chunk_size=chunk_size)
        finally:
            lce_mod.WEIGHT_GRAD_FP32 = True

    out["losskit triton, bf16 grad_weight accum"] = (low_memory, "WEIGHT_GRAD_FP32 = False")
    if args.sweep:
        for chunk in (256, 512, 2048, 4096) if not args.dry_run else (4, 8):
            out[f"losskit triton chunk_size={chunk}"] = (
                lambda h, w, y, chunk=chunk: tk.linear_cross_entropy(h, w, y, chunk_size=chunk),
                "fp32 grad_weight accumulator",
            )
            out[f"losskit triton chunk_size={chunk}, bf16 accum"] = (
                lambda h, w, y, chunk=chunk: low_memory(h, w, y, chunk_size=chunk),
                "WEIGHT_GRAD_FP32 = False",
            )
    return out


def run_lce(args, device, mm_rate) -> list[Row]:
    n, d, v = (16, 32, 300) if args.dry_run else (8192, 4096, 128256)
    dtype = torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(0)
    h0 = torch.randn(n, d, device=device, dtype=dtype, generator=gen)  # (N, D)
    w0 = (torch.randn(v, d, device=device, dtype=dtype, generator=gen) * d**-0.5).to(dtype)
    y = torch.randint(0, v, (n,), device=device, generator=gen)  # (N,)
    y[::7] = -100  # some ignored tokens, as after padding
    ref_h, ref_w = h0.float().requires_grad_(), w0.float().requires_grad_()
    ref_loss = F.cross_entropy(ref_h @ ref_w.T, y)
    ref_gh, ref_gw = torch.autograd.grad(ref_loss, (ref_h, ref_w))
    del ref_h, ref_w
    flops = 3 * 2 * n * d * v
    shape = f"N={n} D={d} V={v} bf16"
    rows = []
    for name, (fn, note) in lce_variants(args).items():
        row = Row(name, shape, note=note)
        rows.append(row)
        if fn is None:
            continue
        h = h0.clone().requires_grad_()
        w = w0.clone().requires_grad_()

        def step(fn=fn, h=h, w=w):
            return torch.autograd.grad(fn(h, w, y), (h, w))

        try:
            t0 = time.perf_counter()
            step()  # first call compiles
            sync(device)
            if "compile" in name:
                row.note = f"{note}; compile {time.perf_counter() - t0:.1f} s"
            loss = fn(h, w, y)
            gh, gw = torch.autograd.grad(loss, (h, w))
            row.rel_err = max(rel_err(loss, ref_loss), rel_err(gh, ref_gh), rel_err(gw, ref_gw))
            del loss, gh, gw
            row.ms = median_ms(step, device, args.warmup, args.reps)
            row.fraction = flops / (row.ms * 1e-3) / mm_rate
            row.peak_mib = peak_mib_above(step, device)
        except Exception as err:  # out of memory, API drift, a kernel that fails to compile
            sync_quietly(device)
            row.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return rows


def main() -> None:
    parser = common_args(__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true",
                        help="also time losskit over chunk sizes, with both accumulator dtypes")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        args.reps, args.warmup = min(args.reps, 2), min(args.warmup, 1)
    elif not torch.cuda.is_available():
        sys.exit("gpu_linear_cross_entropy: no CUDA device. Fix: run on a GPU, or pass --dry-run.")
    env = environment(device)
    rate = matmul_rate(device, args.dry_run)
    print(f"{env['device']}: matmul {rate / 1e12:.3f} TFLOP/s")
    rows = run_lce(args, device, rate)
    print_table(rows)
    path = results_path(args)
    append_results(
        path, "GPU linear+cross-entropy fwd+bwd", env,
        f"bf16 matmul 8192^3 {rate / 1e12:.0f} TFLOP/s; work = the three matmuls 3 * 2 N D V; "
        f"target >= 75%, faster than Liger and CCE, peak memory within 10% of CCE's", rows,
    )
    print(f"rows appended to {path}")


if __name__ == "__main__":
    main()
