"""The temporary folder a Ray task runs its episode in, and the sweep of those a killed worker
left behind.

A task's folder (`apprentice-ray-*` in the node's temporary directory) holds its apprentice
home and, as the process's temporary directory while the episode runs, every temporary folder
the episode makes (clones, bundles). It names its owner in `owner.json` (pid and the process's
start time, so a reused pid is not taken for the owner). The task removes it when it ends; a
worker killed mid-episode cannot, so every later task on the node sweeps folders whose owner is
gone (`sweep_orphans`), and the driver sweeps every node when it closes after a lost episode.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "apprentice-ray-"
OWNER_FILE = "owner.json"


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None if it is gone
    (or a zombie); "" where /proc is not there (the pid alone then says whether it lives)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # dead or a zombie; starttime


def new_scratch() -> Path:
    """A fresh task folder owned by this process."""
    scratch = Path(tempfile.mkdtemp(prefix=PREFIX))
    (scratch / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(),
                                                  "started": _started(os.getpid())}))
    return scratch


def owner_pid(folder: Path) -> int | None:
    """The pid that made `folder` (None when it names none)."""
    try:
        return int(json.loads((folder / OWNER_FILE).read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _orphaned(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), owner["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # being made right now, or not ours: left alone
    if pid == os.getpid():
        return False
    now = _started(pid)
    return now is None or (bool(now) and now != started)


def sweep_orphans(root: Path | None = None) -> list[str]:
    """Remove the task folders under `root` (the temporary directory) whose owner is gone;
    the folders removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if folder.is_dir() and _orphaned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
