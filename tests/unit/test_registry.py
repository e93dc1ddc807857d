"""The one method registry: `auto` decided in one place for every kind, registration refuses
what the contract cannot hold, look-ups and plugin loading fail in one line."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from unlearning import registry
from unlearning.errors import UnlearnError


def one_line(exc: Exception) -> str:
    message = str(exc)
    assert message and "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize("kind,facts,expected", [
    ("tabular", {"certified": True}, "certified"),
    ("tabular", {"certified": False}, "second_order"),
    ("text", {"windows": registry.AUTO_MAX_WINDOWS}, "suppress"),
    ("text", {"windows": registry.AUTO_MAX_WINDOWS + 1}, "retrain"),
    ("text", {"windows": lambda: 1}, "suppress"),
    ("images", {}, "alignment"),
])
def test_auto_is_decided_by_choose(kind, facts, expected):
    assert registry.choose(kind, "auto", **facts) == expected


def test_an_explicit_method_is_checked_and_facts_are_not_computed():
    def never():
        raise AssertionError("the window count is only needed for auto")

    assert registry.choose("text", "finetune", windows=never) == "finetune"
    with pytest.raises(UnlearnError) as info:
        registry.choose("text", "certified", windows=never)
    message = one_line(info.value)
    assert "does not apply to a language model" in message and "second_order" in message


def test_unknown_kind_is_one_line():
    with pytest.raises(UnlearnError) as info:
        registry.names("audio")
    assert "tabular, text, images" in one_line(info.value)


class Loose(BaseModel):  # no extra="forbid": unknown options would pass silently
    x: int = 0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@pytest.mark.parametrize("kind,name,guarantee,config", [
    ("tabular", "loose", "empirical", Loose),
    ("tabular", "sure", "proven", Strict),
    ("tabular", "auto", "empirical", Strict),
])
def test_register_refuses_what_the_contract_cannot_hold(kind, name, guarantee, config):
    with pytest.raises(ValueError):
        registry.register(kind, name, guarantee, config)


def test_a_registered_method_is_listed_and_run_with_its_config():
    @registry.register("images", "identity_for_test", "empirical", Strict)
    def identity(model, data, request, cfg):
        """Returns the model unchanged (a registry test)."""

    try:
        assert "identity_for_test" in registry.names("images")
        assert registry.get("images", "identity_for_test").summary == "Returns the model unchanged (a registry test)."
        with pytest.raises(UnlearnError) as info:
            registry.config("images", "identity_for_test", {"x": 1})
        assert "valid options: none" in one_line(info.value)
    finally:
        registry.unregister("images", "identity_for_test")
    assert "identity_for_test" not in registry.names("images")


def test_a_plugin_that_cannot_be_loaded_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.PLUGINS_ENV, f"{tmp_path / 'nowhere.py'}")
    with pytest.raises(UnlearnError) as info:
        registry.names("tabular")
    assert "nowhere.py" in one_line(info.value) and registry.PLUGINS_ENV in str(info.value)
    monkeypatch.setenv(registry.PLUGINS_ENV, "no_such_plugin_module")
    with pytest.raises(UnlearnError) as info:
        registry.names("tabular")
    assert "no_such_plugin_module" in one_line(info.value)


@pytest.mark.parametrize("source, says", [("def broken(:\n", "SyntaxError: invalid syntax"),
                                           ("raise RuntimeError('no config')\n", "RuntimeError: no config"),
                                           ("import sys\nsys.exit(3)\n", "SystemExit: 3")])
def test_a_plugin_file_that_fails_to_run_is_one_line(monkeypatch, tmp_path, source, says):
    """Only a missing file or module was one line: a plugin with a syntax error, or one that raised or
    exited while imported, ended the command in a traceback."""
    plugin = tmp_path / "my_broken_methods.py"
    plugin.write_text(source)
    monkeypatch.setenv(registry.PLUGINS_ENV, str(plugin))
    with pytest.raises(UnlearnError) as info:
        registry.names("tabular")
    message = one_line(info.value)
    assert "my_broken_methods.py" in message and says in message


PLUGIN_TAKING_RETRAIN = """
from pydantic import BaseModel, ConfigDict
from unlearning import registry

class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

