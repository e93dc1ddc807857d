"""The one registry of unlearning methods, for every kind of model (tables, text, images).

A method is a pydantic config (`extra="forbid"`) plus a function, registered under a stable name
for a kind:

    @register("tabular", "noop_shrink", "empirical", NoopShrinkConfig)
    def noop_shrink(problem, cfg): ...

    run("tabular", "noop_shrink", problem, {"factor": 0.5})

What a method function receives and returns depends on its kind, never on the method:

| kind      | function                                  | context given to `run`                     | result        |
|-----------|-------------------------------------------|--------------------------------------------|---------------|
| `tabular` | `fn(problem, cfg) -> methods.Result`      | a `problem.Problem`                        | `Result`      |
| `text`    | `fn(context, cfg) -> DeepUpdate`          | `lm.TextContext(bundle, request, windows)` | `TextResult`  |
| `images`  | `fn(model, data, request, cfg)`           | `images.registry.ImageContext(...)`        | `ImageResult` |

Each kind's module (`methods.py`, `lm.py`, `images/registry.py`) registers its built-in methods and
its `Kind`: how a call is run and timed, and which facts `auto` is decided on. Those modules are
imported on the first look-up of their kind, so importing this module costs nothing; a plugin module
registers its methods by being imported (a test, a notebook, or the modules named in the
UNLEARNFLOW_PLUGINS environment variable, which the CLI's look-ups import).
`choose` is the one place where `auto` is decided, for every kind.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from unlearning.errors import UnlearnError

KINDS = ("tabular", "text", "images")
GUARANTEES = ("exact", "certified", "empirical")
AUTO = "auto"
PLUGINS_ENV = "UNLEARNFLOW_PLUGINS"

# The modules that register each kind's built-in methods and its `Kind` (imported on first use).
_BUILTINS = {"tabular": "unlearning.tabular.methods", "text": "unlearning.text.lm", "images": "unlearning.images.registry"}
_NOUNS = {"tabular": "a table model", "text": "a language model", "images": "an image model"}

# `auto` for a language model: `suppress` (unlearning/text/suppress.py) where it was first shown to
# pass verification (bench.text on the demo model, docs/benchmarks.md), retraining beyond. Measured
# on the demo's three requests in one process — 20 secrets |Z| = 190, 8 secrets |Z| = 75, one card
# |Z| = 9 — each passes the audit's thresholds against its own retraining and the evidence checks at
# about a tenth of retraining's CPU time or less (docs/benchmarks.md, "A cheaper suppress"); 190 is the
# largest request measured. The flow still falls back to retraining if the fast update fails
# verification. (second_order + repair, the previous choice, passed up to |Z| = 37 and missed
# 8 secrets by 1–1.3 bits.)
AUTO_MAX_WINDOWS = 190
# `auto` for a Hugging Face causal LM (facts: hf=True): `npo` (ascent.npo: β = 0.01, 20 steps, KL
# anchor κ = 3), which passed bench.text --transformer's checks on one card, 8 and 20 secrets in one run
# at 12–23× the speed of re-fine-tuning (docs/benchmarks.md; without the KL anchor one card failed at
# +6.4 % per-token perplexity); second_order with its GPT defaults passed one card only. A failed
# verification falls back to re-fine-tuning, as for the char LM.
AUTO_HF = "npo"


@dataclass(frozen=True)
class Method:
    kind: str
    name: str
    guarantee: str
    config: type[BaseModel]
    run: Callable  # the kind's signature (module doc)

    @property
    def summary(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0] if self.run.__doc__ else ""


@dataclass(frozen=True)
class Kind:
    """How a kind runs a method: `execute(method, context, config)` validates the context, runs and
    times the call and returns the kind's result; `facts(context)` the facts `auto` is decided on."""

    name: str
    execute: Callable[[Method, Any, BaseModel], Any]
    facts: Callable[[Any], dict]


_METHODS: dict[str, dict[str, Method]] = {kind: {} for kind in KINDS}
_KINDS: dict[str, Kind] = {}
_plugins_loaded: set[str] = set()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise UnlearnError(f"unknown model kind {kind!r}: choose one of {', '.join(KINDS)}")


def register(kind: str, name: str, guarantee: str, config: type[BaseModel]):
    """Decorator: register `fn` as method `name` of `kind` with guarantee class and config."""
    _check_kind(kind)
    if guarantee not in GUARANTEES:
        raise ValueError(f"guarantee {guarantee!r} is not one of {', '.join(GUARANTEES)}")
    if name == AUTO:
        raise ValueError("'auto' is decided by registry.choose and cannot be registered")
    if config.model_config.get("extra") != "forbid":
        raise ValueError(f"config of {kind} method {name!r} must forbid extra options (extra='forbid')")

    def wrap(fn):
        taken = _METHODS[kind].get(name)
        if taken is not None and _origin(taken.run) != _origin(fn):
            # a plugin's `retrain` silently became the exact reference that `--verify reference` and the
            # audit run, and certificates name the method: a name is one method's for the process
            raise UnlearnError(f"{kind} method {name!r} is registered twice, by {_origin(taken.run)} and by "
                               f"{_origin(fn)}: give the new method a name of its own")
        _METHODS[kind][name] = Method(kind, name, guarantee, config, fn)
        return fn
    return wrap


def _origin(fn: Callable) -> str:
    """Where a method function is defined: its file's full path and its name, the same when a plugin
    file is imported again (under a module name of its own). Not the file's name alone: a plugin
    `methods.py` defining `retrain` was then the built-in's origin, and replaced the exact reference."""
    code = getattr(fn, "__code__", None)
    return f"{Path(code.co_filename).resolve()}:{fn.__qualname__}" if code else repr(fn)


