"""The ``losskit`` command: one small function per subcommand.

    losskit train                       # MLP on digits with cross-entropy, files under runs/<time>
    losskit train --task diabetes --loss huber --epochs 30
    losskit train --data table.csv --target price
    losskit compare --task regression-outliers --losses mse,l1,huber
    losskit compare --task digits-contrastive   # info_nce, clip_loss, supcon_loss: k-NN accuracy
    losskit doctor my_setup.py[:FUNC]   # FUNC() -> (model, loss_fn, (inputs, targets))
    losskit doctor --task sequence
    losskit losses [--task TASK]
    losskit explain huber [--out DIR] [--format svg]   # formula, derivative, example, HUBER.png
    losskit gallery                     # every loss's curves by family -> docs/gallery.md
    losskit bench ...

Exit codes: 0 success; 1 the work ran but failed (the doctor found a failing check, training
diverged); 2 bad input, with a one-line reason on stderr; 130 interrupted.
Heavy modules (the training loop, torchmetrics, matplotlib, scikit-learn) are imported inside the
subcommands, so ``losskit --help`` costs little more than importing torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_TASK = "digits"


class UsageError(Exception):
    """Bad input on the command line: reported as one line on stderr, exit code 2."""


class RunFailed(Exception):
    """The work ran but failed (e.g. no finite validation loss): one line on stderr, exit 1."""


# ----------------------------------------------------------------------------------------------
# Shared helpers


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


SEED_MAX = 2**32 - 1  # numpy and scikit-learn take seeds in [0, 2**32 - 1]


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range. Fix: a seed from 0 to {SEED_MAX} (2**32 - 1)")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _load_data(args: argparse.Namespace) -> Any:
    """The TaskData named by ``--task`` (a built-in dataset) or ``--data FILE --target COLUMN``."""
    from losskit import data

    if args.data is None:
        if args.target is not None:
            raise UsageError("--target names a column of --data FILE.csv. Fix: add --data.")
        task = args.task or DEFAULT_TASK
        if task not in data.DATASETS:
            raise UsageError(
                f"--task {task!r} is not a built-in dataset. Fix: use one of "
                f"{', '.join(data.DATASETS)}, or --data FILE.csv --target COLUMN."
            )
        return data.load(task, seed=args.seed)
    if args.target is None:
        raise UsageError(f"--data {args.data} needs --target COLUMN. Fix: add --target with the "
                         f"name of the column to predict.")
    if args.task is not None and args.task not in data.CSV_TASKS:
        raise UsageError(
            f"with --data, --task is the kind of task, not a dataset; got {args.task!r}. "
            f"Fix: one of {', '.join(data.CSV_TASKS)}, or leave it out to infer it from the "
            f"column."
        )
    return data.load_csv(args.data, args.target, task=args.task, seed=args.seed)


def _registered(name: str) -> bool:
    from losskit import registry

    try:
        registry.get(name)
    except (KeyError, ValueError):
        return False
    return True


def _check_loss(name: str, task_data: Any, option: str = "--loss") -> None:
    from losskit.train import recipes

    fitting = recipes.LOSSES_BY_TASK[task_data.task]
    if name not in recipes.LOSSES and not _registered(name):
        raise UsageError(
            f"{option} {name!r} is not a losskit loss name. Fix: for the {task_data.task} task of "
            f"{task_data.name!r} use one of {', '.join(fitting)}."
        )
    if name not in fitting:
        raise UsageError(
            f"{option} {name!r} does not fit the {task_data.task} task of {task_data.name!r} "
            f"(it is a losskit loss, for other tasks). Fix: use one of {', '.join(fitting)}."
        )


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text) if text != "auto" else None
    except RuntimeError:
        raise UsageError(
            f"--device {text!r} is not a device. Fix: auto, cpu, cuda or cuda:N."
        ) from None
    if device is None or device.type == "cpu":
        return text
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available here. Fix: --device cpu.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s). Fix: --device cuda:0 .. cuda:"
                         f"{torch.cuda.device_count() - 1}, or auto.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {text}: Apple's MPS is not available here. "
                         f"Fix: --device cpu, or auto.")
    if device.type not in ("cuda", "mps"):
        raise UsageError(f"--device {text!r}: losskit trains on cpu, cuda or mps, not "
                         f"{device.type}. Fix: --device auto, cpu or cuda:N.")
    return text


def _new_run_dir(prefix: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join("runs", prefix + stamp)
    n = 1
    while os.path.exists(path):  # two runs in the same second
        n += 1
        path = os.path.join("runs", f"{prefix}{stamp}-{n}")
    return path


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _out_dir(args: argparse.Namespace, prefix: str = "") -> str:
    if args.out is not None:
        return _writable_dir(args.out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ranks could stamp different seconds
        raise UsageError("under torchrun every rank must use the same directory. Fix: --out DIR.")
    return _new_run_dir(prefix)


def _writable_dir(path: str) -> str:
    """``--out``, created if needed and checked writable, before any work starts."""
    if not path.strip():
        raise UsageError("--out '' is empty. Fix: pass a directory, e.g. --out runs/first.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {path!r} is a file, not a directory. Fix: pass a directory "
                         f"(new or existing), or move the file away.")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"--out {path!r} cannot be written ({exc.strerror or exc}). Fix: pass a "
                         f"directory you can create and write to.") from None
    return path


def _print(text: str = "") -> None:
    """Print on rank 0 only (under torchrun every rank runs this command)."""
    if _rank() != 0:
        return
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(text, markup=False)


def _fit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """fit's keyword arguments from the training options (and the CPU thread count, set here)."""
    import torch

    torch.set_num_threads(args.threads)
    return {
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "device": _device(args.device), "amp": args.amp, "grad_accum_steps": args.grad_accum_steps,
        "progress": not args.no_progress,
    }


