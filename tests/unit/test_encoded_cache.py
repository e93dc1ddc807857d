"""A request built from a model version's encoded cache (erasure.Encoded) is the request built by
encoding the tables through pandas: the same Problem, the same feature map (categories that left
with the erased records forgotten), the same D' — along a sequence of requests where each one reads
the cache the one before derived, revocations included."""

import functools

import numpy as np
import pytest
import torch

from unlearning.builtin import build_adult
from unlearning.tabular import erasure
from unlearning.tabular.data import correct_table
from unlearning.tabular.training import TrainConfig, train_bundle


@functools.cache
def adult_rows(n: int = 1500):
    table = build_adult()
    return type(table)(**{**table.__dict__, "frame": table.frame.iloc[:n]})


def rarest_category_holder(table, exclude: set[str]) -> tuple[str, str]:
    """(record id, feature) of a record holding a category no other record holds."""
    for f in table.categorical:
        counts = table.frame[f].value_counts()
        for value in counts[counts == 1].index:
            record = str(table.frame.index[table.frame[f] == value][0])
            if record not in exclude and table.train_mask()[table.frame.index.get_loc(record)]:
                return record, f
    raise AssertionError("no category held by one training record")


def flipped(table, record: str) -> str:
    return next(label for label in table.labels if label != table.frame.loc[record, table.target])


def pandas_reference(bundle, before, after):
    """What build_problem computed before the cache: every matrix encoded from the tables, with the
    feature map's statistics refitted on the training rows of D' read from the table."""
    newly = [f for f in after.revoked if f not in bundle.encoder.revoked]
    train = before.frame[before.train_mask()]
    refit = bundle.encoder.refit(bundle.encoder._raw(train[train.index.isin(after.frame.index)]), newly)
    bundle = bundle.with_theta(bundle.encoder.reexpressed(bundle.theta, refit), encoder=refit)
    encoder_after = bundle.encoder.with_revoked(newly) if newly else bundle.encoder
    changes = erasure.changes_between(before, after)
    revoked_columns = sorted(j for f in newly for j in bundle.encoder.derived_indices(f))
    data = erasure.training_data(before, bundle)
    deleted = np.array([i in changes.deleted for i in data.ids], dtype=bool)
    z_deleted, z_replaced = erasure.affected_rows(data, deleted, set(changes.relabelled), revoked_columns)
    frame = after.frame.loc[[data.ids[i] for i in z_replaced]]
    X_tilde = torch.as_tensor(encoder_after.transform(frame), dtype=torch.float64).reshape(-1, data.X.shape[1])
    y_tilde = torch.as_tensor(encoder_after.encode_labels(frame[after.target]))
    bundle_after = bundle.with_theta(bundle.theta,
                                     encoder=encoder_after.keep_categories_of(after.frame[after.train_mask()]))
    return data, np.concatenate([z_deleted, z_replaced]), X_tilde, y_tilde, bundle_after


def assert_same_rows(a: erasure.TrainingData, b: erasure.TrainingData):
    assert a.ids.tolist() == b.ids.tolist()
    assert torch.equal(a.X, b.X)
    assert torch.equal(a.y, b.y)


@pytest.mark.parametrize("certified", [False, True])
def test_requests_from_the_cache_equal_requests_encoded_from_the_tables(certified):
    table = adult_rows()
    bundle, b, _ = train_bundle(table, TrainConfig(certified=certified, tol=1e-6))
    ids = [i for i, train in zip(table.ids(), table.train_mask()) if train]
    held_out = [i for i, train in zip(table.ids(), table.train_mask()) if not train]
    rare, rare_feature = rarest_category_holder(table, set())
    steps = [
        ([ids[3]], [], {}),  # one record, as `delete_records: [6001]`
        ([], ["sex"], {}),
        ([ids[7], held_out[2], rare], [], {ids[9]: flipped(table, ids[9])}),
        ([ids[11]], ["race"], {held_out[4]: flipped(table, held_out[4])}),  # a later request after a revocation
    ]
    encoded = erasure.encode_version(table, bundle, "v0")
    for step, (delete, revoke, fix) in enumerate(steps):
        after = correct_table(table, delete, revoke, fix)
        data, z_index, X_tilde, y_tilde, expected_bundle = pandas_reference(bundle, table, after)
        changes = erasure.requested_changes(table, delete, fix)
        assert changes == erasure.changes_between(table, after)
        p, bundle_after, encoded_after = erasure.build_problem(bundle, table, after, b, {}, encoded, changes)

        assert torch.equal(p.X, data.X) and torch.equal(p.y, data.y)
        assert torch.equal(p.z_index, torch.as_tensor(z_index))
        assert torch.equal(p.X_tilde, X_tilde) and torch.equal(p.y_tilde, y_tilde), step
        assert bundle_after.encoder == expected_bundle.encoder, step
        # D' as encoding the corrected table with the new feature map gives it, row for row
        assert_same_rows(encoded_after.train, erasure.training_data(after, expected_bundle))
        assert_same_rows(encoded_after.test, erasure.held_out_data(after, expected_bundle))
        assert torch.equal(encoded_after.category_counts,
                           torch.as_tensor(expected_bundle.encoder.category_counts(after.frame[after.train_mask()])))
        assert encoded_after.data_version is None  # `after` is not a stored data version yet
        # the next request reads what this one derived (tasks.state keeps it under the new data version)
        bundle, table = bundle_after.with_theta(p.theta), after
        encoded = erasure.Encoded.from_state({**encoded_after.to_state(), "data_version": f"v{step + 1}"})
    forgotten = bundle.encoder.categories[rare_feature]
    assert None in forgotten  # the erased record's own category left the feature map