@registry.register("tabular", "retrain", "exact", Config)
def retrain(problem, cfg):
    \"\"\"A user's own method that happens to be called retrain.\"\"\"
"""


def test_a_plugin_cannot_take_the_name_of_a_registered_method(monkeypatch, tmp_path):
    """A plugin's `retrain` replaced the built-in one unseen: the exact reference that `--verify
    reference` and the audit retrain (references.train runs "retrain"), under the name certificates record."""
    builtin = registry.get("tabular", "retrain").run
    plugin = tmp_path / "my_methods.py"
    plugin.write_text(PLUGIN_TAKING_RETRAIN)
    monkeypatch.setenv(registry.PLUGINS_ENV, str(plugin))
    for _ in range(2):  # refused again on the next look-up (a warm service's next command), not skipped
        with pytest.raises(UnlearnError) as info:
            registry.names("tabular")
        message = one_line(info.value)
        assert "'retrain' is registered twice" in message and "my_methods.py" in message
    monkeypatch.delenv(registry.PLUGINS_ENV)
    assert registry.get("tabular", "retrain").run is builtin


def test_a_plugin_file_named_as_the_built_in_methods_file_cannot_take_retrain(monkeypatch, tmp_path):
    """The origin compared file names alone: a plugin `methods.py` defining `retrain` had the built-in's
    origin (unlearning/tabular/methods.py:retrain) and replaced the exact reference unseen."""
    builtin = registry.get("tabular", "retrain").run
    plugin = tmp_path / "methods.py"
    plugin.write_text(PLUGIN_TAKING_RETRAIN)
    monkeypatch.setenv(registry.PLUGINS_ENV, str(plugin))
    with pytest.raises(UnlearnError, match="'retrain' is registered twice"):
        registry.names("tabular")
    monkeypatch.delenv(registry.PLUGINS_ENV)
    assert registry.get("tabular", "retrain").run is builtin


def test_a_plugin_file_imported_again_registers_its_methods_again(tmp_path):
    """The same file under two module names (the contract suite imports it, UNLEARNFLOW_PLUGINS loads it)."""
    import importlib.util

    plugin = tmp_path / "again.py"
    plugin.write_text(PLUGIN_TAKING_RETRAIN.replace('"retrain"', '"again_for_test"'))
    try:
        for module in ("again_1", "again_2"):
            spec = importlib.util.spec_from_file_location(module, plugin)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert "again_for_test" in registry.names("tabular")
    finally:
        registry.unregister("tabular", "again_for_test")


@pytest.mark.parametrize("name", ["first_order", "second_order", "finetune"])
def test_language_model_configs_default_to_the_tuned_defaults(name):
    """The LM methods' configs replaced `**options`: their defaults must stay those measured and
    documented in deep_influence (bench/text_probe.py), option for option."""
    import inspect

    from unlearning.text import deep_influence

    config = registry.get("text", name).config
    signature = inspect.signature(getattr(deep_influence, name))
    tuned = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    assert tuned == config().model_dump()


def test_suppress_config_defaults_are_the_functions_measured_defaults():
    """suppress's config and its function share one set of defaults (the ones bench.text measured),
    but for the rate: the config's None is half the model's own training rate (lm.suppress_lr), the
    function's default the demo's `small` model's value of it. `teacher` is not a setting: the
    pipeline passes the chain's exact model (lm.TextContext); nor is `relearn`: only the repair of a
    failed update passes it (unlearning.text.repair)."""
    import inspect

    from unlearning.text import charlm, suppress

    signature = inspect.signature(suppress.suppress)
    tuned = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    config = registry.get("text", "suppress").config().model_dump()
    assert config.pop("lr") is None and tuned.pop("lr") == charlm.PRESETS["small"]["lr"] / 2
    assert tuned.pop("relearn") is None  # the update itself never guards against relearning
    assert {k: v for k, v in tuned.items() if k not in ("clip", "teacher")} == config


def test_suppress_passes_are_bounded():
    """`passes` raises the step count with the request's size: an unbounded one (inf) overflowed
    math.ceil inside the update instead of being refused with the other options (review)."""
    from pydantic import ValidationError

    config = registry.get("text", "suppress").config
    for bad in (float("inf"), float("nan"), 101.0, -1.0):
        with pytest.raises(ValidationError):
            config(passes=bad)
    assert config(passes=0).passes == 0
