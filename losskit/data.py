"""Built-in datasets and CSV loading, ready for :func:`losskit.fit`.

Nothing is downloaded: the classic tables are the ones bundled with scikit-learn, the rest are
synthetic and generated from ``seed``. Every loader returns a :class:`TaskData` with a
deterministic train/validation split (stratified for classification) and features standardised
with the mean and standard deviation of the *training* split only, so no validation statistics
leak into training.

Target layouts (what the loss in :mod:`losskit.train.recipes` expects):

================== ================================ ==========================================
task               input                            target
================== ================================ ==========================================
multiclass         ``(N, F)`` float32               ``(N,)`` int64 class indices
binary             ``(N, F)`` float32               ``(N, 1)`` float32 in {0, 1}
multilabel         ``(N, F)`` float32               ``(N, L)`` float32 in {0, 1}
regression         ``(N, F)`` float32               ``(N, 1)`` float32
language-modelling ``(N, T)`` int64 tokens (0 pad)  ``(N, T)`` int64 next tokens, -100 on padding
contrastive        ``(N, 2, F)`` float32 views      ``(N,)`` int64 class indices (SupCon uses them)
================== ================================ ==========================================

>>> d = load("iris")
>>> d.task, d.num_features, d.num_outputs, len(d.train), len(d.val)
('multiclass', 4, 3, 120, 30)
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

TASKS = ("multiclass", "binary", "multilabel", "regression", "language-modelling", "contrastive")
CSV_TASKS = ("multiclass", "binary", "regression")  # the task kinds load_csv builds
IGNORE_INDEX = -100  # target of padded positions in the sequence task (cross-entropy's default)
PAD_TOKEN = 0  # input token of padded positions in the sequence task
# Fewer rows train "successfully" on noise: a validation split of 1 row gives an accuracy of 0 or
# 1 and metrics that are undefined without both classes (torchmetrics then warns).
MIN_ROWS = 10  # data rows a CSV table needs
MIN_SPLIT_ROWS = 2  # rows each of the train and validation splits needs


class DataError(ValueError):
    """The data or the arguments describing it cannot be used for training."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """The data file does not exist (also a ``FileNotFoundError``)."""


@dataclass(frozen=True)
class TaskData:
    """A task: its train and validation splits and what a model for it needs to know.

    Attributes:
        name: the dataset name (one of :data:`DATASETS`) or the CSV path.
        task: one of :data:`TASKS`.
        train, val: ``TensorDataset(inputs, targets)`` in the layouts of the module table (the
            contrastive task's train set is a :class:`TwoViewDigits`, drawing fresh views).
        num_features: input width; the vocabulary size for ``language-modelling``.
        num_outputs: classes (multiclass), labels (multilabel), 1 (binary, regression), or the
            vocabulary size (language-modelling): the width of the model's output.
        feature_names: one name per input column (empty for sequences).
        class_names: the original label of each class index (classification), else empty.
        ignore_index: the target value that marks padding (language-modelling).
        target_mean, target_std: regression targets were standardised as ``(y - mean) / std``;
            multiply errors by ``target_std`` to read them in the original unit.
    """

    name: str
    task: str
    train: TensorDataset | Dataset
    val: TensorDataset
    num_features: int
    num_outputs: int
    feature_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    ignore_index: int = IGNORE_INDEX
    target_mean: float = 0.0
    target_std: float = 1.0
    description: str = field(default="", compare=False)


# ---------------------------------------------------------------------------------------------
# Shared helpers: argument checks, split, standardisation.


def _check_val_fraction(val_fraction: float) -> None:
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise DataError(
            f"val_fraction={val_fraction!r} must be a number strictly between 0 and 1 (the share "
            f"of rows held out for validation). Fix: e.g. val_fraction=0.2."
        )


def _split(
    n: int, seed: int, val_fraction: float, labels: np.ndarray | None, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/val row indices, stratified by ``labels`` when each class has 2+ rows."""
    from sklearn.model_selection import train_test_split

    n_val = math.ceil(n * val_fraction)
    if min(n_val, n - n_val) < MIN_SPLIT_ROWS:
        raise DataError(
            f"{name!r} has {n} rows: val_fraction={val_fraction} splits them {n - n_val} train / "
            f"{n_val} val, but each split needs at least {MIN_SPLIT_ROWS} rows. Fix: provide more "
            f"rows (ideally hundreds) or move val_fraction towards 0.5."
        )
    stratify = None
    if labels is not None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
            stratify = labels
    idx = np.arange(n)
    train_idx, val_idx = train_test_split(
        idx, test_size=n_val, random_state=seed, shuffle=True, stratify=stratify
    )
    return np.sort(train_idx), np.sort(val_idx)


def _standardise(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale columns to zero mean and unit variance using the training split's statistics."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant column stays constant (0) instead of 0/0
    return (x_train - mean) / std, (x_val - mean) / std


def _tabular(
    name: str,
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    val_fraction: float,
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...] = (),
    scale_target: bool = True,
    train_transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    description: str = "",
) -> TaskData:
    """Split, standardise and convert a feature table to tensors in the module's layouts."""
    _check_val_fraction(val_fraction)
    stratify = y if task in ("multiclass", "binary") else None
    tr, va = _split(len(x), seed, val_fraction, stratify, name)
    x_tr, x_va = _standardise(x[tr].astype(np.float64), x[va].astype(np.float64))
    y_tr, y_va = y[tr], y[va]
    if train_transform is not None:  # e.g. corrupt training targets only
        y_tr = train_transform(y_tr, np.random.default_rng(seed))
    mean, std = 0.0, 1.0
    if task == "multiclass":
        t_tr = torch.as_tensor(y_tr, dtype=torch.int64)  # (N,)
        t_va = torch.as_tensor(y_va, dtype=torch.int64)
        num_outputs = len(class_names) if class_names else int(y.max()) + 1
    elif task == "binary":
        t_tr = torch.as_tensor(y_tr, dtype=torch.float32).reshape(-1, 1)  # (N, 1)
        t_va = torch.as_tensor(y_va, dtype=torch.float32).reshape(-1, 1)
        num_outputs = 1
    elif task == "multilabel":
        t_tr = torch.as_tensor(y_tr, dtype=torch.float32)  # (N, L)
        t_va = torch.as_tensor(y_va, dtype=torch.float32)
        num_outputs = y.shape[1]
    else:  # regression
        y_tr, y_va = y_tr.astype(np.float64), y_va.astype(np.float64)
        if scale_target:
            mean, std = float(y_tr.mean()), float(y_tr.std()) or 1.0
        t_tr = torch.as_tensor((y_tr - mean) / std, dtype=torch.float32).reshape(-1, 1)  # (N, 1)
        t_va = torch.as_tensor((y_va - mean) / std, dtype=torch.float32).reshape(-1, 1)
        num_outputs = 1
    return TaskData(
        name=name,
        task=task,
        train=TensorDataset(torch.as_tensor(x_tr, dtype=torch.float32), t_tr),
        val=TensorDataset(torch.as_tensor(x_va, dtype=torch.float32), t_va),
        num_features=x.shape[1],
        num_outputs=num_outputs,
        feature_names=feature_names,
        class_names=class_names,
        target_mean=mean,
        target_std=std,
        description=description,
    )


# ---------------------------------------------------------------------------------------------
# The built-in datasets.


def _sklearn(loader_name: str, task: str) -> Callable[..., TaskData]:
    def build(name: str, seed: int, val_fraction: float) -> TaskData:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        names = tuple(str(n) for n in bunch.target_names) if task == "multiclass" else ()
        return _tabular(
            name, task, np.asarray(bunch.data), np.asarray(bunch.target), seed=seed,
            val_fraction=val_fraction, class_names=names,
            feature_names=tuple(str(f) for f in getattr(bunch, "feature_names", ())) or tuple(
                f"x{i}" for i in range(bunch.data.shape[1])),
            description=f"scikit-learn {loader_name}()",
        )

    return build


def _multilabel(name: str, seed: int, val_fraction: float) -> TaskData:
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(
        n_samples=1000, n_features=20, n_classes=5, n_labels=2, random_state=seed
    )
    return _tabular(
        name, "multilabel", x, y, seed=seed, val_fraction=val_fraction,
        feature_names=tuple(f"x{i}" for i in range(20)),
        description="sklearn make_multilabel_classification: 1000 rows, 20 features, 5 labels",
    )


def _corrupt_targets(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift 10% of the training targets by huge amounts (+-20 to 50, the clean std is ~1)."""
    y = y.copy()
    hit = rng.random(len(y)) < 0.10
    y[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(20.0, 50.0, hit.sum())
    return y


def _regression_outliers(name: str, seed: int, val_fraction: float) -> TaskData:
    """Linear target with small noise; 10% of training targets are gross outliers, val is clean.

    MSE chases the outliers, L1 and Huber mostly ignore them, so their validation MAE differs.
    The target is not standardised (its scale is already ~1 and the outliers would dominate std).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1000, 10))
    w = rng.normal(size=10) / np.sqrt(10)
    y = x @ w + 0.1 * rng.normal(size=1000)
    return _tabular(
        name, "regression", x, y, seed=seed, val_fraction=val_fraction, scale_target=False,
        feature_names=tuple(f"x{i}" for i in range(10)), train_transform=_corrupt_targets,
        description="y = x @ w + noise; 10% of training targets shifted by 20-50",
    )