def _metric_text(record: dict[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{k} {record[k]:.4f}" for k in keys if isinstance(record.get(k), float))


# ----------------------------------------------------------------------------------------------
# Subcommands


def _check_batch_size(args: argparse.Namespace, task_data: Any) -> None:
    """The contrastive task's losses take their negatives from the batch: 2 rows at least."""
    if task_data.task == "contrastive" and args.batch_size < 2:
        raise UsageError(
            f"--batch-size {args.batch_size}: on the contrastive task {task_data.name} each row's "
            f"negatives are the other rows of its batch, so a batch needs at least 2 rows. Fix: "
            f"--batch-size 2 or more (e.g. the default 64)."
        )


def cmd_train(args: argparse.Namespace) -> int:
    """Train the task's recipe model with one loss; fit writes the run's files to --out."""
    if args.resume and args.out is None:
        raise UsageError("--resume continues the run in --out DIR. Fix: add --out DIR.")
    task_data = _load_data(args)
    from losskit.metrics import MAIN_METRIC
    from losskit.train import fit, recipes

    loss_name = args.loss or recipes.default_loss(task_data.task)
    _check_loss(loss_name, task_data)
    _check_batch_size(args, task_data)
    kwargs = _fit_kwargs(args)
    out = _out_dir(args)
    model = recipes.make_model(task_data, hidden=args.hidden, seed=args.seed)
    _print(f"losskit train: {type(model).__name__} on {task_data.name} ({task_data.task}, "
           f"{len(task_data.train)} train / {len(task_data.val)} val) with {loss_name} -> {out}")
    start = time.perf_counter()
    history = fit(model, recipes.make_loss(loss_name, task_data), task_data.train, task_data.val,
                  task=recipes.fit_task(task_data), metrics=recipes.make_metrics(task_data, model),
                  out=out, resume=args.resume, **kwargs)
    keys = ["val_loss", history.main_metric or f"val_{MAIN_METRIC[task_data.task]}"]
    best, final = history.best, history.final
    if final is None:  # fit runs at least one epoch
        raise RunFailed(f"training recorded no epoch; the run's files are in {out}.")
    if best is None:  # no epoch had a finite validation loss: the run diverged
        raise RunFailed(f"no epoch had a finite validation loss (epoch {final['epoch']}: "
                        f"val_loss {final.get('val_loss')}); the run's files are in {out}. "
                        f"Fix: lower --lr (it is {args.lr:g}) and check the data for extreme "
                        f"values.")
    best_text = f"best epoch {best['epoch']} ({_metric_text(best, keys)})"
    _print(f"done in {time.perf_counter() - start:.1f} s: final {_metric_text(final, keys)}; "
           f"{best_text}")
    if _rank() == 0:
        _print(f"wrote {', '.join(sorted(os.listdir(out)))} to {out}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Train the same model (same initial weights) with each loss; overlay the validation curves."""
    task_data = _load_data(args)
    from losskit.metrics import MAIN_METRIC
    from losskit.train import fit, recipes

    names = [n.strip() for n in (args.losses or "").split(",") if n.strip()]
    names = list(dict.fromkeys(names or recipes.LOSSES_BY_TASK[task_data.task]))
    for name in names:
        _check_loss(name, task_data, "--losses")
    _check_batch_size(args, task_data)
    if len(names) < 2:
        raise UsageError(f"--losses {args.losses!r} names one loss; compare needs two or more. "
                         f"Fix: e.g. --losses {','.join(recipes.LOSSES_BY_TASK[task_data.task])}.")
    kwargs = _fit_kwargs(args)
    out = _out_dir(args, "compare-")
    histories, seconds = {}, {}
    for i, name in enumerate(names, 1):
        _print(f"[{i}/{len(names)}] {name} on {task_data.name} -> {os.path.join(out, name)}")
        model = recipes.make_model(task_data, hidden=args.hidden, seed=args.seed)
        start = time.perf_counter()
        histories[name] = fit(model, recipes.make_loss(name, task_data), task_data.train,
                              task_data.val, task=recipes.fit_task(task_data),
                              out=os.path.join(out, name),
                              metrics=recipes.make_metrics(task_data, model), **kwargs)
        seconds[name] = time.perf_counter() - start
    first = histories[names[0]]
    main = first.main_metric or f"val_{MAIN_METRIC[task_data.task]}"
    if _rank() == 0:
        rows = _compare_rows(histories, seconds, main)
        _write_compare(out, rows, histories, main, task_data.name)
        _write_loss_curves(out, names)
        _print_compare(rows, task_data.name)
        _print(f"wrote compare.png, loss-curves.png, compare.csv and one run directory per loss "
               f"to {out}")
    return EXIT_OK


def _compare_rows(histories: dict, seconds: dict, main: str) -> list[dict[str, Any]]:
    rows = []
    for name, h in histories.items():
        best = h.best or {}  # lowest val_loss: each loss picks its own best epoch by its own
        # measure; {} when no epoch had a finite val_loss (that loss diverged)
        rows.append({"loss": name, "best_epoch": best.get("epoch"), f"best_{main}": best.get(main),
                     f"final_{main}": h.final.get(main), "final_val_loss": h.final.get("val_loss"),
                     "seconds": round(seconds[name], 2)})
    return rows


def _write_compare(out: str, rows: list, histories: dict, main: str, dataset: str) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with open(os.path.join(out, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in histories.items():
        epochs = h.column("epoch")
        ax_loss.plot(epochs, h.column("val_loss"), marker=".", label=name)
        ax_metric.plot(epochs, h.column(main), marker=".", label=name)
    ax_loss.set(title="validation loss (each in its own units)", xlabel="epoch", yscale="log")
    ax_metric.set(title=f"{main} (comparable across losses)", xlabel="epoch")
    for ax in (ax_loss, ax_metric):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"losskit compare on {dataset}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare.png"), dpi=110)
    plt.close(fig)


def _write_loss_curves(out: str, names: list[str]) -> None:
    """loss-curves.png beside compare.png: each compared loss and its gradient (as in
    ``losskit explain``), so a training curve can be read against the shape that made it."""
    from losskit import explain

    records = [explain.resolve(name) for name in names]
    records = [r for r in records if r.explain is not None]
    if records:
        explain.plot_side_by_side(records, os.path.join(out, "loss-curves.png"),
                                  title="the compared losses (top) and their gradients (bottom)")


def _print_compare(rows: list, dataset: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{dataset}: the same model trained with each loss")
    for key in rows[0]:  # spaces, so a narrow terminal wraps a header between words
        table.add_column(key.replace("_", " "), justify="left" if key == "loss" else "right",
                         overflow="fold")
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
        table.add_row(*cells[:-1], f"{row['seconds']:.1f}")
    Console().print(table)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run lk.doctor on a setup from a file or on a built-in task; exit 1 when a check fails."""
    if (args.setup is None) == (args.task is None):
        raise UsageError("doctor takes a setup file FILE.py[:FUNC] or --task T (one of them). "
                         "Fix: e.g. losskit doctor my_setup.py, or losskit doctor --task digits.")
    from losskit.doctor import doctor

    if args.setup is not None:
        model, loss_fn, batch = _load_setup(args.setup)
    else:
        model, loss_fn, batch = _builtin_setup(args)
    report = doctor(model, loss_fn, batch, overfit_steps=args.overfit_steps, lr=args.lr,
                    seed=args.seed)
    report.print()
    return EXIT_OK if report.ok else EXIT_FAILED


def _builtin_setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from losskit import data
    from losskit.train import recipes

    if args.task not in data.DATASETS:
        raise UsageError(f"--task {args.task!r} is not a built-in dataset. "
                         f"Fix: use one of {', '.join(data.DATASETS)}.")
    task_data = data.load(args.task, seed=args.seed)
    name = args.loss or recipes.default_loss(task_data.task)
    _check_loss(name, task_data)
    _check_batch_size(args, task_data)
    gap = recipes.doctor_gap(name, task_data)
    if gap is not None:
        others = [n for n in recipes.LOSSES_BY_TASK[task_data.task]
                  if recipes.doctor_gap(n, task_data) is None]
        raise UsageError(f"doctor --task {args.task} --loss {name} is not supported: {gap}. "
                         f"Fix: check --loss {' or '.join(others)}, or train it with losskit "
                         f"train --task {args.task} --loss {name}.")
    model = recipes.make_model(task_data, seed=args.seed)
    return model, recipes.make_loss(name, task_data), task_data.train[: args.batch_size]


def _load_setup(spec: str) -> tuple[Any, Any, Any]:
    """Import FILE.py and call FUNC (default ``setup``); check it returns the three things."""
    from torch import nn

    path, _, func = spec.rpartition(":")
    if not path or not func.isidentifier():  # no ":FUNC" (a colon may belong to the path)
        path, func = spec, "setup"
    if os.path.isdir(path):
        raise UsageError(f"setup file {path!r} is a directory. Fix: pass the Python file in it "
                         f"that defines {func}() returning (model, loss_fn, (inputs, targets)).")
    if not os.path.isfile(path):
        raise UsageError(f"setup file {path!r} does not exist. Fix: pass a Python file that "
                         f"defines {func}() returning (model, loss_fn, (inputs, targets)).")
    name = "losskit_doctor_setup_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"setup file {path!r} cannot be imported. Fix: give it a .py name.")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickle look it up there
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # its sibling imports work
    try:
        loader = module_spec.loader
        _user_code(lambda: loader.exec_module(module), f"importing {path}", path)
        fn = getattr(module, func, None)
        if not callable(fn):
            found = sorted(n for n, v in vars(module).items() if not n.startswith("_")
                           and callable(v) and getattr(v, "__module__", None) == name)
            what = "has no function" if fn is None else "has a non-callable"
            raise UsageError(f"{path} {what} {func!r}. Fix: define {func}() returning (model, "
                             f"loss_fn, (inputs, targets)), or pick one with {path}:FUNC "
                             f"(functions there: {', '.join(found) or 'none'}).")
        result = _user_code(fn, f"{func}() in {path}", path)
    finally:
        sys.path.remove(os.path.dirname(os.path.abspath(path)))
    ok = isinstance(result, (tuple, list)) and len(result) == 3
    if not ok or not isinstance(result[0], nn.Module) or not callable(result[1]):
        size = f" of {len(result)}" if isinstance(result, (tuple, list)) else ""
        got = f"a {type(result).__name__}{size}"
        raise UsageError(f"{func}() in {path} returned {got}; expected (model: nn.Module, "
                         f"loss_fn: callable, (inputs, targets)). Fix: return those three.")
    batch = result[2]
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise UsageError(f"{func}() in {path}: the third item must be the batch (inputs, "
                         f"targets); got a {type(batch).__name__}. Fix: return (model, loss_fn, "
                         f"(inputs, targets)).")
    return result[0], result[1], batch


def _user_code(fn: Callable[[], Any], what: str, path: str) -> Any:
    """Run the user's code; an exception becomes one line naming the user's line that raised."""
    try:
        return fn()
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if os.path.abspath(f.filename) == os.path.abspath(path)]
        where = f" (line {frames[-1].lineno})" if frames else ""
        raise UsageError(f"{what} raised {type(exc).__name__}: {exc}{where}. Fix: correct that "
                         f"code; the error is the setup's own, losskit had not started.") from exc


def _print_registry(catalog: Any) -> None:
    """The table in a wide terminal; one wrapped paragraph per loss in a narrow one, so no
    name is broken mid-word."""
    import shutil
    import textwrap

    from rich.console import Console

    width = shutil.get_terminal_size((80, 24)).columns
    if width >= catalog.table_min_width(catalog.registry_table()):
        Console(width=width).print(catalog.registry_table(width))
        return
    for line in catalog.format_registry().splitlines():
        print(textwrap.fill(line, width=width - 1, subsequent_indent="    ",
                            break_long_words=False, break_on_hyphens=False))


def cmd_losses(args: argparse.Namespace) -> int:
    """Print the table of which loss fits which task (--all: every loss losskit has)."""
    from losskit import catalog, data

    if args.all:
        _print_registry(catalog)
        _print_wrapped(GALLERY_NOTE)
        return 0
    task = args.task
    if task in data.DATASETS:  # a dataset name: its task kind
        task = data.TASK_OF[task]
    task = {"multiclass": "multi-class", "multilabel": "multi-label",
            "language-modelling": "language"}.get(task, task)
    try:
        catalog.select(task)  # raises for a task the table does not know
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    catalog.print_table(task=task)
    _print_wrapped(GALLERY_NOTE)
    return EXIT_OK


def _print_wrapped(text: str) -> None:
    """``text`` wrapped to the terminal between words (COLUMNS when set, as rich reads it)."""
    import shutil
    import textwrap

    width = shutil.get_terminal_size((80, 24)).columns
    print(textwrap.fill(text, width=max(width - 1, 20), break_long_words=False,
                        break_on_hyphens=False))


GALLERY_NOTE = ("Pictures of every loss and its gradient, by family: docs/gallery.md "
                "(`losskit explain LOSS` for one loss).")


def cmd_explain(args: argparse.Namespace) -> int:
    """Print a loss's formula, derivative, properties and a worked example; write LOSS.png (the
    loss and its gradient against the residual, logit or margin, its options overlaid)."""
    from losskit import explain

    try:
        record = explain.resolve(args.loss)
        text, example = explain.explain_text(record.name)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    print(text)
    if not example.matches:
        raise RunFailed(f"{record.name}: the worked example by hand differs from the loss's own "
                        f"output. Fix: report it; one of the two is wrong.")
    if not args.no_plot:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"{record.name}.{args.format}")
        explain.plot_curves(record, path=path, fmt=args.format)
        _print(f"wrote {path}")
    return EXIT_OK


def cmd_gallery(args: argparse.Namespace) -> int:
    """Draw every registered loss and its gradient, one picture per family, and the docs page
    linking them (from the loss registry, never by hand)."""
    from losskit import explain

    page = args.page
    images = args.out or os.path.join(os.path.dirname(page) or ".", explain.GALLERY_IMAGES)
    try:
        paths = explain.write_gallery(images, page, notes=explain.GALLERY_NOTES)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    _print(f"wrote {len(paths)} pictures to {images} and the page {page}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    """Hand over to the kernels benchmark (losskit.bench)."""
    from losskit import bench

    if args.append is not None:  # checked before minutes of benchmarking, not after
        folder = os.path.dirname(os.path.abspath(args.append))
        if not os.path.isdir(folder):
            raise UsageError(f"--append {args.append!r}: the directory {folder!r} does not exist. "
                             f"Fix: create it first, or append to a file in an existing one.")
        if os.path.isdir(args.append) or not os.access(
            args.append if os.path.exists(args.append) else folder, os.W_OK
        ):
            raise UsageError(f"--append {args.append!r} is not a writable file. Fix: pass a "
                             f"Markdown file path you can write, e.g. benchmarks/results.md.")

    return int(bench.run(args) or 0)


# ----------------------------------------------------------------------------------------------
# The parser


def _training_options(p: argparse.ArgumentParser, *, epochs: int) -> None:
    p.add_argument("--task", help=f"built-in dataset (default {DEFAULT_TASK}); with --data, the "
                                  f"task kind (multiclass, binary, regression)")
    p.add_argument("--data", metavar="FILE.csv", help="train on your own CSV table instead")
    p.add_argument("--target", metavar="COLUMN", help="the column of --data to predict")
    p.add_argument("--epochs", type=_positive_int, default=epochs, help="(default %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="(default %(default)s)")
    p.add_argument("--lr", type=_non_negative_float, default=1e-3,
                   help="AdamW learning rate (default %(default)s)")
    p.add_argument("--seed", type=_seed, default=0,
                   help="data split, init and shuffling (default 0)")
    p.add_argument("--hidden", type=_positive_int, default=128, help="layer width (default 128)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast where supported")
    p.add_argument("--grad-accum-steps", type=_positive_int, default=1, metavar="K",
                   help="micro-batches per optimizer step (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch table")
    # The recipe models are small: on CPU, one thread per process avoids synchronisation that
    # costs more than it saves (several times slower on a busy machine). torchrun's default too.
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="CPU threads for torch (default 1: the recipe models are small)")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``losskit train: error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(*, with_bench: bool = False) -> argparse.ArgumentParser:
    """The ``losskit`` parser. The bench options come from losskit.bench, imported only when the
    command line asks for ``bench`` (``with_bench``), to keep ``losskit --help`` light."""
    from losskit import __version__

    parser = _Parser(
        prog="losskit", description="Train, compare and check losses on built-in or CSV data.")
    parser.add_argument("--version", action="version", version=f"losskit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model on a task with one loss",
                       description=cmd_train.__doc__)
    _training_options(p, epochs=20)
    p.add_argument("--loss", help="loss name (default: the task's usual one); see `losskit losses`")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out DIR")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("compare", help="train with several losses, overlay the curves",
                       description=cmd_compare.__doc__)
    _training_options(p, epochs=20)
    p.add_argument("--losses", metavar="A,B,C",
                   help="comma-separated loss names (default: every loss that fits the task)")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/compare-<time>)")
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("doctor", help="check a training setup in seconds",
                       description=cmd_doctor.__doc__)
    p.add_argument("setup", nargs="?", metavar="FILE.py[:FUNC]",
                   help="file whose FUNC (default setup) returns (model, loss_fn, "
                        "(inputs, targets))")
    p.add_argument("--task", help="check the built-in setup of this dataset instead")
    p.add_argument("--loss", help="with --task: the loss to check (default: the task's usual)")
    p.add_argument("--batch-size", type=_positive_int, default=256,
                   help="with --task: rows in the checked batch (default 256)")
    p.add_argument("--overfit-steps", type=_positive_int, default=150,
                   help="Adam steps allowed for the overfit check (default 150)")
    p.add_argument("--lr", type=_non_negative_float, default=1e-2,
                   help="Adam learning rate of the overfit check (default 0.01)")
    p.add_argument("--seed", type=_seed, default=0, help="(default 0)")
    p.set_defaults(run=cmd_doctor)

    p = sub.add_parser("losses", help="which loss fits which task",
                       description=cmd_losses.__doc__)
    p.add_argument("--task", help="only this task (part of its name, or a built-in dataset)")
    p.add_argument("--all", action="store_true",
                   help="every loss losskit has, by family, with its input and target kinds")
    p.set_defaults(run=cmd_losses)

    p = sub.add_parser("explain", help="a loss's formula, derivative, worked example and curves",
                       description=cmd_explain.__doc__)
    p.add_argument("loss", metavar="LOSS", help="function, Module or CLI name (cross_entropy, "
                                                "CrossEntropyLoss, cross-entropy)")
    p.add_argument("--out", metavar="DIR", default=".", help="where LOSS.png goes (default .)")
    p.add_argument("--format", choices=("png", "svg"), default="png", help="(default png)")
    p.add_argument("--no-plot", action="store_true", help="print only, write no picture")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser("gallery", help="every loss's curves by family, and docs/gallery.md",
                       description=cmd_gallery.__doc__)
    p.add_argument("--page", metavar="FILE.md", default=os.path.join("docs", "gallery.md"),
                   help="the Markdown page to write (default docs/gallery.md)")
    p.add_argument("--out", metavar="DIR",
                   help="picture directory (default images/gallery beside the page)")
    p.set_defaults(run=cmd_gallery)

    p = sub.add_parser("bench", help="benchmark the loss kernels",
                       description=cmd_bench.__doc__)
    if with_bench:
        from losskit import bench

        bench.add_arguments(p)
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``losskit`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_bench = next((a for a in argv if not a.startswith("-")), None) == "bench"
    try:
        parser = build_parser(with_bench=wants_bench)
    except ImportError as exc:
        print(f"losskit bench: error: the benchmark is unavailable ({exc}).", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)  # exits 2 with a usage line on malformed options
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"losskit {args.command}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        code, text = _classify(exc)
        if code is None:
            raise
        print(f"losskit {args.command}: error: {' '.join(text.split())}", file=sys.stderr)
        return code


def _classify(exc: BaseException) -> tuple[int | None, str]:
    """Which exceptions are the user's input (exit 2) or a failed run (exit 1); others are bugs
    and keep their traceback."""
    from losskit.checks import LossInputError
    from losskit.data import DataError

    if isinstance(exc, (UsageError, DataError, LossInputError)):
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, RunFailed):
        return EXIT_FAILED, str(exc)
    train = sys.modules.get("losskit.train")  # imported if the failure came from fit
    if train is not None and isinstance(exc, train.NonFiniteLossError):
        return EXIT_FAILED, exc.text(cli=True)
    if train is not None and isinstance(exc, train.checkpoint.CheckpointError):
        return EXIT_BAD_INPUT, f"--resume: {exc}"
    if train is not None and isinstance(exc, train.ResumeMismatchError):
        return EXIT_BAD_INPUT, _resume_mismatch_text(exc)
    return None, ""


_RESUME_FLAGS = {"seed": "--seed", "batch_size": "--batch-size",
                 "grad_accum_steps": "--grad-accum-steps", "task": "--task", "loss": "--loss"}


def _resume_mismatch_text(exc: Any) -> str:
    """fit's ResumeMismatchError in the command line's words (the flags, not fit's arguments)."""
    from losskit.train.resume import _loss_text

    where = f"the run in {exc.out}"
    if exc.setting == "model":
        return (f"--resume: the model differs from {where} ({exc.detail}); {exc.why}. Fix: resume "
                f"with the run's --hidden and --task/--data, or use a new --out.")
    if exc.setting == "data":
        return (f"--resume: the data differs from {where} ({exc.detail}); {exc.why}. Fix: resume "
                f"with the run's --task/--data/--target and --seed, or use a new --out.")
    if exc.detail and exc.setting == "batch_size":  # a global batch over a different world size
        return (f"--resume: --batch-size differs from {where}: {exc.detail}; {exc.why}. Fix: "
                f"resume with the same global batch (--batch-size times the ranks), or use a new "
                f"--out.")
    if exc.setting == "loss":
        before, now = _loss_text(exc.stored, exc.new), _loss_text(exc.new, exc.stored)
        return (f"--resume: the loss differs from {where} ({before} there, {now} now); "
                f"{exc.why}. Fix: resume with the run's --loss, or use a new --out.")
    flag, before, now = _RESUME_FLAGS[exc.setting], exc.stored, exc.new
    return (f"--resume: {flag} {now} differs from {where}, which used {flag} {before}; "
            f"{exc.why}. Fix: resume with {flag} {before}, or use a new --out.")


if __name__ == "__main__":
    raise SystemExit(main())
