"""The `losskit` command.

Real subprocesses (`python -m losskit ...`) check what only a process shows: the exit code, a
single line on stderr without a traceback, the files a run writes, the printed tables. They cover
every subcommand's happy path and at least one bad-input path of each subcommand, the CSV data
errors among them. Each pays for a fresh `import torch` (seconds on a busy 2-core machine), so one
module fixture runs them all, a few at a time, and each test reads its finished result. The long
table of the remaining bad-input paths calls `losskit.cli.main(argv)` in-process: the same code
path minus the interpreter start, checked for the same exit code and the same one-line stderr.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from losskit.cli import main

SETUPS = str(Path(__file__).parent / "doctor_setups" / "setups.py")
ROOT = str(Path(__file__).parents[1])
PARALLEL = 3  # subprocesses at once: enough to keep 2 cores busy while one waits on its pipes


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: more intra-op threads only contend for the 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def losskit(*args: str, cwd: str | os.PathLike = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "losskit", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_bad_tables(directory: Path) -> dict[str, str]:
    """CSV files that must be refused: a text feature column, an empty file, two rows, latin-1
    text; and a run directory whose checkpoint is junk."""
    words = "a,colour,y\n" + "".join(f"{i},{['red', 'blue'][i % 2]},{i % 2}\n" for i in range(20))
    tables = {"words": words, "empty": "", "tiny": "x,y\n1,0\n2,1\n"}
    for name, text in tables.items():
        (directory / f"{name}.csv").write_text(text)
    drinks = ["caf\u00e9", "th\u00e9"]  # one byte each in latin-1, not valid UTF-8
    latin1 = "a,y\n" + "".join(f"{i},{drinks[i % 2]}\n" for i in range(20))
    (directory / "latin1.csv").write_bytes(latin1.encode("latin-1"))
    (directory / "corrupt").mkdir(exist_ok=True)
    (directory / "corrupt" / "checkpoint.pt").write_text("junk\n")
    names = {name: str(directory / f"{name}.csv") for name in [*tables, "latin1"]}
    return {**names, "corrupt": str(directory / "corrupt")}


# ----------------------------------------------------------------------------------------------
# Subprocesses


BAD_IN_A_PROCESS = {  # name -> (argv, pieces the one-line message must contain)
    "train-text-feature": (["train", "--data", "{words}", "--target", "y"],
                           ["words.csv", "these are not: colour", "Fix: encode text as numbers"]),
    "train-empty-csv": (["train", "--data", "{empty}", "--target", "y"],
                        ["empty.csv", "is empty", "Fix: provide a CSV with a header row"]),
    "train-two-rows": (["train", "--data", "{tiny}", "--target", "y"],
                       ["tiny.csv", "has 2 data rows", "at least 10", "Fix: add rows"]),
    "train-not-utf8": (["train", "--data", "{latin1}", "--target", "y"],
                       ["latin1.csv", "is not UTF-8 text", "Fix: save it as UTF-8"]),
    "compare-unknown-task": (["compare", "--task", "nope", "--losses", "mse,l1"],
                             ["--task 'nope' is not a built-in dataset", "Fix: use one of digits"]),
    "doctor-no-function": (["doctor", "{setups}:nofunc"],
                           ["has no function 'nofunc'", "Fix: define nofunc()", "softmax_head"]),
    "losses-unknown-task": (["losses", "--task", "nope"],
                            ["task='nope' matches no task", "Fix: pass part of one"]),
    "explain-unknown-loss": (["explain", "hubber"],
                             ["no loss named 'hubber'", "Close matches: huber", "Fix: use a name"]),
    "bench-unknown-family": (["bench", "--family", "nope"],
                             ["argument --family: invalid choice: 'nope'", "elementwise",
                              "(see losskit bench --help)"]),
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every subprocess case of this file, PARALLEL at a time; name -> CompletedProcess,
    plus "dir": the directory their files went to."""
    base = tmp_path_factory.mktemp("cli")
    names = {**write_bad_tables(base), "setups": SETUPS}
    argvs = {name: [a.format(**names) for a in argv]
             for name, (argv, _) in BAD_IN_A_PROCESS.items()}
    argvs.update({
        "train": ["train", "--epochs", "2", "--out", str(base / "run"), "--no-progress"],
        "doctor-healthy": ["doctor", SETUPS],
        "doctor-softmax": ["doctor", f"{SETUPS}:softmax_head"],
        "compare": ["compare", "--task", "iris", "--losses", "cross-entropy,focal", "--epochs",
                    "2", "--out", str(base / "cmp"), "--no-progress"],
        "losses": ["losses"],
        "explain": ["explain", "CrossEntropyLoss", "--out", str(base / "exp"), "--format", "svg"],
        "bench": ["bench", "--family", "elementwise", "--repeats", "1", "--warmup", "0",
                  "--no-compile", "--no-memory"],
    })
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(losskit, *argv, cwd=base) for name, argv in argvs.items()}
        return {"dir": base, **{name: f.result() for name, f in futures.items()}}


