"""Which users' model factories (unlearning.images.factory) this process may import to rebuild a
stored image model.

Importing a factory runs the user's code. Naming it to `unlearn train --model-factory` is the
user asking for that; a stored file (a model folder, an MLflow artifact, a registry copied from
elsewhere) naming a module is not. So a stored model is rebuilt only through a factory the user
passed: one that `unlearn train --model-factory` recorded in this project's
`.unlearn/model_factories` (private state, git-ignored; tracking.connect and configure read it
when the process points at the project), or one listed in the environment variable
UNLEARN_MODEL_FACTORIES (comma-separated; e.g. to load the MLflow pyfunc model outside the project).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "UNLEARN_MODEL_FACTORIES"
FILE = Path(".unlearn") / "model_factories"

_project: frozenset[str] = frozenset()  # the factories of the project the process last pointed at


def recorded(root: Path) -> frozenset[str]:
    path = Path(root) / FILE
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip()) \
        if path.is_file() else frozenset()


def use_project(root: Path) -> None:
    """Allow the factories `root` recorded (and only those: a process may point at several projects)."""
    global _project
    _project = recorded(root)


def remember(root: Path, spec: str) -> None:
    """Record a factory the user passed to `train` in the project, and allow it in this process."""
    global _project
    if spec not in recorded(root):
        path = Path(root) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(spec + "\n")
    _project = recorded(root) | {spec}


def allowed() -> frozenset[str]:
    from_env = frozenset(s.strip() for s in os.environ.get(ENV, "").split(",") if s.strip())
    return _project | from_env