SEQ_VOCAB = 16  # token 0 is padding, tokens 1..15 are real
SEQ_LEN = 32


def _sequence(name: str, seed: int, val_fraction: float) -> TaskData:
    """Next-token prediction on variable-length sequences, padded to ``SEQ_LEN``.

    Rule: after token t comes ``t % 15 + 1`` (count up, wrapping 15 -> 1) with probability 0.9,
    else a uniformly random real token. The best possible token accuracy is about 0.907 and the
    best perplexity about 1.74. Lengths vary from 8 to 33 tokens, so batches hold different
    numbers of counted (non-padding) targets: the case where loss normalisation matters.
    """
    _check_val_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    n, real = 1000, SEQ_VOCAB - 1
    inputs = np.full((n, SEQ_LEN), PAD_TOKEN, dtype=np.int64)
    targets = np.full((n, SEQ_LEN), IGNORE_INDEX, dtype=np.int64)
    for i in range(n):
        length = int(rng.integers(8, SEQ_LEN + 2))  # tokens in the sequence, input is length - 1
        seq = np.empty(length, dtype=np.int64)
        seq[0] = rng.integers(1, real + 1)
        for t in range(1, length):
            follow = rng.random() < 0.9
            seq[t] = seq[t - 1] % real + 1 if follow else rng.integers(1, real + 1)
        inputs[i, : length - 1] = seq[:-1]
        targets[i, : length - 1] = seq[1:]
    tr, va = _split(n, seed, val_fraction, None, name)
    return TaskData(
        name=name,
        task="language-modelling",
        train=TensorDataset(torch.from_numpy(inputs[tr]), torch.from_numpy(targets[tr])),
        val=TensorDataset(torch.from_numpy(inputs[va]), torch.from_numpy(targets[va])),
        num_features=SEQ_VOCAB,
        num_outputs=SEQ_VOCAB,
        description="count-up token sequences with 10% noise, padded with target -100",
    )