@pytest.mark.parametrize("name", list(BAD_IN_A_PROCESS))
def test_bad_input_in_a_process_exits_2_with_one_line(name: str, ran: dict) -> None:
    argv, pieces = BAD_IN_A_PROCESS[name]
    result = ran[name]
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"losskit {argv[0]}: error: ")
    for piece in pieces:
        assert piece in result.stderr
    assert result.stdout == ""  # refused before any work started
    assert not (ran["dir"] / "runs").exists()  # and no run directory was made


def test_train_writes_the_run_files(ran: dict) -> None:
    result = ran["train"]
    assert result.returncode == 0, result.stderr
    run = ran["dir"] / "run"
    for name in ("history.csv", "metrics.json", "loss_curve.png", "checkpoint.pt"):
        assert (run / name).stat().st_size > 0, name
    history = rows(run / "history.csv")
    assert [r["epoch"] for r in history] == ["1", "2"]
    assert float(history[-1]["val_accuracy"]) > 0.5  # 10 classes: chance is 0.1
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert "digits" in result.stdout and "cross-entropy" in result.stdout


def test_doctor_exit_code_follows_the_report(ran: dict) -> None:
    healthy = ran["doctor-healthy"]
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "OK" in healthy.stdout and "overfit one batch" in healthy.stdout
    broken = ran["doctor-softmax"]
    assert broken.returncode == 1, broken.stderr
    assert "FAILED" in broken.stdout and "Softmax" in broken.stdout


def test_compare_overlays_every_loss(ran: dict) -> None:
    result = ran["compare"]
    assert result.returncode == 0, result.stderr
    out = ran["dir"] / "cmp"
    summary = rows(out / "compare.csv")
    assert [r["loss"] for r in summary] == ["cross-entropy", "focal"]
    assert all(0 <= float(r["final_val_accuracy"]) <= 1 for r in summary)
    assert all(r["best_epoch"] in ("1", "2") for r in summary)
    assert (out / "compare.png").stat().st_size > 0
    assert (out / "loss-curves.png").stat().st_size > 0  # the compared losses' shapes
    for name in ("cross-entropy", "focal"):
        assert len(rows(out / name / "history.csv")) == 2
    table = [line for line in result.stdout.splitlines() if "│" in line]
    assert any("cross-entropy" in line for line in table)  # one summary row per loss
    assert any("focal" in line for line in table)


def test_losses_prints_the_table(ran: dict) -> None:
    result = ran["losses"]
    assert result.returncode == 0, result.stderr
    for name in ("CrossEntropyLoss", "MSELoss", "HuberLoss", "BCEWithLogitsLoss"):
        assert name in result.stdout
    assert "docs/gallery.md" in result.stdout


def test_explain_prints_the_worked_example_and_writes_the_picture(ran: dict) -> None:
    result = ran["explain"]
    assert result.returncode == 0, result.stderr
    for piece in ("cross_entropy (CrossEntropyLoss", "derivative", "softmax(z)_c - q_c",
                  "convex in the input:  yes", "worked example", "(equal)"):
        assert piece in result.stdout, piece
    picture = ran["dir"] / "exp" / "cross_entropy.svg"
    assert picture.read_text().lstrip().startswith("<?xml")


