"""The contract suite runs over every registered method of every kind. Registering is enough: the
built-in methods register when their kind is first looked up, and every `plugin_*.py` file in
this folder is loaded here, before the test modules are collected, as a project loads the files
named in UNLEARNFLOW_PLUGINS."""

from __future__ import annotations

import importlib
from pathlib import Path

for _plugin in sorted(Path(__file__).parent.glob("plugin_*.py")):
    importlib.import_module(f"tests.contract.{_plugin.stem}")