# ---------------------------------------------------------------------------------------------
# The contrastive task: two augmented views of each digit.

DIGIT_SIDE = 8  # scikit-learn's digits are 8 x 8 images with pixel values 0 .. 16
DIGIT_MAX = 16.0
EMBED_DIM = 32  # width of the contrastive task's L2-normalised embedding
# Augmentation strengths: a shift of up to 1 pixel moves an 8 x 8 digit by 12% of its width;
# stronger settings start to turn one digit into another (a shifted 1 next to a 7).
SHIFT = 1  # pixels, in each direction
NOISE = 0.1  # std of the added Gaussian noise, pixels in [0, 1]
DROPOUT = 0.1  # chance that a pixel is set to 0


def augment_digits(
    images: Tensor, generator: torch.Generator | None = None, *, shift: int = SHIFT,
    noise: float = NOISE, dropout: float = DROPOUT,
) -> Tensor:
    r"""A random view of each 8 x 8 image: shift, then pixel dropout, then Gaussian noise.

    Each image moves by ``(dy, dx)``, each drawn from ``-shift .. shift``; pixels shifted in
    are 0. Each pixel is then zeroed with probability ``dropout``, and
    :math:`\mathcal N(0, \mathrm{noise}^2)` is added to every pixel. All draws come from
    ``generator`` (torch's global generator when None), so a seeded generator gives the same
    views on every run.

    Args:
        images: ``(B, 64)`` or ``(B, 8, 8)`` float pixels (the task's are in [0, 1]).
        generator: the source of randomness.

    Returns:
        A new tensor of ``images``' shape and dtype.

    >>> x = torch.zeros(1, 64); x[0, 27] = 1.0  # one lit pixel at row 3, column 3
    >>> v = augment_digits(x, torch.Generator().manual_seed(0), noise=0.0, dropout=0.0)
    >>> lit = v[0].nonzero().flatten().tolist(); len(lit), abs(lit[0] // 8 - 3) <= 1
    (1, True)
    """
    flat, square = (DIGIT_SIDE * DIGIT_SIDE,), (DIGIT_SIDE, DIGIT_SIDE)
    if images.dim() < 2 or tuple(images.shape[1:]) not in (flat, square):
        raise DataError(f"images must be (B, 64) or (B, 8, 8); got shape {tuple(images.shape)}. "
                        f"Fix: pass a batch of scikit-learn digits, flattened or not.")
    b = images.shape[0]
    x = images.reshape(b, DIGIT_SIDE, DIGIT_SIDE)  # (B, 8, 8)
    opts: dict[str, Any] = {"device": images.device}
    padded = torch.nn.functional.pad(x, (shift,) * 4)  # (B, 8 + 2 shift, 8 + 2 shift)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b, 1), generator=generator, **opts)  # (B, 1)
    side = torch.arange(DIGIT_SIDE, **opts)  # (8,)
    rows, cols = dy + side, dx + side  # (B, 8) each: the window of each image in `padded`
    batch = torch.arange(b, **opts)[:, None, None]  # (B, 1, 1)
    x = padded[batch, rows[:, :, None], cols[:, None, :]]  # (B, 8, 8)
    keep = torch.rand(x.shape, generator=generator, **opts) >= dropout
    x = x * keep + noise * torch.randn(x.shape, generator=generator, dtype=x.dtype, **opts)
    return x.reshape(images.shape)


