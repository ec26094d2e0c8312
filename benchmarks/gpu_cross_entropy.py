"""GPU benchmark: cross-entropy forward+backward on materialised logits (issue 5, section 4).

Variants, each skipped with a note when its package is missing: torch eager ``F.cross_entropy``,
``torch.compile`` of it (compile time reported apart), Liger-Kernel's ``LigerCrossEntropyLoss``,
losskit's Triton kernel (out of place and in place) and losskit's public ``LF.cross_entropy``
(dispatch and startup checks included). Per variant: a correctness check against float32 torch on
the same inputs, the median fwd+bwd time, the achieved bandwidth as a fraction of the measured
copy bandwidth (floor: one read of the logits plus one write of their gradient), and the peak
memory above the inputs (``torch.cuda.max_memory_allocated``). Rows go to ``benchmarks/results.md``
with the device name. This file also holds the small GPU harness that
``gpu_linear_cross_entropy.py`` imports.

    python benchmarks/gpu_cross_entropy.py             # on an H100/H200 (see gpu_README.md)
    python benchmarks/gpu_cross_entropy.py --dry-run   # on a CPU: tiny shapes, Triton interpreter
"""

from __future__ import annotations

import os
import sys

if "--dry-run" in sys.argv:
    # Must precede the first `import triton` (see losskit/kernels/triton/__init__.py).
    os.environ["TRITON_INTERPRET"] = "1"

import argparse
import contextlib
import datetime
import importlib
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# ----------------------------------------------------------------------------------------------
# Harness (shared with gpu_linear_cross_entropy.py)


@dataclass
class Row:
    """One measured variant."""

    variant: str
    shape: str
    ms: float | None = None
    fraction: float | None = None  # of the relevant measured ceiling
    peak_mib: float | None = None  # above the inputs
    rel_err: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sync_quietly(device: torch.device) -> None:
    """Synchronise after a failed variant, ignoring the error it may still report."""
    with contextlib.suppress(Exception):
        sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """Median wall time of ``fn`` in milliseconds (CUDA events on a GPU), after warm-up."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_mib_above(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak allocated memory during ``fn`` minus what was allocated before it, in MiB."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def copy_bandwidth(device: torch.device, dry: bool) -> float:
    """Measured device-to-device copy bandwidth in bytes/s, counting bytes read plus written."""
    n_bytes = 2**22 if dry else 2**31  # 2 GiB: far beyond L2 (50-60 MB)
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=3, reps=5 if dry else 20)
    return 2 * n_bytes / (ms * 1e-3)


def matmul_rate(device: torch.device, dry: bool) -> float:
    """Measured dense bf16 matmul rate in FLOP/s (8192^3 on a GPU, random data)."""
    n = 256 if dry else 8192
    dtype = torch.float32 if dry else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = median_ms(lambda: a @ b, device, warmup=3, reps=5 if dry else 20)
    return 2 * n**3 / (ms * 1e-3)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a, e = actual.detach().double(), expected.detach().double()
    return float((a - e).norm() / e.norm().clamp_min(1e-30))


def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "-"
    return {
        "device": name, "torch": torch.__version__, "triton": triton_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def append_results(path: pathlib.Path, title: str, env: dict, ceiling: str, rows: list[Row]):
    """Append a titled Markdown table of ``rows`` to ``path`` (append only)."""
    lines = [
        "",
        f"### {title}: {env['device']}, torch {env['torch']}, triton {env['triton']}, "
        f"{env['date']}",
        "",
        f"Ceiling: {ceiling}.",
        "",
        "| variant | shape | median ms | fraction of ceiling | peak MiB above inputs | "
        "rel. error vs fp32 torch | note |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.variant} | {r.shape} | {fmt(r.ms, '.3f')} | {fmt(r.fraction, '.1%')} | "
            f"{fmt(r.peak_mib, '.0f')} | {fmt(r.rel_err, '.1e')} | {r.note} |"
        )
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    print(f"{'variant':60} {'shape':24} {'ms':>9} {'ceiling':>8} {'MiB':>8} {'rel.err':>8}  note")
    for r in rows:
        print(
            f"{r.variant:60} {r.shape:24} {fmt(r.ms, '.3f'):>9} {fmt(r.fraction, '.1%'):>8} "
            f"{fmt(r.peak_mib, '.0f'):>8} {fmt(r.rel_err, '.1e'):>8}  {r.note}"
        )


def common_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, tiny shapes, Triton interpreter: checks the script, not speed")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions (median)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed repetitions first")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--results", type=pathlib.Path, default=None,
                        help="Markdown file to append to (default benchmarks/results.md; a "
                             "temporary file with --dry-run)")
    return parser


def results_path(args) -> pathlib.Path:
    if args.results is not None:
        return args.results
    if args.dry_run:
        return pathlib.Path(tempfile.mkdtemp()) / "results.md"
    return ROOT / "benchmarks" / "results.md"


def optional(import_fn: Callable[[], object]):
    """The imported object, or the ImportError's message."""
    try:
        return import_fn(), None
    except ImportError as err:
        return None, f"not installed ({str(err.name or err).splitlines()[0][:80]})"


# ----------------------------------------------------------------------------------------------
# Cross-entropy variants