def test_without_a_cache_the_request_encodes_the_tables():
    table = adult_rows()
    bundle, b, _ = train_bundle(table, TrainConfig(tol=1e-6))
    after = correct_table(table, [table.ids()[0]], ["sex"], {})
    cached = erasure.build_problem(bundle, table, after, b, {}, erasure.encode_version(table, bundle))
    fresh = erasure.build_problem(bundle, table, after, b)
    assert torch.equal(cached[0].X_tilde, fresh[0].X_tilde)
    assert cached[1].encoder == fresh[1].encoder
    assert_same_rows(cached[2].train, fresh[2].train)


def test_the_encoded_cache_is_read_only_for_its_data_version_and_goes_with_the_version(tmp_path):
    from tasks import state

    table = adult_rows()
    bundle, b, _ = train_bundle(table, TrainConfig(tol=1e-6))
    unkeyed = erasure.model_cache(bundle, table, b)  # `table` is no stored data version
    state.save_cache(tmp_path, "run-a", unkeyed)
    assert (tmp_path / ".unlearn" / "cache" / "run-a.pt").exists()
    assert not (tmp_path / ".unlearn" / "encoded" / "run-a.pt").exists()  # never kept without its key

    state.save_cache(tmp_path, "run-b", erasure.model_cache(bundle, table, b, erasure.encode_version(table, bundle, "v1")))
    assert state.load_encoded(tmp_path, "run-b", "v2") is None
    assert state.load_encoded(tmp_path, "run-b", None) is None
    kept = erasure.Encoded.from_state(state.load_encoded(tmp_path, "run-b", "v1"))
    assert_same_rows(kept.train, erasure.training_data(table, bundle))
    assert_same_rows(kept.test, erasure.held_out_data(table, bundle))
    assert oct((tmp_path / ".unlearn" / "encoded" / "run-b.pt").stat().st_mode & 0o777) == oct(0o600)
    killed = tmp_path / ".unlearn" / "encoded" / "run-b.4242.tmp"  # a write killed before its rename
    killed.write_bytes((tmp_path / ".unlearn" / "encoded" / "run-b.pt").read_bytes())
    assert {"encoded/run-b.pt", "encoded/run-b.4242.tmp"} <= set(state.drop_model_state(tmp_path, "run-b"))
    assert not any((tmp_path / ".unlearn").rglob("run-b*"))


def test_a_kept_encoding_changed_since_it_was_saved_is_refused_on_load(tmp_path):
    """Its fingerprint catches one word of X moved by one ulp, two ids swapped, a label, a numeric
    value, a category count, a row count; a file kept before it had one is encoded afresh."""
    import json

    from tasks import state

    table = adult_rows()
    bundle, b, _ = train_bundle(table, TrainConfig(tol=1e-6))
    state.save_cache(tmp_path, "run-c", erasure.model_cache(bundle, table, b, erasure.encode_version(table, bundle, "v1")))
    path = tmp_path / ".unlearn" / "encoded" / "run-c.pt"
    kept = torch.load(path)
    X, ids, y, numbers, counts = (kept[k].clone() if k != "ids" else json.loads(kept[k])
                                  for k in ("X", "ids", "y", "numbers", "category_counts"))
    X[7, 3] = torch.nextafter(X[7, 3], X[7, 3] + 1)
    ids[3], ids[200] = ids[200], ids[3]
    y[11] = 1 - y[11]
    numbers[5, 0] += 1
    counts[2] += 1
    for changed in ({"X": X}, {"ids": json.dumps(ids)}, {"y": y}, {"numbers": numbers}, {"category_counts": counts},
                    {"X_test": kept["X_test"][:-1], "y_test": kept["y_test"][:-1]}):
        torch.save({**kept, **changed}, path)
        with pytest.raises(state.AlteredState, match=r"\.unlearn/encoded/run-c\.pt"):
            state.load_encoded(tmp_path, "run-c", "v1")
    torch.save(kept, path)
    assert state.load_encoded(tmp_path, "run-c", "v1") is not None
    torch.save({k: v for k, v in kept.items() if k != state.FINGERPRINT_KEY}, path)
    assert state.load_encoded(tmp_path, "run-c", "v1") is None
    no_numbers = {**kept, "numbers": kept["numbers"][:, :0], "numbers_test": kept["numbers_test"][:, :0]}
    # a table of categories only
    assert state.fingerprint(no_numbers, state.ENCODED_KEYS) != state.fingerprint(kept, state.ENCODED_KEYS)


