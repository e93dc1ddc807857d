"""A failure that is not an UnlearnError is kept or printed masked too: the reason a rolled-back or
unpurged model version keeps, the warnings of a task runner that failed or a scheduler that cannot be
reached. Any exception may quote what the user gave (a KeyError of a column name, an OSError of a
path, a client's error of an address); all go through unlearning.errors.failure_reason."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.unit.test_errors import SECRETS
from unlearning.detect import mask
from unlearning.errors import MAX_MESSAGE, failure_reason

CARD, EMAIL = SECRETS["card"][0], SECRETS["e-mail"][0]


def raised_by_a_user_value(value: str) -> list[BaseException]:
    return [KeyError(value), OSError(errno.ENOENT, "No such file or directory", f"/ckpt/{value}/config.json"),
            RuntimeError(f"model {value!r} failed\nTraceback follows"), ValueError(f"cannot parse {value}")]


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_a_failure_reason_is_one_masked_line(kind):
    value, detector = SECRETS[kind]
    for exc in raised_by_a_user_value(value):
        reason = failure_reason(exc)
        assert value not in reason and mask(value, detector) in reason, (type(exc).__name__, reason)
        assert "\n" not in reason
    assert failure_reason(RuntimeError("")) == "RuntimeError"
    assert failure_reason(RuntimeError("a\x1b[2Jb")) == "a\\x1b[2Jb"  # no terminal command either


def test_a_failure_reason_is_masked_before_it_is_cut():
    """Cut first, at 300 characters, a card number across the cut kept its first digits raw."""
    reason = failure_reason(RuntimeError("x" * 290 + " " + CARD + " and more"))
    assert len(reason) == 300 and "4111" not in reason
    long = failure_reason(RuntimeError("y" * (MAX_MESSAGE * 2)), limit=50)
    assert long == "y" * 50


def test_a_purge_that_failed_keeps_its_reason_masked(tmp_path, monkeypatch):
    """purge_model_version's "purge failed: …" goes into the certificate and the console: an OSError
    of an artifact path was kept whole."""
    from tasks import release, tracking

    def fails(name, version):
        raise OSError(errno.EACCES, "Permission denied", f"/mnt/artifacts/{CARD}/model.pt")

    monkeypatch.setattr(tracking, "delete_version_artifacts", fails)
    version = SimpleNamespace(version="2", run_id="r", tags={})
    (entry,) = release.purge_model_version(tmp_path, "people", version, datetime.now(UTC))
    assert entry["action"].startswith("purge failed: ")
    assert CARD not in entry["action"] and mask(CARD, "card") in entry["action"]


@pytest.mark.parametrize("flow", ["audit", "comply"])
def test_a_task_runner_that_failed_is_warned_about_masked(tmp_path, monkeypatch, capsys, flow):
    """flows/audit.py printed the task runner's error raw (comply's was masked); both now alike."""
    import importlib

    from tasks import references

    module = importlib.import_module(f"flows.{flow}")

    def fails(runner, address, workers):
        raise RuntimeError(f"cannot start workers for {EMAIL}\nsecond line")

    monkeypatch.setattr(references, "make_task_runner", fails)
    targets = ["people"] if flow == "audit" else [Path("r.yaml")]
    extra = {"verify": "reference"} if flow == "comply" else {}
    assert module.prefetch_references(tmp_path, targets, "dask", None, None, **extra) == {}
    err = capsys.readouterr().err
    assert EMAIL not in err and mask(EMAIL, "email") in err
    assert "warning: the dask task runner failed (cannot start workers for " in err


@pytest.mark.parametrize("flow", ["audit", "comply"])
def test_a_scheduler_that_cannot_be_reached_is_warned_about_masked(tmp_path, monkeypatch, capsys, flow):
    """`--dask-address tcp://4111111111111111:8786`: the address and the client's error quoting it
    were printed whole (the card number right after '//')."""
    import importlib

    from tasks import references

    module = importlib.import_module(f"flows.{flow}")
    address = f"tcp://{CARD.replace(' ', '')}:8786"
    targets = ["people"] if flow == "audit" else [Path("r.yaml")]
    extra = {"verify": "reference"} if flow == "comply" else {}
    real = references.unreachable
    monkeypatch.setattr(references, "unreachable", lambda a: real(a, timeout="1s"))  # the real client, shorter
    assert module.prefetch_references(tmp_path, targets, "dask", address, None, **extra) == {}
    err = capsys.readouterr().err
    assert "warning: the Dask scheduler tcp://" in err and "cannot be reached (" in err
    assert CARD.replace(" ", "") not in err and mask(CARD.replace(" ", ""), "card") in err


PASSWORD = "Hunter2-Hunter2"


@pytest.mark.parametrize("flow", ["audit", "comply"])
@pytest.mark.parametrize("address", [f"tcp://alice:{PASSWORD}@127.0.0.1:1", f"alice:{PASSWORD}@127.0.0.1:1"])
def test_a_scheduler_address_with_a_password_is_warned_about_without_its_user_and_password(
        tmp_path, monkeypatch, capsys, flow, address):
    """`--dask-address tcp://alice:secret@host:8786` was printed with its user name and password (the
    warning's address and the client's error quoting it)."""
    import importlib

    from tasks import references

    module = importlib.import_module(f"flows.{flow}")
    targets = ["people"] if flow == "audit" else [Path("r.yaml")]
    extra = {"verify": "reference"} if flow == "comply" else {}
    real = references.unreachable
    monkeypatch.setattr(references, "unreachable", lambda a: real(a, timeout="1s"))
    assert module.prefetch_references(tmp_path, targets, "dask", address, None, **extra) == {}
    err = capsys.readouterr().err
    assert f"warning: the Dask scheduler {address.split('alice')[0]}***@127.0.0.1:1 cannot be reached (" in err
    assert PASSWORD not in err and "alice" not in err


@pytest.mark.parametrize("address, shown", [
    (f"alice:{PASSWORD}@10.0.0.5:8786", "***@10.0.0.5:8786"),
    ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    # a '/' or an '@' in the password: the old pattern stopped at the '/' and printed it all
    ("tcp://alice:pa/ss@10.0.0.5:8786", "tcp://***@10.0.0.5:8786"),
    ("alice:pa/ss@10.0.0.5:8786", "***@10.0.0.5:8786"),
    ("tls://alice:p@ss/w:rd@10.0.0.5:8786", "tls://***@10.0.0.5:8786"),
])
def test_an_address_is_shown_without_its_user_and_password(address, shown):
    from tasks.references import shown_address

    assert shown_address(address) == shown


@pytest.mark.parametrize("password", [PASSWORD, "pa/ss"])
def test_a_client_error_quoting_the_address_in_its_own_spelling_shows_no_user_or_password(password):
    """A client may quote the address with a scheme of its own, or the user and password alone."""
    from tasks.references import address_hidden

    address = f"alice:{password}@10.0.0.5:8786"
    hidden = address_hidden(f"Timed out trying to connect to tcp://{address} after 1 s", address)
    assert hidden == "Timed out trying to connect to tcp://***@10.0.0.5:8786 after 1 s"
    hidden = address_hidden(f"auth failed for alice:{password} at 10.0.0.5", address)
    assert hidden == "auth failed for *** at 10.0.0.5"


def test_the_dask_task_runner_fails_to_start_without_the_user_and_password():
    """Dask refuses such an address quoting it as 'alice:password@host' (no scheme), which no detector
    finds: a flow whose task runner failed to start recorded it whole in Prefect's database."""
    pytest.importorskip("prefect_dask")
    from tasks.references import make_task_runner

    runner, _ = make_task_runner("dask", f"tcp://alice:{PASSWORD}@127.0.0.1:1", None)
    assert type(runner.duplicate()) is type(runner)  # what Prefect's engine enters
    with runner, pytest.raises(RuntimeError) as raised:
        runner.client  # noqa: B018 — the runner connects on first use
    assert str(raised.value) == "invalid address '***@127.0.0.1:1'; maybe: ipv6 needs brackets like [::1]"
    assert raised.value.__suppress_context__


