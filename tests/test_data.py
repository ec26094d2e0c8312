"""Built-in data and CSV loading: layouts, determinism, train-only standardisation, error paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losskit import data

LAYOUT = {  # task -> (input dtype, target dtype, target dims)
    "multiclass": (torch.float32, torch.int64, 1),
    "binary": (torch.float32, torch.float32, 2),
    "multilabel": (torch.float32, torch.float32, 2),
    "regression": (torch.float32, torch.float32, 2),
    "language-modelling": (torch.int64, torch.int64, 2),
    "contrastive": (torch.float32, torch.int64, 1),
}


def _tensors(split) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's (inputs, targets); the contrastive train set draws its views on access."""
    return split.tensors if hasattr(split, "tensors") else split[: len(split)]


@pytest.fixture(scope="module")
def loaded() -> dict[str, data.TaskData]:
    return {name: data.load(name) for name in data.DATASETS}


def test_every_dataset_has_its_task_layout(loaded) -> None:
    assert set(data.DATASETS) == {"digits", "breast-cancer", "diabetes", "iris", "wine",
                                  "multilabel", "regression-outliers", "sequence",
                                  "digits-contrastive"}
    for name, d in loaded.items():
        assert d.task == data.TASK_OF[name]
        x_dtype, y_dtype, y_dims = LAYOUT[d.task]
        for split in (d.train, d.val):
            x, y = _tensors(split)
            assert (x.dtype, y.dtype, y.dim()) == (x_dtype, y_dtype, y_dims), name
            assert len(x) == len(y)
        n = len(d.train) + len(d.val)
        assert len(d.val) == pytest.approx(0.2 * n, abs=1)
        if d.task != "language-modelling":
            assert _tensors(d.train)[0].shape[-1] == d.num_features
        if d.task == "multiclass":
            assert int(d.train.tensors[1].max()) + 1 == d.num_outputs == len(d.class_names)


def test_sklearn_sets_have_their_known_sizes(loaded) -> None:
    sizes = {"digits": (1797, 64, 10), "breast-cancer": (569, 30, 1), "diabetes": (442, 10, 1),
             "iris": (150, 4, 3), "wine": (178, 13, 3)}
    for name, (rows, features, outputs) in sizes.items():
        d = loaded[name]
        got = (len(d.train) + len(d.val), d.num_features, d.num_outputs)
        assert got == (rows, features, outputs), name


