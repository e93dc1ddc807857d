"""The audit's open marker (tasks.audit_record.open_marker) on a disk that refuses the write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# RLIMIT_FSIZE 0: every write of a byte fails (EFBIG) as on a full disk, while creating a file still works
FULL_DISK_MARKER = """
import resource, signal, sys
from pathlib import Path
from tasks import audit_record
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
try:
    audit_record.open_marker(Path(sys.argv[1]), "AUDIT-people-20261206T080000000000", "people")
except OSError:
    sys.exit(3)
sys.exit(0)
"""


def test_a_marker_the_disk_refuses_is_not_left_behind_empty(tmp_path):
    (tmp_path / ".unlearn" / "audits").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", FULL_DISK_MARKER, str(tmp_path)], cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr[-2000:]  # the write failed and said so
    assert list((tmp_path / ".unlearn" / "audits").iterdir()) == []  # not an empty marker, nor its temp file
