"""Unlearning requests: parsing (YAML/JSON), one-line errors, checks against a dataset."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from unlearning.compliance.requests import UnlearningRequest, load_request, validate_request
from unlearning.errors import UnlearnError
from unlearning.tabular.data import correct_table
from unlearning.tabular.files import table_from_frame

METHODS = ["first_order", "second_order", "retrain"]


@pytest.fixture(scope="module")
def table():
    n = 200
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "sex": rng.choice(["F", "M"], n),
            "y": rng.choice(["0", "1"], n),
        }
    )
    return correct_table(table_from_frame("toy", frame, target="y"), [], ["age"], {})


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(call, *args):
    with pytest.raises(UnlearnError) as excinfo:
        call(*args)
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# -- loading ------------------------------------------------------------------------------------


def test_yaml_ints_become_text(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        "id: req-1\nmodel: adult-lr\ndelete_records: [12, 13]\nfix_labels: {7: 1}\n",
    )
    req = load_request(path)
    assert req.delete_records == ["12", "13"] and req.fix_labels == {"7": "1"}
    assert req.method == "auto" and req.kinds() == ["delete_records", "fix_labels"]


def test_json_and_unknown_extensions(tmp_path):
    content = {"id": "r2", "model": "m", "revoke_features": ["sex"]}
    assert load_request(write(tmp_path, "r.json", json.dumps(content))).revoke_features == ["sex"]
    assert load_request(write(tmp_path, "r.req", json.dumps(content))).id == "r2"
    assert load_request(write(tmp_path, "r.txt", "id: r3\nmodel: m\nrevoke_features: [sex]\n")).id == "r3"


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("bad.yaml", "id: r\nmodel: [unclosed\n", "not valid YAML (line 3"),
        ("bad.json", '{"id": "r",\n "model": }', "not valid JSON (line 2"),
        ("list.yaml", "- 1\n- 2\n", "must be a mapping"),
        ("empty.yaml", "", "empty document"),
        ("extra.yaml", "id: r\nmodel: m\ndelete: [1]\n", "unknown fields: delete; allowed fields: id, model, delete_records"),
        ("noid.yaml", "model: m\ndelete_records: [1]\n", "missing the required field(s): id"),
        ("nomodel.yaml", "id: r\ndelete_records: [1]\n", "missing the required field(s): model"),
        ("type.yaml", "id: r\nmodel: m\ndelete_records: 5\n", "delete_records: Input should be a valid list"),
        ("type2.yaml", "id: r\nmodel: m\nfix_labels: [1, 2]\n", "fix_labels: Input should be a valid dictionary"),
        ("bool.json", '{"id": "r", "model": "m", "delete_records": [true]}', "delete_records.0"),
        ("null.yaml", "id: r\nmodel: m\ndelete_records: [~]\n", "delete_records.0"),
        ("nothing.yaml", "id: r\nmodel: m\ndelete_records: []\n", "asks for nothing"),
        ("badid.yaml", "id: 'a b/c'\nmodel: m\ndelete_records: [1]\n", "id: use only letters"),
        ("dotid.yaml", "id: '.'\nmodel: m\ndelete_records: [1]\n", "id: '.' is only dots; use at least one letter"),
        ("dotsid.yaml", "id: '...'\nmodel: m\ndelete_records: [1]\n", "id: '...' is only dots"),
        ("emptymodel.yaml", "id: r\nmodel: ''\ndelete_records: [1]\n", "model: must not be empty"),
    ],
)
def test_bad_request_files(tmp_path, name, text, expected):
    assert expected in error_of(load_request, write(tmp_path, name, text))


# the last three were echoed: they looked like field names (letters, digits, "_")
@pytest.mark.parametrize("key", ["4556 7375 8689 9855", "jo.bloggs@example.com", "+44 20 7946 0958",
                                 "AKIAQ3EGRZ7T5XK2LW9M", "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5", "Tr0ub4dor3hunter2"])
def test_a_value_written_as_a_key_is_counted_never_echoed(tmp_path, key):
    """A mistyped field is named (it helps to fix it); a key that is no plain name — a card number,
    an e-mail or a phone pasted where a field name goes — is not printed, at the top or nested."""
    top = error_of(load_request, write(tmp_path, "top.yaml", f'id: r\nmodel: m\ncolour: red\n"{key}": 1\n'))
    assert "unknown fields: colour, 1 more not shown" in top and key not in top
    alone = error_of(load_request, write(tmp_path, "alone.yaml", f'id: r\nmodel: m\n"{key}": 1\n'))
    assert "unknown fields: 1 not shown" in alone and key not in alone
    nested = error_of(load_request, write(tmp_path, "nested.yaml",
                                          f'id: r\nmodel: m\nredact:\n  detectors: [card]\n  "{key}": 1\n'))
    assert "redact.(a key not shown): Extra inputs are not permitted" in nested and key not in nested


# -- read exactly as written ---------------------------------------------------------------------
# YAML 1.1 (yaml.safe_load) read 010 as 8, 0x10 as 16, 12:30 as 750, yes as True, 1.0 as 1 and
# 1e3 as 1000: the wrong record would be erased.


@pytest.mark.parametrize("written", ["010", "0x10", "12:30", "yes", "no", "on", "off", "1.0", "1e3", "0o17",
                                     "+12", "1_000", "true", ".inf", "2026-01-31"])
def test_yaml_scalars_are_read_as_written(tmp_path, written):
    text = f"id: r\nmodel: m\ndelete_records: [{written}]\nfix_labels: {{{written}: {written}}}\n"
    req = load_request(write(tmp_path, "r.yaml", text))
    assert req.delete_records == [written] and req.fix_labels == {written: written}


@pytest.mark.parametrize("written", ["10", "1.0", "1e3", "-0", "12.50"])
def test_json_numbers_keep_their_text(tmp_path, written):
    text = f'{{"id": "r", "model": "m", "delete_records": [{written}], "fix_labels": {{"a": {written}}}}}'
    req = load_request(write(tmp_path, "r.json", text))
    assert req.delete_records == [written] and req.fix_labels == {"a": written}


def test_ids_and_nulls_where_a_field_may_be_null(tmp_path):
    req = load_request(write(tmp_path, "r.yaml", "id: 010\nmodel: 1.0\ndelete_records: [7]\nforget_class: ~\n"))
    assert (req.id, req.model, req.forget_class) == ("010", "1.0", None)
    assert load_request(write(tmp_path, "c.yaml", "id: r\nmodel: m\nforget_class: 3\n")).forget_class == "3"


@pytest.mark.parametrize(
    "name, text, key, again",
    [
        ("top.yaml", "id: A\nmodel: m\ndelete_records: [1]\nid: B\n", "id", "line 4"),
        ("nested.yaml", "id: A\nmodel: m\nfix_labels:\n  P1: yes\n  P1: no\n", "P1", "line 5"),
        ("flow.yaml", "{id: A, model: m, fix_labels: {P1: yes, P1: no}}\n", "P1", "line 1"),
        ("top.json", '{"id": "A", "model": "m", "delete_records": ["1"], "id": "B"}', "id", '"id"'),
        ("nested.json", '{"id": "A", "model": "m", "fix_labels": {"P1": "yes", "P1": "no"}}', "P1", '"P1"'),
        # the same key written another way is the same key to json.loads
        ("lines.json", '{"id": "A",\n "model": "m",\n "fix_labels": {\n  "P1": "yes",\n  "P\\u0031": "no"}}', "P1",
         '"P\\u0031"'),
        # the same key in other objects is no repeat
        ("apart.json", '{"fix_labels": {"P1": "yes"},\n "delete_records": [{"P1": 1}],\n "id": "A", "id": "B"}', "id",
         '"id"'),
    ],
)
def test_a_key_given_twice_is_refused_by_its_place_never_printed(tmp_path, name, text, key, again):
    """A key can be a personal value (a record id in `fix_labels`): the message names the line
    (for JSON, line and column of the key given again, `again`'s last place in the text), as the
    CSV/JSONL readers do, never the key."""
    message = error_of(load_request, write(tmp_path, name, text))
    place = again if again.startswith("line") else text_place(text, text.rindex(again))
    assert "gives a key twice in one" in message and f"({place})" in message and name in message
    assert repr(key) not in message and f" {key} " not in message  # was: gives the key 'P1' twice


def text_place(text: str, at: int) -> str:
    """'line L, column C' (from 1) of offset `at`, counted independently of the reader."""
    lines = text[:at].split("\n")
    return f"line {len(lines)}, column {len(lines[-1]) + 1}"


def test_no_place_is_made_up_for_json_without_a_repeated_key():
    from unlearning.documents import repeated_key_place

    assert repeated_key_place('{"a": "x:y", "b": ["a", {"a": 1}], "\\"a": 2, "c": {"b": {"b": 0}}}') == ""


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("alias.yaml", "id: r\nmodel: m\ndelete_records: &a [1, 2]\nrevoke_features: *a\n", "anchor or alias"),
        ("laughs.yaml", "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "anchor or alias"),
        ("merge.yaml", "base: &b {model: m}\nr:\n  <<: *b\n", "anchor or alias"),
        ("tag.yaml", "id: r\nmodel: !!python/object:os.system x\n", "YAML tag"),
        ("nan.json", '{"id": "r", "model": "m", "delete_records": [NaN]}', "NaN"),
        ("two.yaml", "id: r\nmodel: m\n---\nid: s\n", "not valid YAML"),
    ],
)
def test_documents_that_could_mean_two_things_or_cost_without_bound(tmp_path, name, text, expected):
    assert expected in error_of(load_request, write(tmp_path, name, text))


@pytest.mark.parametrize("name, text", [("nul.yaml", "id: r\nmodel: m\ndelete_records: [P1]\x00\n"),
                                        ("bell.yml", "id: r\nmodel: m\x07\ndelete_records: [P1]\n"),
                                        ("nul.req", "id: r\x00\nmodel: m\n")])
def test_a_control_character_is_one_line_naming_it(tmp_path, name, text):
    """YAML refuses control characters while reading the stream, before parsing: that error came
    out as a traceback (exit 1) instead of the one line."""
    message = error_of(load_request, write(tmp_path, name, text))
    assert name in message and "control character" in message


@pytest.mark.parametrize("name, text", [("deep.yaml", "id: r\nmodel: m\ndelete_records: " + "[" * 100_000),
                                        ("deep.json", '{"id": "r", "delete_records": ' + "[" * 100_000),
                                        ("deep.yaml", "a:\n" + "".join(" " * i + "- \n" for i in range(1000)))])
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path, name, text):
    assert "levels deep" in error_of(load_request, write(tmp_path, name, text))


def test_a_file_under_the_size_cap_is_read_in_linear_time(tmp_path):
    """An unterminated string full of escaped quotes made the depth scan start a failing match at
    every quote (quadratic: 200 KB took minutes, a file just under the cap about an hour); it must
    cost about what 1 MB of ids does."""
    import time

    from unlearning.documents import MAX_BYTES

    ids = ", ".join(f'"P{i:07d}"' for i in range(MAX_BYTES // 13))
    normal = write(tmp_path, "ids.json", f'{{"id": "r", "model": "m", "delete_records": [{ids}]}}')
    started = time.perf_counter()
    load_request(normal)
    budget = 5 * (time.perf_counter() - started) + 0.5
    hostile = write(tmp_path, "quotes.json", '{"id": "r", "model": "' + '\\"' * 100_000)  # 200 KB
    assert hostile.stat().st_size <= MAX_BYTES
    started = time.perf_counter()
    assert "not valid JSON" in error_of(load_request, hostile)
    assert time.perf_counter() - started < budget


def test_an_oversized_file_is_refused_unread(tmp_path):
    from unlearning.documents import MAX_BYTES

    ids = ", ".join(f"P{i:07d}" for i in range(MAX_BYTES // 8))
    path = write(tmp_path, "big.yaml", f"id: r\nmodel: m\ndelete_records: [{ids}]\n")
    assert path.stat().st_size > MAX_BYTES
    assert "larger than 1024 KiB" in error_of(load_request, path)


def test_missing_file(tmp_path):
    assert "not found" in error_of(load_request, tmp_path / "nope.yaml")


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: p.symlink_to("/dev/zero"), lambda p: os.mkfifo(p)],
                         ids=["folder", "device", "pipe"])
def test_a_path_that_is_not_a_file_is_named_so_not_reported_missing(tmp_path, make):
    """It was 'not found; check the path' for a path that exists: the user is sent looking for a typo."""
    make(tmp_path / "r.yaml")
    message = error_of(load_request, tmp_path / "r.yaml")
    assert "not a regular file" in message and "not found" not in message


def test_content_hash():
    a = UnlearningRequest(id="r", model="m", delete_records=["1", "2"], fix_labels={"3": "1"})
    b = UnlearningRequest(id="r", model="m", delete_records=["2", "1"], fix_labels={"3": "1"})
    c = UnlearningRequest(id="r", model="m", delete_records=["1", "2"], fix_labels={"3": "0"})
    assert a.content_hash() == b.content_hash() != c.content_hash()
    assert len(a.content_hash()) == 64


def test_requests_are_frozen_and_strict():
    req = UnlearningRequest(id="r", model="m", delete_records=["1"])
    with pytest.raises(Exception):
        req.id = "other"
    with pytest.raises(Exception):
        UnlearningRequest(id="r", model="m", delete_records=["1"], extra=1)


# -- against the dataset ------------------------------------------------------------------------


def request(**fields):
    return UnlearningRequest(id="r", model="m", **fields)


def test_a_valid_request_passes(table):
    label = table.frame.loc["5", "y"]
    other = "1" if label == "0" else "0"
    req = request(delete_records=["1", "2"], revoke_features=["sex"], fix_labels={"5": other, "6": table.frame.loc["6", "y"]}, method="second_order")
    validate_request(req, table, METHODS)  # includes a no-op label fix
    validate_request(request(delete_records=["1"]), table, METHODS)  # method "auto"


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"delete_records": ["1", "9999", "x"]}, "2 record ids are not in dataset 'toy' ('9999', 'x')"),
        ({"fix_labels": {"abc": "1"}}, "1 record ids are not in dataset 'toy' ('abc')"),
        ({"delete_records": ["1", "1", "2"]}, "listed more than once in delete_records ('1')"),
        ({"revoke_features": ["colour"]}, "unknown feature 'colour' in revoke_features; valid features: age, sex"),
        ({"revoke_features": ["y"]}, "'y' is the target"),
        ({"revoke_features": ["age"]}, "feature 'age' is already revoked"),
        ({"revoke_features": ["sex", "sex"]}, "more than once in revoke_features: sex"),
        ({"fix_labels": {"3": "2"}}, "label outside the label set ['0', '1'] ('3')"),
        ({"delete_records": ["3"], "fix_labels": {"3": "1"}}, "both deleted and relabelled ('3')"),
        ({"delete_records": ["1"], "method": "magic"}, "unknown method 'magic'; valid methods: auto, first_order"),
    ],
)
def test_requests_that_do_not_fit_the_dataset(table, fields, expected):
    assert expected in error_of(validate_request, request(**fields), table, METHODS)


def test_many_unknown_ids_are_counted_and_a_few_shown(table):
    ids = [f"u{i}" for i in range(50)]
    message = error_of(validate_request, request(delete_records=ids), table, METHODS)
    assert message.startswith("50 record ids") and "'u4', ..." in message and "u5'" not in message


def test_a_request_may_not_remove_a_whole_class(table):
    train_ids = [i for i, t in zip(table.ids(), table.train_mask()) if t]
    ones = [i for i in train_ids if table.frame.loc[i, "y"] == "1"]
    message = error_of(validate_request, request(delete_records=ones), table, METHODS)
    assert "fewer than 2 classes" in message


def test_redact_spec_parses_and_is_refused_for_tables():
    from unlearning.compliance.requests import request_from_dict

    req = request_from_dict({"id": "T1", "model": "m", "redact": {"findings": "all", "policy": "token"}})
    assert req.kinds() == ["redact"]
    with pytest.raises(UnlearnError) as err:
        request_from_dict({"id": "T1", "model": "m", "redact": {"policy": "shred"}})
    assert "shred" in str(err.value) and "\n" not in str(err.value)
    table = table_from_frame("t", pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "a"]}), "y")
    with pytest.raises(UnlearnError, match="text datasets"):
        validate_request(req, table, ["second_order"])


def test_values_with_line_breaks_stay_on_one_line_in_errors(tmp_path, table):
    error_of(load_request, write(tmp_path, "k.yaml", 'id: r\nmodel: m\ndelete_records: [1]\n"a\\nb": 1\n"a\\nb": 2\n'))
    error_of(load_request, write(tmp_path, "u.yaml", 'id: r\nmodel: m\ndelete_records: [1]\n"x\\ny": 1\n'))
    error_of(validate_request, request(delete_records=["a\nb"]), table, METHODS)
    error_of(validate_request, request(revoke_features=["a\nb"]), table, METHODS)  # was two lines


@pytest.mark.parametrize("model, expected", [("../..", "model name '../..' is not allowed"),
                                             ("a/b", "model name 'a/b' is not allowed"),
                                             (".hidden", "is not allowed"),
                                             ("A" * 300, "model name 'of 300 characters' is not allowed")])
def test_a_model_name_that_could_not_be_registered_is_refused(tmp_path, model, expected):
    """`model` names folders (data/<model>, .unlearn/escrow/<model>): '../..' made `forget` hash a
    folder outside the project (a traceback on its sub-folders), 300 characters ended in
    ENAMETOOLONG; only names `train --model` accepts are read."""
    message = error_of(load_request, write(tmp_path, "m.yaml", f'id: r\nmodel: "{model}"\ndelete_records: [1]\n'))
    assert message.startswith("request file 'm.yaml': ") and expected in message, message
    assert load_request(write(tmp_path, "ok.yaml", "id: r\nmodel: people-v2.1_b\ndelete_records: [1]\n")).model


@pytest.mark.parametrize("name", ["r.json", "r.txt", "r.yaml"])
def test_a_byte_order_mark_is_not_content(tmp_path, name):
    """A JSON request saved as "UTF-8 with BOM" was refused as 'not valid JSON (... decode using
    utf-8-sig); fix the syntax', whose syntax is fine; YAML skipped the mark."""
    path = tmp_path / name
    path.write_bytes("\ufeff".encode() + b'{"id": "r", "model": "m", "delete_records": ["010"]}')
    assert load_request(path).delete_records == ["010"]