def test_standardisation_uses_training_statistics_only(loaded) -> None:
    for name in ("digits", "wine", "diabetes"):
        x_train = loaded[name].train.tensors[0].double()
        x_val = loaded[name].val.tensors[0].double()
        varying = x_train.std(0) > 0
        torch.testing.assert_close(x_train.mean(0), torch.zeros_like(x_train[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(x_train.std(0, correction=0)[varying],
                                   torch.ones(int(varying.sum()), dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        assert x_val.mean(0).abs().max() > 1e-3  # val was not standardised with its own stats
    d = loaded["diabetes"]  # regression targets too, and target_mean/std undo it
    import sklearn.datasets

    raw = sklearn.datasets.load_diabetes().target
    y = d.train.tensors[1].double().squeeze(1) * d.target_std + d.target_mean
    assert np.isin(np.round(y.numpy(), 3), np.round(raw, 3)).all()


def test_splits_are_deterministic_and_seeded() -> None:
    a, b, c = data.load("wine", seed=1), data.load("wine", seed=1), data.load("wine", seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.train.tensors, b.train.tensors, strict=True))
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    s1, s2 = data.load("sequence", seed=3), data.load("sequence", seed=3)
    assert torch.equal(s1.val.tensors[1], s2.val.tensors[1])


def test_classification_splits_are_stratified(loaded) -> None:
    d = loaded["iris"]
    assert torch.bincount(d.val.tensors[1]).tolist() == [10, 10, 10]


def test_regression_outliers_only_in_training_targets(loaded) -> None:
    d = loaded["regression-outliers"]
    y_train, y_val = d.train.tensors[1].abs(), d.val.tensors[1].abs()
    outliers = (y_train > 10).float().mean().item()
    assert 0.05 < outliers < 0.15  # about 10% of the training targets
    assert y_val.max() < 6  # validation is clean


def test_sequence_pads_targets_with_minus_100_and_follows_the_rule(loaded) -> None:
    d = loaded["sequence"]
    x, y = d.train.tensors
    pad = x == data.PAD_TOKEN
    assert torch.equal(pad, y == -100)  # padding in the input is exactly where targets are ignored
    counted = (~pad).sum(1)
    assert counted.min() >= 7 and counted.max() == data.SEQ_LEN and len(counted.unique()) > 10
    follows = (y == x % 15 + 1)[~pad].double().mean().item()
    assert 0.88 < follows < 0.94  # 90% follow the count-up rule, plus chance hits of the noise
    assert d.num_features == d.num_outputs == data.SEQ_VOCAB


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(data.DataError, match=r"name='mnist'.*digits, breast-cancer.*load_csv"):
        data.load("mnist")


def test_bad_val_fraction_is_named() -> None:
    for bad in (0, 1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match="val_fraction="):
            data.load("iris", val_fraction=bad)


# --- CSV ----------------------------------------------------------------------------------------


def _write(tmp_path, text: str, name: str = "t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_classification_with_text_labels(tmp_path) -> None:
    rows = "".join(f"{i},{(i * 7) % 5},{['cat', 'dog', 'emu'][i % 3]}\n" for i in range(60))
    d = data.load_csv(_write(tmp_path, "a,b,animal\n" + rows), target="animal")
    assert d.task == "multiclass" and d.class_names == ("cat", "dog", "emu")
    assert d.feature_names == ("a", "b") and d.num_outputs == 3
    # Rows keep their labels: column a is i, standardised by the same affine map in both splits,
    # so sorting every row by a recovers i, and row i must carry label i % 3.
    x = torch.cat([d.train.tensors[0], d.val.tensors[0]])
    y = torch.cat([d.train.tensors[1], d.val.tensors[1]])
    order = x[:, 0].argsort()
    assert y[order].tolist() == [i % 3 for i in range(60)]


def test_csv_task_inference(tmp_path) -> None:
    binary = "x,y\n" + "".join(f"{i},{'yes' if i % 2 else 'no'}\n" for i in range(20))
    regression = "x,y\n" + "".join(f"{i},{i * 0.37:.3f}\n" for i in range(50))
    few_ints = "x,y\n" + "".join(f"{i},{i % 4}\n" for i in range(80))
    assert data.load_csv(_write(tmp_path, binary, "b.csv"), "y").task == "binary"
    assert data.load_csv(_write(tmp_path, regression, "r.csv"), "y").task == "regression"
    assert data.load_csv(_write(tmp_path, few_ints, "m.csv"), "y").task == "multiclass"
    forced = data.load_csv(_write(tmp_path, few_ints, "m2.csv"), "y", task="regression")
    assert forced.task == "regression"
    y = torch.cat([forced.train.tensors[1], forced.val.tensors[1]]) * forced.target_std
    assert sorted((y + forced.target_mean).round().squeeze(1).tolist()) == sorted(
        float(i % 4) for i in range(80))


def test_csv_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope.csv.*does not exist"):
        data.load_csv(tmp_path / "nope.csv", target="y")


def test_csv_missing_column_lists_the_columns(tmp_path) -> None:
    path = _write(tmp_path, "a,b,c\n1,2,3\n4,5,6\n")
    with pytest.raises(data.DataError, match=r"target='label'.*columns are: a, b, c"):
        data.load_csv(path, target="label")


def test_csv_non_numeric_features_are_named(tmp_path) -> None:
    rows = "".join(f"{i},red,{i % 2},\n" for i in range(10))
    path = _write(tmp_path, "a,colour,y,gap\n" + rows)
    with pytest.raises(data.DataError, match=r"these are not: colour, gap.*Fix"):
        data.load_csv(path, target="y")


def test_csv_empty_and_header_only(tmp_path) -> None:
    with pytest.raises(data.DataError, match="is empty"):
        data.load_csv(_write(tmp_path, "", "e.csv"), target="y")
    with pytest.raises(data.DataError, match="no data rows"):
        data.load_csv(_write(tmp_path, "x,y\n", "h.csv"), target="y")


def test_csv_ragged_rows_and_bad_task(tmp_path) -> None:
    with pytest.raises(data.DataError, match="line 3 has 3 fields but the header has 2"):
        data.load_csv(_write(tmp_path, "x,y\n1,0\n2,1,5\n", "r.csv"), target="y")
    path = _write(tmp_path, "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30)), "t.csv")
    with pytest.raises(data.DataError, match=r"task='binary' needs exactly 2.*has 3"):
        data.load_csv(path, target="y", task="binary")
    with pytest.raises(data.DataError, match="task='sequence'"):
        data.load_csv(path, target="y", task="sequence")


def test_csv_with_too_few_rows_names_file_count_minimum_and_fix(tmp_path) -> None:
    # Two rows used to train as "1 train / 1 val": a validation split that cannot measure anything.
    path = _write(tmp_path, "x,y\n1,0\n2,1\n", "tiny.csv")
    with pytest.raises(data.DataError) as info:
        data.load_csv(path, target="y")
    message = str(info.value)
    for piece in ("tiny.csv", "has 2 data rows", "at least 10", "Fix: add rows"):
        assert piece in message
    nine = "x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(9))
    with pytest.raises(data.DataError, match="has 9 data rows"):
        data.load_csv(_write(tmp_path, nine, "nine.csv"), target="y")
    ten = data.load_csv(_write(tmp_path, nine + "9,1\n", "ten.csv"), target="y")
    assert (len(ten.train), len(ten.val)) == (8, 2)  # the documented minimum loads


def test_each_split_needs_two_rows(tmp_path) -> None:
    rows = "x,y\n" + "".join(f"{i},{i * 0.37:.3f}\n" for i in range(20))
    path = _write(tmp_path, rows, "twenty.csv")
    with pytest.raises(data.DataError, match=r"twenty.csv.*19 train / 1 val.*at least 2.*Fix"):
        data.load_csv(path, target="y", val_fraction=0.05)  # ceil(20 * 0.05) = 1 val row
    d = data.load_csv(path, target="y", val_fraction=0.1)
    assert (len(d.train), len(d.val)) == (18, 2)
    with pytest.raises(data.DataError, match=r"'iris' has 150 rows.*1 train / 149 val"):
        data.load("iris", val_fraction=0.99)


def test_csv_that_is_not_utf8_is_named(tmp_path) -> None:
    path = tmp_path / "latin1.csv"
    text = "a,name,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)) + "1,caf\u00e9,0\n"
    path.write_bytes(text.encode("latin-1"))  # 0xe9: not a UTF-8 sequence
    with pytest.raises(data.DataError, match=r"latin1.csv.*is not UTF-8 text.*0xe9.*Fix"):
        data.load_csv(path, target="y")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(data.DataError, match=r"binary.csv.*Fix"):
        data.load_csv(binary, target="y")


def test_csv_empty_target_cells_are_refused_with_their_lines(tmp_path) -> None:
    labels = ["cat", "dog"] * 10
    labels[3] = labels[7] = ""  # data rows 4 and 8: lines 5 and 9 (line 1 is the header)
    path = _write(tmp_path, "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels)))
    with pytest.raises(data.DataError) as info:
        data.load_csv(path, target="y")
    message = str(info.value)
    for piece in ("'y'", "empty on 2 rows", "lines 5, 9", "Fix: fill in"):
        assert piece in message


def test_csv_numeric_labels_are_compared_as_numbers(tmp_path) -> None:
    labels = ["0", "1", "1.0", "0.0"] * 5  # two classes written two ways
    path = _write(tmp_path, "a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels)))
    d = data.load_csv(path, target="y")
    assert d.task == "binary" and d.class_names == ("0", "1")
    x = torch.cat([d.train.tensors[0], d.val.tensors[0]])[:, 0]
    y = torch.cat([d.train.tensors[1], d.val.tensors[1]]).flatten()
    assert y[x.argsort()].tolist() == [float(v) for v in [0, 1, 1, 0] * 5]  # by value, in order
    forced = data.load_csv(path, target="y", task="multiclass")
    assert forced.class_names == ("0", "1") and forced.num_outputs == 2


def test_csv_repeated_column_names_are_refused(tmp_path) -> None:
    rows = "".join(f"{i},{-i},{i % 2}\n" for i in range(20))
    aay = r"repeats column names \('a' is column 1 and 2\).*Fix"
    with pytest.raises(data.DataError, match=aay):
        data.load_csv(_write(tmp_path, "a,a,y\n" + rows, "aay.csv"), target="y")
    with pytest.raises(data.DataError, match=r"'y' is column 1 and 3"):
        data.load_csv(_write(tmp_path, "y,b,y\n" + rows, "yby.csv"), target="y")
