"""Encoder: one-hot + standardise + bias, rows scaled into the unit ball, revoked columns = 0."""

import json

import numpy as np
import pandas as pd
import pytest

from unlearning.data.encoding import BIAS_COLUMN, Encoder
from unlearning.data.tables import correct_table, table_from_frame
from unlearning.errors import UnlearnError


def make_table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 12, n).round(),
            "hours": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 5, n)),
            "sex": rng.choice(["F", "M"], n),
            "city": rng.choice(["Oslo", "Bergen", "Tromsø"], n),
            "const": np.full(n, 0.1),
            "y": rng.choice(["no", "yes"], n),
        }
    )
    return table_from_frame("toy", frame, target="y")


def test_columns_and_shape():
    table = make_table()
    encoder = Encoder.fit(table)
    assert encoder.columns == (
        "age", "hours", "sex=F", "sex=M", "city=Bergen", "city=Oslo", "city=Tromsø", "const",
        BIAS_COLUMN,
    )
    assert encoder.d == 9 and len(encoder.mean) == len(encoder.std) == 8
    x = encoder.transform(table.frame)
    assert x.shape == (300, 9) and x.dtype == np.float64
    assert np.allclose(x[:, -1], 1 / encoder.scale)
    assert np.all(x[:, encoder.derived_indices("const")] == 0)  # constant: std 1, value 0


def test_training_rows_lie_in_the_unit_ball():
    table = make_table()
    encoder = Encoder.fit(table)
    norms = np.linalg.norm(encoder.transform(table.frame)[table.train_mask()], axis=1)
    assert norms.max() <= 1 + 1e-12
    assert norms.max() == pytest.approx(1.0)  # the scale is tight


def test_fit_uses_training_rows_only():
    table = make_table()
    test_rows = ~table.train_mask()
    frame = table.frame.copy()
    frame.loc[test_rows, "age"] = 1e6  # test rows must not move the standardisation
    changed = Encoder.fit(type(table)(**{**table.__dict__, "frame": frame}))
    assert changed.to_dict() == Encoder.fit(table).to_dict()
    train = table.frame[table.train_mask()]
    assert changed.mean[0] == pytest.approx(train["age"].mean())
    assert changed.std[0] == pytest.approx(train["age"].std(ddof=0))


def test_missing_numbers_and_unknown_categories():
    table = make_table()
    encoder = Encoder.fit(table)
    frame = table.frame.iloc[:2].copy()
    frame["hours"] = np.nan
    frame["city"] = ["Paris", "Oslo"]
    x = encoder.transform(frame) * encoder.scale  # undo the scaling to read standardised values
    assert np.all(x[:, encoder.derived_indices("hours")] == 0)  # NA → the training mean
    city = encoder.derived_indices("city")
    mean, std = np.array(encoder.mean)[city], np.array(encoder.std)[city]
    np.testing.assert_allclose(x[0, city], -mean / std)  # unseen → all-zero one-hot
    assert x[1, city].argmax() == encoder.categories["city"].index("Oslo")


def test_revoked_features_are_exactly_zero_and_may_be_absent():
    table = make_table()
    encoder = Encoder.fit(table)
    revoked = encoder.with_revoked(["sex", "age"])
    assert revoked.revoked == ("sex", "age") and revoked.scale == encoder.scale
    zeroed = revoked.derived_indices("sex") + revoked.derived_indices("age")
    x_full = encoder.transform(table.frame)
    x = revoked.transform(table.frame)
    assert np.all(x[:, zeroed] == 0.0)
    others = [i for i in range(encoder.d) if i not in zeroed]
    np.testing.assert_array_equal(x[:, others], x_full[:, others])
    without = revoked.transform(table.frame.drop(columns=["sex", "age"]))
    np.testing.assert_array_equal(without, x)
    assert np.linalg.norm(x[table.train_mask()], axis=1).max() <= 1 + 1e-12


def test_fit_on_a_corrected_table_keeps_its_revocations():
    table = correct_table(make_table(), [], ["sex", "hours"], {})
    encoder = Encoder.fit(table)
    assert encoder.revoked == ("sex", "hours")
    x = encoder.transform(table.frame)
    assert encoder.derived_indices("sex") == []  # no category survives a revocation
    assert np.all(x[:, encoder.derived_indices("hours")] == 0.0)
    assert np.linalg.norm(x[table.train_mask()], axis=1).max() <= 1 + 1e-12


def test_a_missing_feature_is_named():
    encoder = Encoder.fit(make_table())
    with pytest.raises(UnlearnError) as excinfo:
        encoder.transform(make_table().frame.drop(columns=["city"]))
    message = str(excinfo.value)
    assert "'city'" in message and "\n" not in message


def test_text_in_a_numeric_feature_is_refused():
    table = make_table()
    frame = table.frame.astype({"age": object})
    frame.iloc[0, 0] = "forty"
    with pytest.raises(UnlearnError) as excinfo:
        Encoder.fit(table).transform(frame)
    assert "'age' must be numeric" in str(excinfo.value) and "forty" not in str(excinfo.value)


def test_dict_round_trip_gives_the_same_transform():
    table = make_table()
    encoder = Encoder.fit(table).with_revoked(["city"])
    copy = Encoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert copy == encoder
    np.testing.assert_array_equal(copy.transform(table.frame), encoder.transform(table.frame))


def test_labels_encode_and_decode():
    encoder = Encoder.fit(make_table())
    idx = encoder.encode_labels(["yes", "no", " yes"])
    assert idx.dtype == np.int64 and list(idx) == [1, 0, 1]
    assert encoder.decode_labels(idx) == ["yes", "no", "yes"]
    with pytest.raises(UnlearnError) as excinfo:
        encoder.encode_labels(["maybe"])
    assert "['no', 'yes']" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_derived_indices_cover_every_column_once():
    encoder = Encoder.fit(make_table())
    indices = [i for f in encoder.features for i in encoder.derived_indices(f)]
    assert indices == list(range(encoder.d - 1))
    for f in encoder.features:
        assert all(encoder.columns[i].split("=")[0] == f for i in encoder.derived_indices(f))
    with pytest.raises(UnlearnError):
        encoder.derived_indices("nope")
    with pytest.raises(UnlearnError):
        encoder.with_revoked(["nope"])
