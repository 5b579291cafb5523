"""The temporary folder a Ray task runs its episode in, and the sweep of those a killed worker
left behind.

A task's folder (`apprentice-ray-*` in the node's temporary directory) holds its apprentice
home and, as the process's temporary directory while the episode runs, every temporary folder
the episode makes (clones, bundles). It names its owner in `owner.json`
(`tools.process_owner.ProcessOwner`: pid, start time, boot, host, so a reused pid is not taken
for the owner). The task removes it when it ends; a worker killed mid-episode cannot, so every
later task on the node sweeps folders whose owner is gone (`sweep_orphans`), and the driver
sweeps every node when it closes after a lost episode. The sandbox of a killed worker ends by
itself (`tools.sandbox.heartbeat`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tools.process_owner import ProcessOwner

PREFIX = "apprentice-ray-"
OWNER_FILE = "owner.json"


def new_scratch() -> Path:
    """A fresh task folder owned by this process."""
    scratch = Path(tempfile.mkdtemp(prefix=PREFIX))
    ProcessOwner.current().write(scratch / OWNER_FILE)
    return scratch


def owner_pid(folder: Path) -> int | None:
    """The pid that made `folder` (None when it names none)."""
    owner = ProcessOwner.read(folder / OWNER_FILE)
    return owner.pid if owner else None


def sweep_orphans(root: Path | None = None) -> list[str]:
    """Remove the task folders under `root` (the temporary directory) whose owner is surely
    gone (a folder naming no owner is being made, or is not ours: left alone); the folders
    removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = ProcessOwner.read(folder / OWNER_FILE)
        if folder.is_dir() and owner is not None and owner.gone():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed
