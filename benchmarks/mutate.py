"""Mutation testing of losskit's core with cosmic-ray, within a time budget (`make mutate`).

Not part of the test suite or CI: it runs the suite hundreds of times. For each module in
:data:`TARGETS` it makes a cosmic-ray session (one mutant per work item), skips the operators in
:data:`EXCLUDED_OPERATORS`, keeps a seeded random sample of at most ``--per-module`` mutants, and
runs them with that module's tests, ``--workers`` modules at a time, each worker in its own copy of
the repository (cosmic-ray writes each mutant into the source file it mutates). Survivors, with
their diffs, go to ``--report`` (Markdown). Sessions live under ``--work`` and are resumed: a run
cut off by the budget goes on where it stopped next time (``--fresh`` starts over).

Why cosmic-ray rather than mutmut 3: cosmic-ray writes the mutant into the real source file and
runs an ordinary test command in a fresh process per mutant. mutmut 3 instead rewrites every
function into a trampoline inside a copied tree, which changes what the doctor and the
dispatchers look at (function ``__name__`` / ``__module__``, ``torch.autograd.Function``
staticmethods, ``torch.compile`` graphs), and shares one forked pytest process between mutants,
which carries the checks' call counters and torch's global state from one mutant to the next.

A seed names the same mutants on every fresh run of the same source (the sample is drawn over
the mutants' names, ``path:line operator #n``). ``--replay REPORT`` runs only the survivors that
an earlier report lists (with ``--fresh``): the check that new tests kill them.

Usage: python benchmarks/mutate.py [--budget SECONDS] [--per-module N] [--only PATH ...]
       [--seed N] [--fresh] [--replay REPORT]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The core, in one list: (module, the pytest arguments that exercise it: test files, -k filters).
# When a module moves (the losses/*.py and checks/ reorganisation), edit its path here and
# nothing else.
TARGETS: list[tuple[str, list[str]]] = [
    ("losskit/_reduction.py", ["tests/test_oracle.py", "tests/test_gradcheck.py",
                               "tests/test_guardrails.py"]),
    ("losskit/losses/regression.py", ["tests/test_oracle.py", "tests/test_shape_fixes.py",
                                      "tests/test_guardrails.py",
                                      "tests/test_mutation_survivors.py", "tests/test_cases.py",
                                      "tests/test_explain.py", "-k",
                                      "'mse or l1 or huber or cosh or quantile or regression'"]),
    ("losskit/losses/binary.py", ["tests/test_oracle.py", "tests/test_guardrails.py",
                                  "tests/test_mutation_survivors.py",
                                  "tests/test_cases.py", "tests/test_explain.py", "-k",
                                  "'binary or bce'"]),
    ("losskit/losses/classification.py", ["tests/test_oracle.py", "tests/test_gradcheck.py",
                                          "tests/test_guardrails.py", "tests/test_autocast.py",
                                          "tests/test_hostile_inputs.py",
                                          "tests/test_mutation_survivors.py",
                                          "tests/test_guardrails_corpus.py",
                                          "tests/test_fast_paths.py",
                                          "tests/test_small_calls.py", "tests/test_explain.py",
                                          "-k", "'not test_explain.py or classification'"]),
    ("losskit/losses/ranking.py", ["tests/test_ranking.py", "tests/test_fast_paths.py",
                                   "tests/test_explain.py",
                                   "-k", "'not test_explain.py or ranking'"]),
    ("losskit/losses/margin.py", ["tests/test_margin.py", "tests/test_fast_paths.py",
                                  "tests/test_explain.py",
                                  "tests/test_mutation_survivors.py",
                                  "-k", "'not test_explain.py or margin'"]),
    ("losskit/losses/likelihood.py", ["tests/test_likelihood.py",
                                      "tests/test_mutation_survivors.py",
                                      "tests/test_fast_paths.py", "tests/test_explain.py",
                                      "-k", "'not test_explain.py or likelihood'"]),
    ("losskit/losses/sequence.py", ["tests/test_sequence.py", "tests/test_fast_paths.py",
                                    "tests/test_explain.py",
                                    "tests/test_mutation_survivors.py",
                                    "-k", "'not test_explain.py or sequence'"]),
    ("losskit/losses/linear_cross_entropy.py", ["tests/test_linear_cross_entropy.py",
                                                "tests/test_fast_paths.py",
                                                "tests/test_explain.py",
                                                "tests/test_mutation_survivors.py",
                                                "-k", "'not test_explain.py or linear_cross'"]),
    ("losskit/checks/__init__.py", ["tests/test_guardrails.py", "tests/test_thresholds.py",
                                    "tests/test_shape_fixes.py", "tests/test_guardrails_corpus.py",
                                    "tests/test_oracle.py", "tests/test_mutation_survivors.py"]),
    ("losskit/kernels/cross_entropy.py", ["tests/test_kernels_cross_entropy.py",
                                          "tests/test_kernels_autograd.py",
                                          "tests/test_hostile_inputs.py"]),
    ("losskit/kernels/linear_cross_entropy.py", ["tests/test_kernels_linear_cross_entropy.py",
                                                 "tests/test_autocast.py"]),
    ("losskit/distributed/normalise.py", ["tests/test_distributed.py",
                                          "tests/test_mutation_survivors.py",
                                          "tests/test_review_round.py"]),
    ("losskit/distributed/dtensor.py", ["tests/test_dtensor.py",
                                        "tests/test_integrations_distributed.py",
                                        "tests/test_mutation_survivors.py",
                                        "-k", "'not test_mutation_survivors.py or dtensor'"]),
    ("losskit/train/resume.py", ["tests/test_fit.py", "tests/test_mutation_survivors.py", "-k",
                                 "'resume or global or settings'"]),
    ("losskit/doctor.py", ["tests/test_doctor.py", "tests/test_thresholds.py",
                           "tests/test_review_round.py", "tests/test_mutation_survivors.py",
                           "-k", "'not test_mutation_survivors.py or doctor'"]),
    ("losskit/metrics.py", ["tests/test_metrics.py", "tests/test_fit.py", "tests/test_recipes.py",
                            "tests/test_mutation_survivors.py",
                            "-k", "'not test_mutation_survivors.py or metrics'"]),
]

# Operators left out: swaps to operators that no formula here uses (bit operations, shifts,
# floor division, modulo, power), identity and membership swaps, and the variable and exception
# replacers, whose mutants are nearly all crashes or equivalents.
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_\w+_(BitOr|BitAnd|BitXor|LShift|RShift|FloorDiv|Mod|Pow)",
    r"core/ReplaceBinaryOperator_(BitOr|BitAnd|BitXor|LShift|RShift|FloorDiv|Mod|Pow)_\w+",
    r"core/ReplaceComparisonOperator_\w+_(Is|IsNot)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot)_(Lt|LtE|Gt|GtE)",
    r"core/ReplaceUnaryOperator_\w*Invert\w*",
    r"core/VariableReplacer", r"core/VariableInserter", r"core/ExceptionReplacer",
    r"core/RemoveDecorator",
]
TIMEOUT_S = 300  # per mutant (and the baseline); a mutant that hangs counts as killed


def _config(module: str, tests: list[str]) -> str:
    command = (f"env OMP_NUM_THREADS=1 {PYTHON} -m pytest -x -q -p no:cacheprovider "
               f"-W error::losskit.checks.LossWarning {module} {' '.join(tests)}")
    excluded = ", ".join(f"'{e}'" for e in EXCLUDED_OPERATORS)
    return (f"[cosmic-ray]\nmodule-path = \"{module}\"\ntimeout = {TIMEOUT_S}\n"
            f"excluded-modules = []\ntest-command = \"{command}\"\n\n"
            f"[cosmic-ray.distributor]\nname = \"local\"\n\n"
            f"[cosmic-ray.filters.operators-filter]\nexclude-operators = [{excluded}]\n")


def _where(item) -> str:
    """A mutant's stable name, as the report's headings print it: ``path:line operator #n``."""
    m = item.mutations[0]
    return f"{m.module_path}:{m.start_pos[0]} {m.operator_name} #{m.occurrence}"


def _replayed(report: Path) -> set[str]:
    """The survivors' names (``### path:line operator #n`` headings) of an earlier report."""
    return {line[4:].strip() for line in report.read_text().splitlines()
            if line.startswith("### ")}


def _sample(session: Path, keep: int, seed: int, replay: set[str] | None = None) -> None:
    """Mark all but ``keep`` seeded-random pending mutants as skipped (with ``replay``: all but
    the mutants it names).

    The shuffle runs over the mutants' stable names, not cosmic-ray's job ids (random UUIDs made
    afresh by every ``init``), so a seed draws the same mutants in every fresh session of the
    same source."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        names = {item.job_id: _where(item) for item in db.pending_work_items}
        pending = sorted(names, key=names.get)
        done = db.num_results - sum(1 for _, r in db.results if r.worker_outcome
                                    == WorkerOutcome.SKIPPED)
        random.Random(seed).shuffle(pending)
        if replay is None:
            dropped = pending[max(0, keep - done):]
        else:
            dropped = [job_id for job_id in pending if names[job_id] not in replay]
        for job_id in dropped:
            db.set_result(job_id, WorkResult(output="not sampled",
                                             worker_outcome=WorkerOutcome.SKIPPED))


def _prepare(name: str, module: str, tests: list[str], work: Path, args) -> Path:
    cfg, session = work / f"{name}.toml", work / f"{name}.sqlite"
    cfg.write_text(_config(module, tests))
    if not session.exists():
        bin_dir = Path(PYTHON).parent
        subprocess.run([bin_dir / "cosmic-ray", "init", cfg, session], cwd=ROOT, check=True)
        subprocess.run([bin_dir / "cr-filter-operators", session, cfg], cwd=ROOT, check=True)
        _sample(session, args.per_module, args.seed,
                None if args.replay is None else _replayed(args.replay))
    return cfg


def _export_head(tree: Path) -> None:
    """The committed tree (HEAD), not the working tree: an edit in progress (or a mutant applied
    by hand) must not become every mutant's baseline."""
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)


