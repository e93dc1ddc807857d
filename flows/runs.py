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
from collections.abc import Callable, Iterable
from typing import Any

from prefect import Flow
from prefect.states import Failed, State
from prefect.utilities.hashing import file_hash

from unlearning.errors import masking_failures

NAME_LIMIT = 120  # request ids shown in a run name before "+N more": a name stays one readable line


# Parameters Prefect would otherwise store whole in its database with the flow run: a Dask scheduler's
# address may carry a user name and password (tcp://user:secret@host:8786). Handed over as a
# SecretStr, stored as '**********'; the flow reads it with tasks.references.runner_setting.
SECRET_PARAMETERS = ("dask_address",)


class OutcomeFlow(Flow):
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

    def with_options(self, **options: Any) -> "OutcomeFlow":
        changed = super().with_options(**options)  # Prefect builds a plain Flow here
        changed.__class__ = type(self)
        return changed


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
    and an error raised in the flow's own body may quote a user's value (a path holding a card number).
    Every flow in flows/ is made with it or `outcome_flow`."""
    return lambda fn: Flow(masked(fn), **as_written(fn, options))


def outcome_flow(**options: Any):
    """`flow(...)` for an OutcomeFlow."""
    return lambda fn: OutcomeFlow(masked(fn), **as_written(fn, options))


def masked(fn: Callable) -> Callable:
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