def test_a_kept_cache_changed_since_it_was_saved_is_refused_on_load(tmp_path):
    """Its H, ∇L_b or XᵀX feeds the certified bound without a pass over the data: one word of H moved
    by one ulp, a norm, XᵀX, an entry dropped is caught (the old code read whatever the file held);
    a cache kept before it had a fingerprint is read as none."""
    from tasks import state

    table = adult_rows()
    bundle, b, _ = train_bundle(table, TrainConfig(certified=True))
    cache = erasure.model_cache(bundle, table, b)
    state.save_cache(tmp_path, "run-h", cache)
    path = tmp_path / ".unlearn" / "cache" / "run-h.pt"
    kept = state._load_sealed(tmp_path, path, "the cache")  # sealed under the project's key (b is in it)
    assert set(state.load_cache(tmp_path, "run-h")) == set(state.CACHE_KEYS) & set(cache)
    H = kept["H"].clone()
    H[4, 7] = torch.nextafter(H[4, 7], H[4, 7] + 1)
    # changed by whoever holds the key (sealed again) or written in clear: the fingerprint catches both
    for write in (lambda content: state._save_sealed(tmp_path, path, content), lambda content: torch.save(content, path)):
        for changed in ({**kept, "H": H}, {**kept, "row_norm_max": kept["row_norm_max"] * 0.5},
                        {**kept, "gram": kept["gram"] * 0}, {k: v for k, v in kept.items() if k != "gradient"}):
            write(changed)
            with pytest.raises(state.AlteredState, match=r"\.unlearn/cache/run-h\.pt"):
                state.load_cache(tmp_path, "run-h")
    torch.save({k: v for k, v in kept.items() if k != state.FINGERPRINT_KEY}, path)
    assert state.load_cache(tmp_path, "run-h") == {}


def test_prefect_does_not_walk_the_rows_of_an_encoded_table_passed_to_a_task():
    """Prefect visits every element of a list or dict passed to a task: with the record ids as a
    list, handing Adult's encoding to `evaluate` cost 0.6 s and each verification 0.1 s."""
    from prefect.utilities.collections import visit_collection

    table = adult_rows()
    bundle, _, _ = train_bundle(table, TrainConfig(tol=1e-6))
    encoded = erasure.encode_version(table, bundle, "v1")
    visited = []
    visit_collection(encoded, lambda x: visited.append(x) or x, return_data=False)
    assert len(visited) < 20 < len(table.frame)


@pytest.mark.parametrize("certified", [False, True])
def test_a_held_out_row_of_a_forgotten_category_is_kept_as_the_new_map_encodes_it(certified):
    """The last training holder of a category deleted while a held-out row holds it: the new map
    forgets the category (its key gone), so serving encodes that row with 0 in the column; the kept
    encoding, which evaluate, the checks' utility and the next request read, kept 1/scale there (a
    certified model's weight there is −b_j/Λ: the row's logit differed, 160.6 kept against 127.4 served)."""
    from tests.flows.conftest import synthetic_people
    from tests.flows.test_feature_map_after_erasure import people_table
    from unlearning.tabular.data import _in_train

    frame = synthetic_people(300, seed=5)
    victim = next(p for p in frame["person"] if _in_train(p))
    held_out = next(p for p in frame["person"] if not _in_train(p))
    frame.loc[frame["person"].isin([victim, held_out]), "city"] = "Zurich"
    table = people_table(frame)
    bundle, b, _ = train_bundle(table, TrainConfig(certified=certified))
    after = correct_table(table, [victim], [], {})
    _, bundle_after, encoded_after = erasure.build_problem(bundle, table, after, b,
                                                           erasure.model_cache(bundle, table, b))
    assert None in bundle_after.encoder.categories["city"]  # Zurich left the map
    assert_same_rows(encoded_after.test, erasure.held_out_data(after, bundle_after))
