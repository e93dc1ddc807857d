"""What a user sees of a flow run in the Prefect UI: its name after the requests it processes, and
a final state that says whether the work it reports succeeded.

A forget run whose verification failed, or a comply run with a failed request, did its job without
an exception (the rollback is the designed outcome) but must not look "Completed": such a flow
returns `failed_run(reason, summary)`, a Failed state that carries the summary. Called from Python
(the CLI, comply, the demos) an `OutcomeFlow` still returns that summary, as a plain flow returns
its value, so callers read `verified`/`failed` from it as before; served deployments end Failed.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect import Flow
from prefect.states import Failed, State
from prefect.utilities.hashing import file_hash

from unlearning.errors import UnlearnError, masked, masking_failures

NAME_LIMIT = 120  # request ids shown in a run name before "+N more": a name stays one readable line


# Parameters Prefect would otherwise store whole in its database with the flow run: a Dask scheduler's
# address may carry a user name and password (tcp://user:secret@host:8786). Handed over as a
# SecretStr, stored as '**********'; the flow reads it with tasks.references.runner_setting.
SECRET_PARAMETERS = ("dask_address",)


class MaskedFlow(Flow):
    """A Prefect flow that keeps the values it is given out of Prefect's database and logs but masked.

    Prefect stores a flow run's parameters whole with the run, and on a parameter of the wrong type
    logs them all, with pydantic's `input`, on the console: `keep_superseded_days="4111111111111111"`
    was stored and printed whole, and a password given for an int or bool could not be masked at all,
    no detector knowing it. A call whose parameters do not validate is refused before a run is
    recorded (`refuse_invalid_parameters`), with no value quoted; Prefect's log of a failed validation
    is dropped (the engine's own line quotes no value); the parameters stored with a run are masked
    (`masked_parameters`). The run itself gets the values as given."""

    def __call__(self, *args: Any, return_state: bool = False, wait_for=None, **kwargs: Any):
        refuse_invalid_parameters(self, args, kwargs)
        return super().__call__(*args, return_state=return_state, wait_for=wait_for, **kwargs)

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        with _dropped_in_this_thread(logging.getLogger("prefect.flows")):
            return super().validate_parameters(parameters)

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return masked_parameters(super().serialize_parameters(parameters))

    def with_options(self, **options: Any) -> "MaskedFlow":
        changed = super().with_options(**options)  # Prefect builds a plain Flow here
        changed.__class__ = type(self)
        return changed


def refuse_invalid_parameters(flow: Flow, args: tuple, kwargs: dict) -> None:
    """UnlearnError (one line, no value quoted) when a call's parameters are not of the types `flow`'s
    signature names; nothing recorded in Prefect."""
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import get_call_parameters

    if not flow.should_validate_parameters:
        return
    try:
        flow.validate_parameters(get_call_parameters(flow.fn, args, kwargs))
    except ParameterTypeError as exc:
        problems = "; ".join(line.strip(" -") for line in str(exc).splitlines()[1:]) or str(exc)
        raise UnlearnError(f"flow '{flow.name}' was given parameters of the wrong type ({problems}); "
                           f"pass the types its signature names") from None


def masked_parameters(value: Any) -> Any:
    """Serialized parameters with every text, and every whole number, the detectors flag masked (as
    text): what Prefect stores with a flow run, not what the run is given."""
    if isinstance(value, dict):
        return {key: masked_parameters(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked_parameters(item) for item in value]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        shown = masked(str(value))
        return shown if shown != str(value) else value
    return value


class _DroppedInThisThread(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextmanager
def _dropped_in_this_thread(logger: logging.Logger) -> Iterator[None]:
    """`logger`'s records from this thread dropped for the while: Prefect's log of a failed validation
    prints every parameter given (`Parameters: {...}`) whole."""
    drop = _DroppedInThisThread()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class OutcomeFlow(MaskedFlow):
    """A Prefect flow whose function may return `failed_run(...)`; calling it returns the summary
    either way (`return_state=True` gives the state). An exception still propagates as it would.
    SECRET_PARAMETERS given as text, by name or by position, are handed to Prefect as SecretStr."""

    def __call__(self, *args: Any, return_state: bool = False, wait_for=None, **kwargs: Any):
        from flows.settings import flow_run_settings

        args, kwargs = secrets_hidden(self.fn, args, kwargs)
        with flow_run_settings():  # the command's own temporary server is up (flows.settings.PrefectServer)
            state = super().__call__(*args, return_state=True, wait_for=wait_for, **kwargs)
        if return_state:
            return state
        return summary_of(state)


def secrets_hidden(fn: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """(args, kwargs) of a call to the flow function `fn` with its SECRET_PARAMETERS given as text made
    SecretStr, given by name or by position (`comply_flow(root, None, "dask", address)`)."""
    from pydantic import SecretStr

    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    for name in SECRET_PARAMETERS:
        if isinstance(bound.arguments.get(name), str):
            bound.arguments[name] = SecretStr(bound.arguments[name])
    return bound.args, bound.kwargs


def flow(**options: Any):
    """`prefect.flow(...)` whose failure Prefect records masked, as tasks.common.step's: a flow run that
    fails keeps its exception's message in its state and logs its traceback into Prefect's database,
    and an error raised in the flow's own body may quote a user's value (a path holding a card number);
    a MaskedFlow, whose parameters Prefect stores and logs masked too. Every flow in flows/ is made with
    it or `outcome_flow`."""
    return lambda fn: MaskedFlow(failure_masked(fn), **as_written(fn, options))


def outcome_flow(**options: Any):
    """`flow(...)` for an OutcomeFlow."""
    return lambda fn: OutcomeFlow(failure_masked(fn), **as_written(fn, options))


def failure_masked(fn: Callable) -> Callable:
    """The flow's function wrapped by masking_failures, with its signature's types resolved: Prefect
    validates a flow's parameters against the types its signature names, looked up in the module of
    the function it holds (the wrapper's, unlearning.errors)."""
    run = masking_failures(fn)
    run.__signature__ = inspect.signature(fn, eval_str=True)
    return run


def as_written(fn: Callable, options: dict) -> dict:
    """`options` with the version Prefect gives a flow by default, the hash of its function's file:
    Prefect would otherwise hash the wrapper's."""
    if options.get("version") is None:
        options = {**options, "version": file_hash(inspect.getsourcefile(fn))}
    return options


def failed_run(reason: str, summary: dict) -> State:
    """The final state of a run that finished its work but failed it: Failed with `reason` as the
    message shown in the UI and the summary as its data."""
    return Failed(message=reason, data=summary)


def summary_of(state: State) -> Any:
    """The summary a run returned, Failed or not; a run that raised raises its exception here."""
    if state.is_failed():
        data = state.result(raise_on_failure=False)
        if isinstance(data, dict):
            return data
    return state.result()


def requests_label(ids: Iterable[str], limit: int = NAME_LIMIT) -> str:
    """'A, B, C +2 more': the request ids in order, as many as fit in `limit` characters."""
    ids = [str(i) for i in ids]
    shown: list[str] = []
    for i, request_id in enumerate(ids):
        rest = len(ids) - i - 1
        more = f" +{rest} more" if rest else ""
        if shown and len(", ".join([*shown, request_id]) + more) > limit:
            break
        shown.append(request_id[:limit])
    hidden = len(ids) - len(shown)
    return ", ".join(shown) + (f" +{hidden} more" if hidden else "")


def rename_current_run(name: str) -> None:
    """Rename the flow run this code runs in (a name known only once the run has started)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id:
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(flow_run.id, name)