def test_a_request_id_longer_than_its_limit_is_refused_by_its_length(tmp_path):
    """Any length of id was accepted (up to the 1 MiB file): it names ledger entries, certificates
    and run names, so it has a limit, stated in the one-line error."""
    from unlearning.compliance.requests import MAX_ID

    assert load_request(write(tmp_path, "ok.yaml", f"id: {'R' * MAX_ID}\nmodel: m\ndelete_records: [1]\n")).id
    long = write(tmp_path, "long.yaml", f"id: {'R' * (MAX_ID + 1)}\nmodel: m\ndelete_records: [1]\n")
    message = error_of(load_request, long)
    assert f"id: {MAX_ID + 1} characters; use at most {MAX_ID}" in message and "long.yaml" in message
    # one the ledger stored before the limit is still read (and so processed): the limit is for new requests
    assert load_request(long, new=False).id == "R" * (MAX_ID + 1)


@pytest.mark.parametrize("value", ["4111111111111111", "AKIAIOSFODNN7EXAMPLE"])
def test_a_new_request_whose_id_is_a_secret_is_refused(tmp_path, value):
    """A request id names ledger entries, certificates and runs for good: a card number or a key as the
    id was accepted, kept whole there, and masked in every message since (review, session 18)."""
    path = write(tmp_path, "r.yaml", f"id: '{value}'\nmodel: m\ndelete_records: [1]\n")
    message = error_of(load_request, path)
    assert "request name" in message and "holds personal data or a secret" in message and value not in message
    assert load_request(path, new=False).id == value  # one the ledger stored earlier is still processed


