"""The contract every registered method of every kind keeps, in a tiny world per kind
(tests/contract/kinds.py): registering a method — built in, or from a `plugin_*.py` file — is
enough for it to be checked here. The table methods have a finer contract beside this one
(test_methods.py: residuals recomputed by hand, several request kinds, certification)."""

from __future__ import annotations

import pytest
import torch

from tests.contract import kinds
from unlearning import registry
from unlearning.errors import UnlearnError

CASES = [(kind, name) for kind in registry.KINDS for name in registry.names(kind)]
IDS = [f"{kind}-{name}" for kind, name in CASES]


def one_line(exc: Exception) -> str:
    message = str(exc)
    assert message and "\n" not in message and len(message) < 400, message
    return message


def test_every_kind_has_methods_and_one_auto():
    for kind in registry.KINDS:
        assert "retrain" in registry.names(kind)  # the exact reference every kind is judged by
        assert registry.choose(kind, "auto", certified=False, windows=1) in registry.names(kind)


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_entry_is_well_formed(kind, name):
    method = registry.get(kind, name)
    assert (method.kind, method.name) == (kind, name)
    assert method.guarantee in registry.GUARANTEES
    assert method.summary and "\n" not in method.summary
    assert method.config.model_config.get("extra") == "forbid"
    method.config()  # every option has a default: {} is a valid configuration


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_unknown_option_is_one_line_naming_it_and_the_valid_ones(kind, name):
    with pytest.raises(UnlearnError) as info:
        registry.run(kind, name, kinds.world(kind).context, {"no_such_option": 1})
    message = one_line(info.value)
    assert "no_such_option" in message and "valid options: " in message
    for field in registry.get(kind, name).config.model_fields:
        assert field in message


@pytest.mark.parametrize("kind", registry.KINDS)
def test_unknown_method_is_one_line_listing_the_kinds_methods(kind):
    with pytest.raises(UnlearnError) as info:
        registry.run(kind, "no_such_method", kinds.world(kind).context, {})
    message = one_line(info.value)
    assert "no_such_method" in message and all(name in message for name in registry.names(kind))


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_returns_the_declared_guarantee(kind, name):
    result = kinds.run(kind, name)
    assert result.method == name
    assert result.guarantee == registry.get(kind, name).guarantee


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_leaves_a_usable_model_and_its_inputs_untouched(kind, name):
    world = kinds.world(kind)
    result = kinds.run(kind, name)
    assert all(torch.isfinite(t).all() for t in world.parameters(result))
    assert world.usable(result)
    for before, now in zip(world.initial, world.inputs(), strict=True):
        assert torch.equal(before, now), f"{kind} {name} changed its input"


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_not_farther_from_the_retrained_reference_than_doing_nothing(kind, name):
    assert kinds.world(kind).towards_reference(kinds.run(kind, name))


@pytest.mark.parametrize("kind,name", CASES, ids=IDS)
def test_deterministic(kind, name):
    world = kinds.world(kind)
    again = registry.run(kind, name, world.context, kinds.PRESETS[kind].get(name, {}))
    for a, b in zip(world.parameters(kinds.run(kind, name)), world.parameters(again), strict=True):
        assert torch.equal(a, b)


def test_a_plugin_file_gets_this_suite_by_registering():
    """tests/contract/plugin_example.py registers `damped_newton` and touches no other file."""
    assert ("tabular", "damped_newton") in CASES
