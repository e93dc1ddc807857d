"""Whether a process still runs: the test behind every "left by a dead process" clean-up (staging
folders of `data add`, private temp folders). No heavy imports: the CLI calls it at start."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True unless no process has this id. One that exists but belongs to another user (signals
    refused) counts as alive: its files are not ours to remove."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