def _run(jobs: list[tuple[str, Path, Path]], deadline: float, log) -> None:
    """One worker: a private copy of the repository, its modules one after the other."""
    with tempfile.TemporaryDirectory(prefix="losskit-mutate-") as tmp:
        tree = Path(tmp) / "repo"
        _export_head(tree)
        for name, cfg, session in jobs:
            left = deadline - time.monotonic()
            if left < 30:
                log(f"{name}: budget spent, left pending")
                continue
            start = time.monotonic()
            baseline = subprocess.run([Path(PYTHON).parent / "cosmic-ray", "baseline", cfg],
                                      cwd=tree, capture_output=True, text=True, check=False)
            if baseline.returncode != 0:  # the unmutated tests must pass, or nothing is learnt
                log(f"{name}: the tests fail without any mutation, skipped:\n{baseline.stdout}")
                continue
            try:
                subprocess.run([Path(PYTHON).parent / "cosmic-ray", "exec", cfg, session],
                               cwd=tree, timeout=left, capture_output=True, check=False)
            except subprocess.TimeoutExpired:
                log(f"{name}: stopped by the budget (resumes next run)")
            log(f"{name}: {time.monotonic() - start:.0f} s")


def _results(session: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = {"killed": 0, "survived": 0, "pending": 0}
    survivors = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        counts["pending"] = db.num_work_items - db.num_results
        items = {item.job_id: item for item in db.work_items}
        for job_id, result in db.results:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.worker_outcome == WorkerOutcome.NORMAL and (
                result.test_outcome == TestOutcome.SURVIVED
            ):
                counts["survived"] += 1
                survivors.append((_where(items[job_id]), result.diff or ""))
            else:  # killed by a test, a crash, an abnormal exit or the timeout
                counts["killed"] += 1
    return counts, survivors


def _report(path: Path, rows, seconds: float, args) -> None:
    lines = [
        "# Mutation testing: surviving mutants",
        "",
        f"`make mutate` (benchmarks/mutate.py, cosmic-ray), {time.strftime('%Y-%m-%d')}, "
        f"{args.workers} workers, budget {args.budget} s, at most {args.per_module} sampled "
        f"mutants per module (seed {args.seed}); this run took {seconds:.0f} s.",
        "",
        "| module | killed | survived | pending | score |",
        "| --- | --- | --- | --- | --- |",
    ]
    total_k = total_s = 0
    for name, counts, _ in rows:
        k, s = counts["killed"], counts["survived"]
        total_k, total_s = total_k + k, total_s + s
        score = f"{100 * k / (k + s):.0f}%" if k + s else "-"
        lines.append(f"| {name} | {k} | {s} | {counts['pending']} | {score} |")
    if total_k + total_s:
        lines.append(f"| **all** | {total_k} | {total_s} | | "
                     f"**{100 * total_k / (total_k + total_s):.0f}%** |")
    lines += ["", "## Survivors", ""]
    for _name, _, survivors in rows:
        for where, diff in survivors:
            lines += [f"### {where}", "", "```diff", diff.strip(), "```", ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=1800, help="seconds for the whole run")
    parser.add_argument("--per-module", type=int, default=40, help="sampled mutants per module")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="module paths to run")
    parser.add_argument("--work", type=Path, default=ROOT / "mutants")
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "mutation.md")
    parser.add_argument("--fresh", action="store_true", help="drop earlier sessions first")
    parser.add_argument("--replay", type=Path, default=None,
                        help="run only the survivors listed in this earlier report")
    args = parser.parse_args(argv)
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    targets = [(m, t) for m, t in TARGETS if args.only is None or m in args.only]
    jobs = []
    for module, tests in targets:
        name = module.removeprefix("losskit/").removesuffix(".py").replace("/", ".")
        cfg = _prepare(name, module, tests, args.work, args)
        jobs.append((name, cfg, args.work / f"{name}.sqlite"))
    start = time.monotonic()
    deadline = start + args.budget
    shares = [jobs[i:: args.workers] for i in range(args.workers)]
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda share: _run(share, deadline, print), shares))
    rows = [(name, *_results(session)) for name, _, session in jobs]
    _report(args.report, rows, time.monotonic() - start, args)
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