def unregister(kind: str, name: str) -> None:
    """Remove a method (tests that register a temporary one clean up with this)."""
    _METHODS[kind].pop(name, None)


def define_kind(kind: str, execute: Callable, facts: Callable[[Any], dict]) -> None:
    _check_kind(kind)
    _KINDS[kind] = Kind(kind, execute, facts)


def table(kind: str) -> dict[str, Method]:
    """The live name → Method table of a kind, without loading anything (for the kind's own module)."""
    return _METHODS[kind]


def _load(kind: str) -> None:
    _check_kind(kind)
    if kind not in _KINDS:
        importlib.import_module(_BUILTINS[kind])
    load_plugins()


def load_plugins() -> None:
    """Import the modules (dotted names or .py paths, comma-separated) named in UNLEARNFLOW_PLUGINS,
    each once per process: their `register` calls add methods to every look-up."""
    for entry in filter(None, (e.strip() for e in os.environ.get(PLUGINS_ENV, "").split(","))):
        if entry in _plugins_loaded:
            continue
        _plugins_loaded.add(entry)
        try:
            if entry.endswith(".py"):
                path = Path(entry).expanduser().resolve()
                spec = importlib.util.spec_from_file_location(f"unlearnflow_plugin_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(entry)
        except UnlearnError as exc:  # e.g. a method name already taken: tried again next time, not skipped
            _plugins_loaded.discard(entry)
            raise UnlearnError(f"method plugin {entry!r} named in {PLUGINS_ENV}: {exc}") from None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — the user's file: a SyntaxError, what it raised
            _plugins_loaded.discard(entry)
            raise UnlearnError(f"cannot load method plugin {entry!r} named in {PLUGINS_ENV}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def names(kind: str) -> list[str]:
    """The registered method names of a kind, in registration order (built-ins first)."""
    _load(kind)
    return list(_METHODS[kind])


def get(kind: str, name: str) -> Method:
    """The method `name` of `kind`; a one-line UnlearnError listing the valid names otherwise."""
    _load(kind)
    if name in _METHODS[kind]:
        return _METHODS[kind][name]
    valid = ", ".join([AUTO, *_METHODS[kind]])
    for other in KINDS:  # only on this error path: is the name another kind's method?
        _load(other)
    elsewhere = [k for k in KINDS if k != kind and name in _METHODS[k]]
    if elsewhere:
        hint = " (certified needs a convex model)" if name == "certified" else ""
        raise UnlearnError(f"method {name!r} does not apply to {_NOUNS[kind]}: choose one of {valid}{hint}")
    raise UnlearnError(f"unknown method {name!r} for {_NOUNS[kind]}: choose one of {valid}")


def config(kind: str, name: str, options: Mapping | None = None) -> BaseModel:
    """The method's validated config; any problem is one UnlearnError line naming the option and
    the valid ones."""
    method = get(kind, name)
    if options is not None and not isinstance(options, Mapping):
        raise UnlearnError(f"bad options for method {name!r}: expected a mapping of option names "
                           f"to values, got {type(options).__name__}")
    try:
        return method.config(**(options or {}))
    except ValidationError as exc:  # pydantic's report is multi-line; the CLI wants one line
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
        raise UnlearnError(f"bad options for method {name!r}: {problems} "
                           f"(valid options: {', '.join(method.config.model_fields) or 'none'})") from None


def choose(kind: str, requested: str, **facts) -> str:
    """The method to run: `requested` itself (checked to exist for the kind), or what `auto` means.

    auto: tables → `certified` for a certifiably trained model (facts: certified=True), else
    `second_order`, both on the Cholesky path whenever the model version holds H's factor or
    p ≤ 5,000 (`influence.auto_solver`): CG, 16–47 products over all of D′, was slower than the
    cached factor and than retraining on every Adult request, so it is taken only where a dense
    Hessian cannot be formed at all; text → `suppress` up to AUTO_MAX_WINDOWS affected training windows
    (facts: windows=|Z|, an int or a function computing it, called only for auto; hf=True: a Hugging
    Face model, `npo` (AUTO_HF) instead of `suppress`), else `retrain`;
    images → `alignment` for every request, its default setting ≈ 12 % of the training's cost
    (AlignmentConfig), and for a deletion of under 1 % of the images one unrolling step (a pass over
    the deleted images): the cheapest image setting that passed the image checks on every bench run
    (docs/benchmarks.md; the influence updates have no certificate for a non-convex network, and
    retraining is the reference).
    """
    if requested != AUTO:
        return get(kind, requested).name
    _check_kind(kind)
    if kind == "tabular":
        return "certified" if facts.get("certified") else "second_order"
    if kind == "text":
        windows = facts["windows"]
        windows = windows() if callable(windows) else windows
        if windows > AUTO_MAX_WINDOWS:
            return "retrain"
        return AUTO_HF if facts.get("hf") else "suppress"
    return "alignment"


def run(kind: str, name: str, context, options: Mapping | None = None):
    """Validate `options` through the method's config and run it on `context` (module doc: what a
    context and a result are for each kind). `auto` is resolved by `choose` on the context's facts."""
    _load(kind)
    if name == AUTO:
        name = choose(kind, AUTO, **_KINDS[kind].facts(context))
    method = get(kind, name)
    cfg = config(kind, name, options)
    return _KINDS[kind].execute(method, context, cfg)
