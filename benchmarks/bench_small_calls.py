"""Small calls: every registered loss with a torch twin against that twin, forward+backward.

For each loss of the registry (``losskit.registry.records()``, so families added later are
included), the first case of that loss in ``tests/cases/<family>.py``, converted to float32,
with ``reduction="mean"`` (its first reduction if it has no mean); plus the issue's two sizes,
cross-entropy on (64, 10) and MSE on (64,). One step is one forward
and one backward through the case's differentiable inputs. Target (issue "Every torch.nn loss"):
losskit's step within 1.15x of torch's, after losskit's startup checks.

How it is timed (harness: ``losskit/bench.py``): one thread (``torch.set_num_threads(1)``); each
variant (one loss, one library) runs in its own fresh process, variants taking turns for
``--rounds`` rounds; each process runs the startup calls (losskit), a warm-up, then ``--repeats``
timed repeats of ``--inner`` steps, in process CPU time, which a busy machine disturbs less than
wall-clock time (a preempted process accrues no CPU time). Each round gives one ratio: losskit's
process's median step over the torch process's of the same round, run next to it, so a change
in the machine's speed between rounds cancels. The ratio reported is the median of those
per-round ratios; the table also gives their 25th and 75th percentiles, because one process's
median moves by up to 20% with nothing else running (where its memory lands, the host's load).
A row whose spread straddles the target is not settled by one run. The microsecond columns
(medians over the rounds) and the wall-clock ratio are for orientation.

Run from the repository root (one command; appends its table to benchmarks/results.md):

    python benchmarks/bench_small_calls.py

Options: ``--losses mse_loss,cross_entropy`` (a subset), ``--rounds``, ``--repeats``,
``--inner``, ``--no-append``, ``--note "..."``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # losskit from this checkout; the case tables

import torch  # noqa: E402

from losskit import bench, registry  # noqa: E402

TARGET = 1.15
RESULTS = ROOT / "benchmarks" / "results.md"


def _issue_case(name: str):
    """The issue's own sizes: cross-entropy on (64, 10) logits, MSE on (64,)."""
    gen = torch.Generator().manual_seed(0)
    if name == "cross_entropy":
        return (torch.randn(64, 10, generator=gen), torch.randint(0, 10, (64,), generator=gen)), {}
    return (torch.randn(64, generator=gen), torch.randn(64, generator=gen)), {}


ISSUE_ROWS = {"cross_entropy (64,10)": "cross_entropy", "mse_loss (64,)": "mse_loss"}


def first_case(name: str):
    """The first case of loss ``name`` in its family's case table, or None."""
    import cases

    return next((c for c in cases.ALL if c.loss == name), None)


def _made(row: str):
    """(loss name, args, kwargs, grad_args, reduction, label) of a benchmark row, float32."""
    if row in ISSUE_ROWS:
        name = ISSUE_ROWS[row]
        (args, kwargs), grad_args, reduction = _issue_case(name), (0,), "mean"
    else:
        name, case = row, first_case(row)
        args, kwargs = case.make(torch.Generator().manual_seed(0))
        grad_args = case.grad_args
        reduction = "mean" if "mean" in case.reductions else case.reductions[0]

    def f32(t):
        return t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    args = tuple(f32(a) for a in args)
    kwargs = {k: f32(v) for k, v in kwargs.items()}
    for i in grad_args:
        args[i].requires_grad_()
    shapes = " ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
    return name, args, kwargs, grad_args, reduction, shapes


def build(row: str, library: str) -> bench.Case:
    """One variant, built inside its fresh process: losskit's or torch's function on the row."""
    name, args, kwargs, grad_args, reduction, _ = _made(row)
    record = registry.get(name)
    fn = record.function if library == "losskit" else record.torch_function
    leaves = [args[i] for i in grad_args]

    def step():
        for t in leaves:
            t.grad = None
        out = fn(*args, **kwargs, reduction=reduction)
        (out if out.dim() == 0 else out.sum()).backward()

    if library == "losskit":
        checks = importlib.import_module("losskit.checks")  # `losskit.checks` is also a function
        with torch.no_grad():  # the startup value checks run on these first calls
            for _ in range(checks.STARTUP_CALLS + 1):
                fn(*args, **kwargs, reduction=reduction)
    return bench.Case(step, 0, 0)