def test_a_dataset_name_longer_than_its_limit_is_refused_only_where_a_dataset_is_added():
    from unlearning.errors import UnlearnError
    from unlearning.storage import MAX_NAME, check_name, check_new_name

    long = "p" * (MAX_NAME + 1)
    check_name(long)  # a dataset added before the limit still loads and saves
    try:
        check_new_name(long)
    except UnlearnError as exc:
        assert f"{MAX_NAME + 1} characters is too long" in str(exc)
    else:
        raise AssertionError("a new dataset name over MAX_NAME was accepted")


@pytest.mark.parametrize("name, detector", [("AKIAQ3EGRZ7T5XK2LW9M", "secret"),
                                            ("ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "secret"),
                                            ("4111111111111111", "card")])
def test_a_new_model_name_that_is_a_secret_is_refused_without_printing_it(name, detector):
    """`train --model AKIA…` registered a model named with an AWS key, kept whole in MLflow, certificates
    and the ledger; the names pass the character rule."""
    from unlearning.detect import mask
    from unlearning.storage import check_new_model_name

    with pytest.raises(UnlearnError) as refused:
        check_new_model_name(name)
    assert name not in str(refused.value) and mask(name, detector) in str(refused.value)
    assert f"holds personal data or a secret ({detector})" in str(refused.value)


def test_a_new_dataset_name_that_is_a_card_number_is_refused_and_ordinary_names_are_not():
    import re

    from unlearning.detect import mask
    from unlearning.storage import check_new_model_name, check_new_name

    card = "4111111111111111"
    with pytest.raises(UnlearnError, match=re.escape(f"dataset name '{mask(card, 'card')}' holds personal data")):
        check_new_name(card)
    for name in ("adult", "people-v2", "shakespeare_2026-12-06", "customers-0612345678", "f5fd83eeef3158492ebf"):
        check_new_name(name)
        check_new_model_name(name.upper())


def test_a_request_for_a_model_named_so_before_names_were_checked_still_loads(tmp_path):
    """Only a name being made is refused: a model registered under such a name earlier stays erasable."""
    from unlearning.compliance.requests import load_request

    path = tmp_path / "r.yaml"
    path.write_text("id: R1\nmodel: AKIAQ3EGRZ7T5XK2LW9M\ndelete_records: [P1001]\n")
    assert load_request(path).model == "AKIAQ3EGRZ7T5XK2LW9M"


def test_a_name_flagged_by_the_detectors_is_refused_only_when_new():
    """data add NAME --replace and train --model NAME of one named so before the rule: what the erased-data
    refusals tell the user to do (review, session 18)."""
    from unlearning.errors import UnlearnError
    from unlearning.storage import check_new_model_name, check_new_name

    with pytest.raises(UnlearnError, match="holds personal data or a secret"):
        check_new_model_name("AKIAIOSFODNN7EXAMPLE")
    check_new_model_name("AKIAIOSFODNN7EXAMPLE", exists=True)
    with pytest.raises(UnlearnError, match="holds personal data or a secret"):
        check_new_name("4111111111111111")
    check_new_name("4111111111111111", exists=True)