def test_a_failure_reason_keeps_the_first_line_of_a_library_error_not_the_input_it_quotes():
    """pydantic's later lines quote the input whole (a name and an address no detector knows), and a
    ledger keeps its reasons for good: the first line only, as tasks.batches.first_line kept."""
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        age: int

    try:
        M(age="Jane Doe, 12 Elm Street")
    except ValidationError as exc:
        reason = failure_reason(exc)
    assert reason == "1 validation error for M", reason


def test_an_exception_and_its_chain_are_masked_in_place_keeping_type_and_errno():
    """What a failed Prefect task records (tasks.common.step): the message, the chain's messages and an
    OSError's file name, masked; the type, errno and the UnlearnError (masked when shown) unchanged."""
    from unlearning.errors import UnlearnError, mask_in_place

    try:
        try:
            raise OSError(errno.ENOENT, "No such file or directory", f"/ckpt/{CARD}/config.json")
        except OSError as inner:
            raise RuntimeError(f"loading {EMAIL} failed") from inner
    except RuntimeError as exc:
        mask_in_place(exc)
        outer = exc
    inner = outer.__cause__
    assert type(outer) is RuntimeError and type(inner) is FileNotFoundError and inner.errno == errno.ENOENT
    for text in (str(outer), repr(outer), str(inner), repr(inner)):
        assert CARD not in text and EMAIL not in text, text
    assert mask(EMAIL, "email") in str(outer) and mask(CARD, "card") in str(inner)
    own = UnlearnError(f"unknown feature {CARD!r}")
    mask_in_place(own)
    assert own.args == (f"unknown feature {CARD!r}",) and CARD not in str(own)