def rows_to_run(only: list[str] | None) -> list[str]:
    """The issue's rows, then every registered loss with a torch twin and a case."""
    names = [r.name for r in registry.records() if r.torch_function is not None]
    missing = [n for n in names if first_case(n) is None]
    for n in missing:
        print(f"  {n}: no case in tests/cases; skipped")
    rows = list(ISSUE_ROWS) + [n for n in names if n not in missing]
    if only:
        rows = [r for r in rows if r.split(" ")[0] in only]
    return rows


def spread(per_round: list[float]) -> str:
    """The 25th-75th percentiles of the per-round ratios, ``"1.02-1.09"``."""
    if len(per_round) < 2:
        return "-"
    q1, _, q3 = statistics.quantiles(per_round, n=4, method="inclusive")  # within the data
    return f"{q1:.2f}-{q3:.2f}"


def time_row(row: str, rounds: int, repeats: int, inner: int) -> tuple[bench.Row, bench.Row,
                                                                        list[float]]:
    """Both variants of a row: the medians over every round's repeats, and each round's ratio."""
    variants = {lib: (build, (row, lib)) for lib in ("torch", "losskit")}
    per_round: dict[str, list[bench.Row]] = {"torch": [], "losskit": []}
    for _ in range(rounds):  # one round at a time: the pair of processes gives one ratio
        t, lk = bench.time_fresh(variants, rounds=1, repeats=repeats, warmup=1, inner=inner,
                                 threads=1)
        per_round["torch"].append(t)
        per_round["losskit"].append(lk)
    ratios = [lk.cpu / t.cpu for t, lk in zip(per_round["torch"], per_round["losskit"],
                                               strict=True)]

    def median_row(name: str) -> bench.Row:
        rows = per_round[name]
        return bench.Row(name, statistics.median(r.seconds for r in rows),
                         min(r.best for r in rows), cpu=statistics.median(r.cpu for r in rows))

    return median_row("torch"), median_row("losskit"), ratios


def table(results: list[tuple[str, str, bench.Row, bench.Row, list[float]]]) -> str:
    lines = [
        "| loss | shapes | torch (us, cpu) | losskit (us, cpu) | ratio (cpu, median of rounds) "
        f"| met (<= {TARGET}) | per-round ratio, p25-p75 | ratio (wall) |",
        "| --- | --- | ---: | ---: | ---: | :---: | :---: | ---: |",
    ]
    for row, shapes, t, lk, ratios in results:
        ratio = statistics.median(ratios)
        met = "yes" if ratio <= TARGET else "**no**"
        lines.append(f"| {row} | {shapes} | {t.cpu * 1e6:.1f} | {lk.cpu * 1e6:.1f} | "
                     f"{ratio:.3f} | {met} | {spread(ratios)} | {lk.seconds / t.seconds:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", help="comma-separated loss names (default: every one)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per process")
    parser.add_argument("--inner", type=int, default=100, help="steps per timed repeat")
    parser.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                        help=f"append the table to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--note", default="", help="a line written above the appended table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = (f"### {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: "
              f"small calls, {bench.machine()}")
    print(header, flush=True)
    results = []
    for row in rows_to_run(args.losses.split(",") if args.losses else None):
        t, lk, ratios = time_row(row, args.rounds, args.repeats, args.inner)
        results.append((row, _made(row)[5], t, lk, ratios))
        print(f"  {row}: torch {t.cpu * 1e6:.1f} us, losskit {lk.cpu * 1e6:.1f} us, "
              f"ratio {statistics.median(ratios):.3f} (per round {spread(ratios)})", flush=True)
    text = table(results)
    print(text)
    if args.append:
        with open(RESULTS, "a") as f:
            f.write(f"\n{header}\n\n" + (f"{args.note}\n\n" if args.note else "") + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