def test_bench_times_the_elementwise_family(ran: dict) -> None:
    result = ran["bench"]
    assert result.returncode == 0, result.stderr
    for variant in ("mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy"):
        assert f"| {variant} torch |" in result.stdout and f"| {variant} losskit |" in result.stdout
        assert f"| {variant} time vs eager |" in result.stdout  # its ratio row
    assert "torch" in result.stdout.splitlines()[0]  # the header names the machine and version


# ----------------------------------------------------------------------------------------------
# Bad input, in-process


@pytest.fixture
def table(tmp_path: Path) -> str:
    """A small regression CSV: y = 2 a - b + noise."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=80), rng.normal(size=80)
    y = 2 * a - b + 0.05 * rng.normal(size=80)
    path = tmp_path / "table.csv"
    path.write_text("a,b,y\n" + "".join(f"{p},{q},{r}\n" for p, q, r in zip(a, b, y, strict=True)))
    return str(path)


BAD = [
    (["train", "--task", "nope"], "--task 'nope' is not a built-in dataset"),
    (["train", "--loss", "nope"], "--loss 'nope' is not a losskit loss name"),
    (["train", "--loss", "mse"], "--loss 'mse' does not fit the multiclass task"),
    (["train", "--task", "diabetes", "--loss", "cross-entropy"], "use one of mse, l1"),
    (["train", "--data", "{tmp}/missing.csv", "--target", "y"], "does not exist"),
    (["train", "--data", "{table}", "--target", "price"], "'price' is not a column"),
    (["train", "--data", "{table}"], "needs --target COLUMN"),
    (["train", "--target", "y"], "Fix: add --data"),
    (["train", "--data", "{table}", "--target", "y", "--task", "digits"], "kind of task"),
    (["train", "--data", "{words}", "--target", "y"], "these are not: colour"),
    (["train", "--data", "{empty}", "--target", "y"], "is empty. Fix:"),
    (["train", "--data", "{tiny}", "--target", "y"], "has 2 data rows; a table needs at least 10"),
    (["train", "--resume"], "Fix: add --out DIR"),
    (["train", "--device", "potato"], "--device 'potato' is not a device"),
    (["compare", "--task", "diabetes", "--losses", "mse"], "needs two or more"),
    (["compare", "--task", "diabetes", "--losses", "mse,focal"], "--losses 'focal' does not fit"),
    (["compare", "--task", "nope"], "--task 'nope' is not a built-in dataset"),
    (["doctor"], "FILE.py[:FUNC] or --task"),
    (["doctor", "{setups}", "--task", "iris"], "FILE.py[:FUNC] or --task"),
    (["doctor", "{tmp}/missing.py"], "does not exist"),
    (["doctor", "{setups}:nofunc"], "has no function 'nofunc'"),
    (["doctor", "{setups}:NOT_A_FUNCTION"], "non-callable 'NOT_A_FUNCTION'"),
    (["doctor", "{setups}:returns_two_things"], "returned a tuple of 2"),
    (["doctor", "{setups}:raises"], "raised RuntimeError: dataset server unreachable (line"),
    (["doctor", "--task", "nope"], "--task 'nope' is not a built-in dataset"),
    (["doctor", "--task", "iris", "--loss", "mse"], "--loss 'mse' does not fit"),
    (["losses", "--task", "nope"], "matches no task"),
    # Review item 8: each of these used to end in a traceback.
    (["train", "--data", "{latin1}", "--target", "y"], "latin1.csv' is not UTF-8 text"),
    (["train", "--device", "meta"], "--device 'meta': losskit trains on cpu, cuda or mps"),
    (["train", "--device", "mps"], "--device mps: Apple's MPS is not available here"),  # Linux
    (["train", "--out", ""], "--out '' is empty"),
    (["train", "--out", "{table}"], "table.csv' is a file, not a directory"),
    (["train", "--out", "{table}/run"], "cannot be written"),
    (["train", "--out", "/proc/losskit-nope"], "'/proc/losskit-nope' cannot be written"),
    (["train", "--task", "iris", "--resume", "--out", "{corrupt}"],
     "corrupt/checkpoint.pt is not a readable checkpoint"),
    (["bench", "--family", "elementwise", "--repeats", "1", "--warmup", "0", "--no-compile",
      "--no-memory", "--append", "{tmp}/missing/results.md"], "does not exist"),
    # Review item 15: advice that works, and a directory called a directory.
    (["train", "--data", "{table}", "--target", "y", "--task", "sequence"],
     "Fix: one of multiclass, binary, regression, or leave it out"),
    (["doctor", "{tmp}"], "is a directory"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input(argv: list[str], message: str, tmp_path: Path, table: str, capsys) -> None:
    names = {"tmp": tmp_path, "table": table, "setups": SETUPS, **write_bad_tables(tmp_path)}
    argv = [a.format(**names) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"losskit {argv[0]}: error: ")
    assert message in err and "Fix" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv", [["train", "--epochs", "0"], ["train", "--lr", "-1"],
                                  ["doctor", "--overfit-steps", "x"], ["frobnicate"]])
def test_malformed_options_exit_2_with_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "--help" in err


OUT_OF_RANGE = [  # numbers argparse takes as int but the work cannot: refused up front
    (["train", "--seed", "-1"], "argument --seed: '-1' is out of range. Fix: a seed from 0"),
    (["train", "--seed", str(2**32)], f"'{2**32}' is out of range"),
    (["compare", "--seed", "-5"], "argument --seed: '-5' is out of range"),
    (["doctor", "--task", "iris", "--seed", "-1"], "'-1' is out of range"),
    (["bench", "--warmup", "-1"], "argument --warmup: expected an integer >= 0, got '-1'"),
]


@pytest.mark.parametrize(("argv", "message"), OUT_OF_RANGE,
                         ids=[" ".join(a) for a, _ in OUT_OF_RANGE])
def test_out_of_range_numbers_exit_2_with_one_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_train_without_a_finite_validation_loss_fails_in_one_line(tmp_path: Path, capsys) -> None:
    # lr 400 on diabetes: the training loss stays finite, the validation loss overflows, so no
    # epoch is "best". That is a diverged run (exit 1, like NonFiniteLossError), not a crash.
    out = tmp_path / "inf"
    argv = ["train", "--task", "diabetes", "--lr", "400", "--epochs", "1", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("losskit train: error: ")
    assert "no epoch had a finite validation loss" in err and "Fix: lower --lr" in err
    assert (out / "history.csv").exists()  # the run's files are kept


def test_compare_rows_survive_a_loss_without_a_finite_validation_loss() -> None:
    from losskit.cli import _compare_rows
    from losskit.train import History

    diverged = History([{"epoch": 1, "train_loss": 1.0, "val_loss": float("inf")}])
    rows_ = _compare_rows({"mse": diverged}, {"mse": 1.0}, "val_mae")
    assert rows_[0]["best_epoch"] is None and rows_[0]["final_val_loss"] == float("inf")


# ----------------------------------------------------------------------------------------------
# Happy paths, in-process (the subprocess ones are above)


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for command in ("train", "compare", "doctor", "losses", "bench"):
        assert command in printed
    for command in ("train", "compare", "doctor", "losses", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and "usage: losskit" in capsys.readouterr().out


def test_train_on_a_csv_and_resume(tmp_path: Path, table: str, capsys) -> None:
    out = str(tmp_path / "run")
    base = ["train", "--data", table, "--target", "y", "--out", out, "--no-progress",
            "--batch-size", "16"]
    assert main([*base, "--epochs", "1"]) == 0
    first = rows(Path(out) / "history.csv")
    assert main([*base, "--epochs", "2", "--resume"]) == 0
    resumed = rows(Path(out) / "history.csv")
    assert [r["epoch"] for r in resumed] == ["1", "2"]
    assert resumed[0]["train_loss"] == first[0]["train_loss"]  # epoch 1 kept, not re-run
    assert "regression" in capsys.readouterr().out  # task inferred from the float column


def test_train_default_out_is_a_timestamped_run_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--task", "iris", "--epochs", "1", "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name[:8].isdigit() and (run / "history.csv").exists()


def test_doctor_on_a_builtin_task(capsys) -> None:
    assert main(["doctor", "--task", "sequence"]) == 0
    assert "overfit one batch" in capsys.readouterr().out


@pytest.mark.parametrize("func", ["lora", "rezero", "multilabel_batchnorm"])
def test_doctor_passes_zero_initialised_partners_and_batchnorm(func: str, capsys) -> None:
    # LoRA's B = 0 and ReZero's alpha = 0 give exactly-zero first gradients on purpose; 40
    # labels per row leave the overfit check few rows, which BatchNorm must still train on.
    assert main(["doctor", f"{SETUPS}:{func}"]) == 0, capsys.readouterr().out
    out = capsys.readouterr()
    assert "OK" in out.out and "Traceback" not in out.err


def test_doctor_lr_zero_fails(capsys) -> None:
    assert main(["doctor", "--task", "iris", "--lr", "0"]) == 1
    assert "lr=0" in capsys.readouterr().out


def test_losses_for_a_dataset_name_shows_its_task(capsys) -> None:
    assert main(["losses", "--task", "breast-cancer"]) == 0  # a dataset name: its task
    assert "binary" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "pieces"),
    [
        (["--seed", "1"], ["--seed 1 differs", "used --seed 0", "Fix: resume with --seed 0"]),
        (["--batch-size", "16"], ["--batch-size 16 differs", "Fix: resume with --batch-size 64"]),
        (["--loss", "focal"], ["the loss differs", "CrossEntropyLoss() there, FocalLoss() now"]),
        (["--hidden", "8"], ["the model differs", "Fix: resume with the run's --hidden"]),
        (["--task", "wine"], ["the data differs", "train had 120 rows"]),
    ],
)
def test_resume_with_different_settings_exits_2_with_one_line(tmp_path: Path, change, pieces,
                                                               capsys) -> None:
    base = ["train", "--task", "iris", "--out", str(tmp_path), "--no-progress"]
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--epochs", "2", "--resume", *change]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for piece in [*pieces, "or use a new --out"]:
        assert piece in err
    assert len(rows(tmp_path / "history.csv")) == 1


def test_regression_errors_are_in_the_target_unit(tmp_path: Path) -> None:
    from losskit import data
    from losskit.train import make_model

    assert main(["train", "--task", "diabetes", "--epochs", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    d = data.load("diabetes", seed=0)
    model = make_model(d, hidden=128, seed=0)
    model.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"])
    x, y = d.val.tensors
    with torch.no_grad():  # by hand, in the original unit (disease progression score)
        pred = model(x).double() * d.target_std + d.target_mean
    truth = y.double() * d.target_std + d.target_mean
    mae = (pred - truth).abs().mean().item()
    rmse = (pred - truth).pow(2).mean().sqrt().item()
    assert d.target_std > 10 and mae > 10  # not z-scores
    assert final["val_mae"] == pytest.approx(mae, rel=1e-5)
    assert final["val_rmse"] == pytest.approx(rmse, rel=1e-5)


def test_nan_in_the_cli_speaks_flags_and_resume_prints_without_progress(tmp_path: Path,
                                                                        capsys) -> None:
    base = ["train", "--task", "diabetes", "--out", str(tmp_path), "--no-progress"]
    assert main([*base, "--lr", "300", "--epochs", "10"]) == 1  # diverges after epoch 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--resume with a lower --lr continues from it" in err and "lower --lr (now 300)" in err
    assert "amp" not in err and "fit(" not in err
    assert main([*base, "--lr", "0.001", "--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"resuming from {tmp_path / 'checkpoint.pt'} after epoch 1" in out
    assert "lr=0.001 replaces the run's lr=300 from epoch 2 on" in out
    assert [r["lr"] for r in rows(tmp_path / "history.csv")] == ["300.0", "0.001"]


def test_resume_from_a_file_that_is_not_a_checkpoint_exits_2(tmp_path: Path, capsys) -> None:
    base = ["train", "--task", "iris", "--out", str(tmp_path), "--no-progress", "--resume"]
    (tmp_path / "checkpoint.pt").write_text("junk\n")
    assert main([*base, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is not a readable checkpoint" in err
    assert "Fix:" in err
    assert main(["train", "--task", "iris", "--out", str(tmp_path / "ok"), "--no-progress",
                 "--epochs", "1"]) == 0
    (tmp_path / "checkpoint.pt").write_bytes((tmp_path / "ok" / "best.pt").read_bytes())
    capsys.readouterr()
    assert main([*base, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "lacks optimizer" in err and "best.pt holds weights only" in err