def test_every_flow_records_its_failure_and_parameters_masked():
    """Every Prefect flow in flows/ is made by flows.runs.flow or outcome_flow, whose function masks its
    exception in place before Prefect records it, and a MaskedFlow, which masks the parameters Prefect
    stores and refuses ones of the wrong type (tests/flows/test_faults.py checks the database)."""
    import importlib
    import pkgutil

    from prefect import Flow

    import flows
    from flows.runs import MaskedFlow
    from unlearning.errors import masking_failures

    wrapper = masking_failures(lambda: None).__code__
    found = {}
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        found.update({f"{info.name}.{k}": v for k, v in vars(module).items() if isinstance(v, Flow)})
    assert len(found) >= 11, sorted(found)
    assert [name for name, f in found.items() if f.fn.__code__ is not wrapper] == []
    assert [name for name, f in found.items() if not isinstance(f, MaskedFlow)] == []


@pytest.mark.parametrize("flow", ["audit", "comply"])
def test_a_task_runner_failing_on_a_scheduler_address_with_a_password_is_warned_about_without_it(
        tmp_path, monkeypatch, capsys, flow):
    """The task runner's error quoting the scheduler's address printed its user name and password."""
    import importlib

    from tasks import references

    module = importlib.import_module(f"flows.{flow}")
    address = f"tcp://alice:{PASSWORD}@10.0.0.5:8786"

    def fails(runner, address, workers):
        raise OSError(f"Timed out trying to connect to {address} after 30 s")

    monkeypatch.setattr(references, "unreachable", lambda a: None)
    monkeypatch.setattr(references, "make_task_runner", fails)
    targets = ["people"] if flow == "audit" else [Path("r.yaml")]
    extra = {"verify": "reference"} if flow == "comply" else {}
    assert module.prefetch_references(tmp_path, targets, "dask", address, None, **extra) == {}
    err = capsys.readouterr().err
    assert "task runner failed (Timed out trying to connect to tcp://***@10.0.0.5:8786 after 30 s)" in err
    assert PASSWORD not in err and "alice" not in err


def test_the_dask_task_runner_does_not_log_the_address_it_connects_to():
    """prefect-dask logs "Connecting to an existing Dask cluster at <address>" at INFO: with
    PREFECT_LOGGING_LEVEL=INFO the address was printed whole, password and all."""
    import logging

    from tasks.references import configure_dask

    configure_dask()
    assert not logging.getLogger("prefect.task_runner.dask").isEnabledFor(logging.INFO)