def ce_variants(args) -> dict[str, tuple[Callable | None, str]]:
    """name -> (fn(logits, target) -> loss, note); fn None when unavailable."""
    import losskit.functional as LF
    from losskit.kernels import triton as tk

    out: dict[str, tuple[Callable | None, str]] = {
        "torch eager F.cross_entropy": (F.cross_entropy, ""),
    }
    if not args.no_compile:
        backend = "eager" if args.dry_run else "inductor"
        out["torch.compile F.cross_entropy"] = (
            torch.compile(F.cross_entropy, backend=backend, dynamic=False), f"backend={backend}"
        )
    liger, why = optional(lambda: importlib.import_module(
        "liger_kernel.transformers.cross_entropy").LigerCrossEntropyLoss)
    out["Liger-Kernel LigerCrossEntropyLoss"] = (liger() if liger else None, why or "")
    out["losskit triton"] = (tk.cross_entropy, "")
    out["losskit triton inplace"] = (
        lambda x, y: tk.cross_entropy(x, y, inplace=True), "gradient over the logits"
    )
    out["losskit LF.cross_entropy"] = (LF.cross_entropy, "public API: dispatch + checks")
    return out


def run_ce(args, device, copy_bw) -> list[Row]:
    shapes = [(16, 300), (8, 40000)] if args.dry_run else [(8192, 32000), (8192, 128256)]
    dtype = torch.bfloat16
    rows = []
    for n, c in shapes:
        gen = torch.Generator(device=device).manual_seed(0)
        x0 = torch.randn(n, c, device=device, dtype=dtype, generator=gen)  # (N, C)
        y = torch.randint(0, c, (n,), device=device, generator=gen)  # (N,)
        ref_x = x0.float().requires_grad_()
        F.cross_entropy(ref_x, y).backward()
        floor_bytes = 2 * n * c * x0.element_size()  # read logits + write gradient
        shape = f"{n}x{c} {str(dtype).removeprefix('torch.')}"
        for name, (fn, note) in ce_variants(args).items():
            if fn is None:
                rows.append(Row(name, shape, note=note))
                continue
            row = Row(name, shape, note=note)
            x = x0.clone().requires_grad_()

            def step(fn=fn, x=x, y=y):
                # autograd.grad hands back the gradient buffer itself (no accumulation into .grad),
                # as the logits' producer (the LM head matmul) would receive it.
                return torch.autograd.grad(fn(x, y), x)[0]

            try:
                t0 = time.perf_counter()
                step()  # first call: compiles (torch.compile, Triton)
                sync(device)
                if "compile" in name:
                    row.note = f"{note}; compile {time.perf_counter() - t0:.1f} s"
                check_x = x0.clone().requires_grad_()
                loss = fn(check_x, y)
                (grad,) = torch.autograd.grad(loss, check_x)
                row.rel_err = max(rel_err(loss, F.cross_entropy(ref_x.detach(), y)),
                                  rel_err(grad, ref_x.grad))
                del check_x, loss, grad
                row.ms = median_ms(step, device, args.warmup, args.reps)
                row.fraction = floor_bytes / (row.ms * 1e-3) / copy_bw
                row.peak_mib = peak_mib_above(step, device)
            except Exception as err:  # out of memory, API drift, a kernel that fails to compile
                sync_quietly(device)
                row.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
            rows.append(row)
            del x
    return rows


def run_sweep(args, device, copy_bw) -> list[Row]:
    """losskit's CE kernel over its launch constants: the data for choosing them."""
    import itertools

    from losskit.kernels import triton as tk

    ce_mod = sys.modules["losskit.kernels.triton.cross_entropy"]
    names = ("MAX_BLOCK", "TWO_PASS_BLOCK", "NUM_WARPS")
    saved = [getattr(ce_mod, name) for name in names]
    shapes = [(16, 300)] if args.dry_run else [(8192, 32000), (8192, 128256)]
    grid = ([256, 512], [128], [None, 4]) if args.dry_run else (
        [16384, 32768, 65536], [4096, 8192, 16384], [None, 8, 16, 32]
    )
    rows = []
    for n, c in shapes:
        x = torch.randn(n, c, device=device, dtype=torch.bfloat16).requires_grad_()
        y = torch.randint(0, c, (n,), device=device)
        for setting in itertools.product(*grid):
            for name, value in zip(names, setting, strict=True):
                setattr(ce_mod, name, value)
            label = " ".join(f"{k}={v}" for k, v in zip(names, setting, strict=True))
            row = Row(f"losskit triton {label}", f"{n}x{c} bfloat16")
            try:
                row.ms = median_ms(
                    lambda x=x, y=y: torch.autograd.grad(tk.cross_entropy(x, y), x), device,
                    args.warmup, args.reps,
                )
                row.fraction = 2 * x.numel() * x.element_size() / (row.ms * 1e-3) / copy_bw
            except Exception as err:  # e.g. out of registers / shared memory at compile time
                sync_quietly(device)
                row.note = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}"
            rows.append(row)
    for name, value in zip(names, saved, strict=True):
        setattr(ce_mod, name, value)
    return rows


def main() -> None:
    parser = common_args(__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true",
                        help="also time losskit's kernel over its launch constants")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        args.reps, args.warmup = min(args.reps, 2), min(args.warmup, 1)
    elif not torch.cuda.is_available():
        sys.exit("gpu_cross_entropy: no CUDA device. Fix: run on a GPU, or pass --dry-run.")
    env = environment(device)
    copy_bw = copy_bandwidth(device, args.dry_run)
    print(f"{env['device']}: copy bandwidth {copy_bw / 1e9:.1f} GB/s (read + write)")
    rows = run_ce(args, device, copy_bw)
    if args.sweep:
        rows += run_sweep(args, device, copy_bw)
    print_table(rows)
    path = results_path(args)
    append_results(
        path, "GPU cross-entropy fwd+bwd", env,
        f"device-to-device copy {copy_bw / 1e9:.0f} GB/s (read + write); floor = one read of the "
        f"logits + one write of the gradient; target >= 85% and faster than Liger and "
        f"torch.compile", rows,
    )
    print(f"rows appended to {path}")


if __name__ == "__main__":
    main()