class TwoViewDigits(Dataset):
    """Digits with two fresh augmented views per row: ``(views (2, 64), label)`` items.

    Every access draws new views from torch's global generator (:func:`augment_digits`), so
    each epoch sees new views; ``fit(seed=...)`` seeds that generator, and its checkpoints store
    it, which makes a run and its resume repeat the same views. A batch of indices is augmented
    in one vectorised call (``__getitems__``, which torch's DataLoader uses when present).

    Attributes:
        images: ``(N, 64)`` float32 clean pixels in [0, 1]. labels: ``(N,)`` int64 digits.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def views(self, index: Tensor | slice | list[int]) -> tuple[Tensor, Tensor]:
        """``(views (B, 2, 64), labels (B,))`` for the rows ``index``."""
        clean = self.images[index]  # (B, 64)
        pair = torch.stack([augment_digits(clean), augment_digits(clean)], dim=1)  # (B, 2, 64)
        return pair, self.labels[index]

    def __getitem__(self, index: int | slice) -> tuple[Tensor, Tensor]:
        if isinstance(index, slice):  # a batch, e.g. the doctor's train[:256]
            return self.views(index)
        pair, label = self.views([index])
        return pair[0], label[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        pair, labels = self.views(list(indices))
        return list(zip(pair, labels, strict=True))  # the DataLoader's collate stacks them


def _digits_contrastive(name: str, seed: int, val_fraction: float) -> TaskData:
    """scikit-learn's digits as a contrastive task: learn an embedding from two views.

    Pixels are scaled to [0, 1] (``x / 16``), not standardised per pixel: a shift moves a
    pixel's value into its neighbour's column. Training rows draw two new views at every access
    (:class:`TwoViewDigits`); validation rows are fixed, view 0 the clean image and view 1 one
    augmentation drawn from ``seed``, so the validation loss is the same sum every epoch; the
    k-NN metrics classify both views (:func:`losskit.train.recipes.make_metrics`).
    """
    import sklearn.datasets

    _check_val_fraction(val_fraction)
    bunch = sklearn.datasets.load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / DIGIT_MAX  # (N, 64) in [0, 1]
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va = _split(len(x), seed, val_fraction, y, name)
    x_va = torch.from_numpy(x[va])  # (Nv, 64)
    view = augment_digits(x_va, torch.Generator().manual_seed(seed))
    return TaskData(
        name=name,
        task="contrastive",
        train=TwoViewDigits(torch.from_numpy(x[tr]), torch.from_numpy(y[tr])),
        val=TensorDataset(torch.stack([x_va, view], dim=1), torch.from_numpy(y[va])),
        num_features=x.shape[1],
        num_outputs=EMBED_DIM,
        feature_names=tuple(f"pixel_{i // 8}_{i % 8}" for i in range(x.shape[1])),
        class_names=tuple(str(c) for c in bunch.target_names),
        description="scikit-learn load_digits(): two augmented views (shift, dropout, noise)",
    )


_BUILDERS: dict[str, Callable[[str, int, float], TaskData]] = {
    "digits": _sklearn("load_digits", "multiclass"),
    "breast-cancer": _sklearn("load_breast_cancer", "binary"),
    "diabetes": _sklearn("load_diabetes", "regression"),
    "iris": _sklearn("load_iris", "multiclass"),
    "wine": _sklearn("load_wine", "multiclass"),
    "multilabel": _multilabel,
    "regression-outliers": _regression_outliers,
    "sequence": _sequence,
    "digits-contrastive": _digits_contrastive,
}
DATASETS: tuple[str, ...] = tuple(_BUILDERS)
TASK_OF: dict[str, str] = {
    "digits": "multiclass", "breast-cancer": "binary", "diabetes": "regression",
    "iris": "multiclass", "wine": "multiclass", "multilabel": "multilabel",
    "regression-outliers": "regression", "sequence": "language-modelling",
    "digits-contrastive": "contrastive",
}


def load(name: str, *, seed: int = 0, val_fraction: float = 0.2) -> TaskData:
    """Load a built-in dataset by name, split and standardised deterministically from ``seed``.

    Args:
        name: one of :data:`DATASETS`.
        seed: drives the split and the synthetic generators; the same seed gives the same data.
        val_fraction: share of rows held out for validation, in (0, 1).

    >>> d = load("breast-cancer")
    >>> d.task, tuple(d.train.tensors[1].shape[1:]), round(float(d.train.tensors[0].mean()), 6)
    ('binary', (1,), 0.0)
    """
    if name not in _BUILDERS:
        raise DataError(
            f"dataset name={name!r} is not a built-in dataset. Fix: use one of "
            f"{', '.join(DATASETS)}, or load your own table with load_csv(path, target=COLUMN)."
        )
    return _BUILDERS[name](name, seed, val_fraction)


# ---------------------------------------------------------------------------------------------
# CSV tables.


def _read_csv(path: str | os.PathLike) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the data rows and each row's line number in the file (blank lines skipped)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataFileNotFoundError(
            f"data file path={path!r} does not exist. Fix: check the path (relative paths start "
            f"at {os.getcwd()!r})."
        )
    if os.path.isdir(path):
        raise DataError(f"data file path={path!r} is a directory. Fix: pass the CSV file itself.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows, lines = [], []
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file path={path!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}): a CSV in another encoding, or not a CSV at all. Fix: save it "
            f"as UTF-8 CSV (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)."
        ) from None
    except (csv.Error, OSError) as exc:
        raise DataError(
            f"data file path={path!r} cannot be read as CSV ({exc}). Fix: pass a readable, "
            f"plain-text CSV file."
        ) from None
    if not rows:
        raise DataError(
            f"data file path={path!r} is empty. Fix: provide a CSV with a header row and data rows."
        )
    header, body, lines = [h.strip() for h in rows[0]], rows[1:], lines[1:]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        where = "; ".join(
            f"{h!r} is column {' and '.join(str(j + 1) for j, g in enumerate(header) if g == h)}"
            for h in twice)
        raise DataError(
            f"data file path={path!r} repeats column names ({where}): a column is looked up by "
            f"name, so one would hide the other. Fix: give every column a distinct name."
        )
    if not body:
        raise DataError(
            f"data file path={path!r} has a header ({', '.join(header)}) but no data rows. "
            f"Fix: add rows below the header."
        )
    for i, row in zip(lines, body, strict=True):
        if len(row) != len(header):
            raise DataError(
                f"data file path={path!r}: line {i} has {len(row)} fields but the header has "
                f"{len(header)}. Fix: make every row have one value per column."
            )
    return header, body, lines


def _as_float(values: list[str]) -> np.ndarray | None:
    """The column as float64, or None when a value is not a number (empty cells count as bad)."""
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None


def _infer_task(numeric: np.ndarray | None, values: list[str]) -> str:
    """binary for 2 distinct labels, multiclass for text or few integer labels, else regression.
    Numeric labels are compared as numbers ("1" and "1.0" are one label)."""
    distinct = set(values) if numeric is None else set(numeric.tolist())
    if len(distinct) == 2:
        return "binary"
    if numeric is None:
        return "multiclass"
    integral = bool(np.all(numeric == np.round(numeric)))
    if integral and len(distinct) <= min(20, max(2, len(values) // 10)):
        return "multiclass"
    return "regression"


def load_csv(
    path: str | os.PathLike,
    target: str,
    *,
    task: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
) -> TaskData:
    """Load a numeric CSV table (header row required) with one target column.

    Every other column is a feature and must be numeric. The table needs at least
    :data:`MIN_ROWS` (10) data rows, and each split at least :data:`MIN_SPLIT_ROWS` (2). Without
    ``task`` the task is inferred from the target column: two distinct values -> ``binary``; text
    labels, or at most ``min(20, rows // 10)`` distinct integers -> ``multiclass``; anything
    else -> ``regression``. Labels are mapped to ``0 .. C-1`` in sorted order (see
    ``TaskData.class_names``), numeric labels by value (``1`` and ``1.0`` are one class). Empty
    target cells and repeated column names are errors.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("a,b,y\\n" + "".join(f"{i},{i % 3},{i % 2}\\n" for i in range(20)))
    >>> d = load_csv(p, target="y")
    >>> d.task, d.num_features, d.feature_names, len(d.train), len(d.val)
    ('binary', 2, ('a', 'b'), 16, 4)
    """
    if task is not None and task not in CSV_TASKS:
        raise DataError(
            f"task={task!r} is not supported for CSV tables. Fix: use 'multiclass', 'binary', "
            f"'regression', or leave task=None to infer it from the target column."
        )
    _check_val_fraction(val_fraction)
    header, body, lines = _read_csv(path)
    if target not in header:
        raise DataError(
            f"target={target!r} is not a column of {os.fspath(path)!r}. Its columns are: "
            f"{', '.join(header)}. Fix: pass one of them as the target."
        )
    columns = {name: [row[j].strip() for row in body] for j, name in enumerate(header)}
    feature_names = tuple(h for h in header if h != target)
    if not feature_names:
        raise DataError(
            f"{os.fspath(path)!r} has only the target column {target!r}. Fix: add feature columns."
        )
    features, bad = [], []
    for name in feature_names:
        col = _as_float(columns[name])
        if col is None or not np.all(np.isfinite(col)):
            bad.append(name)
        else:
            features.append(col)
    if bad:
        raise DataError(
            f"feature columns must be numbers without gaps; these are not: {', '.join(bad)} "
            f"(in {os.fspath(path)!r}). Fix: encode text as numbers (e.g. one-hot), fill or drop "
            f"empty cells, or drop those columns."
        )
    if len(body) < MIN_ROWS:
        raise DataError(
            f"data file path={os.fspath(path)!r} has {len(body)} data rows; a table needs at "
            f"least {MIN_ROWS} so that the train and validation splits each hold several. Fix: add "
            f"rows (hundreds make a useful model)."
        )
    x = np.stack(features, axis=1)  # (N, F)
    values = columns[target]
    empty = [line for line, v in zip(lines, values, strict=True) if not v]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise DataError(
            f"target column {target!r} of {os.fspath(path)!r} is empty on {len(empty)} "
            f"row{'s' * (len(empty) != 1)} (line{'s' * (len(empty) != 1)} {shown}): a missing "
            f"label would be trained as a class of its own. Fix: fill in those labels or drop "
            f"those rows."
        )
    numeric = _as_float(values)
    task = task or _infer_task(numeric, values)
    if task == "regression":
        if numeric is None or not np.all(np.isfinite(numeric)):
            raise DataError(
                f"task='regression' needs a numeric target, but column {target!r} holds values "
                f"that are not finite numbers. Fix: choose task='multiclass' or clean the column."
            )
        return _tabular(os.fspath(path), task, x, numeric, seed=seed, val_fraction=val_fraction,
                        feature_names=feature_names)
    # Classification: map sorted labels to 0 .. C-1; numeric labels by value, so "1" and "1.0"
    # are one class (named "1").
    if numeric is not None and np.all(np.isfinite(numeric)):
        numbers = sorted(set(numeric.tolist()))
        keys = [str(int(v)) if v.is_integer() else repr(v) for v in numbers]
        position = {v: i for i, v in enumerate(numbers)}
        values = [keys[position[v]] for v in numeric.tolist()]
    else:
        keys = sorted(set(values))
    if task == "binary" and len(keys) != 2:
        raise DataError(
            f"task='binary' needs exactly 2 distinct target values, but column {target!r} has "
            f"{len(keys)} ({', '.join(keys[:10])}{', ...' if len(keys) > 10 else ''}). Fix: use "
            f"task='multiclass' or 'regression'."
        )
    if len(keys) < 2:
        raise DataError(
            f"target column {target!r} holds a single value ({keys[0]!r}); there is nothing to "
            f"learn. Fix: choose another target column."
        )
    index = {k: i for i, k in enumerate(keys)}
    y = np.array([index[v] for v in values], dtype=np.int64)
    return _tabular(os.fspath(path), task, x, y, seed=seed, val_fraction=val_fraction,
                    feature_names=feature_names, class_names=tuple(keys))
