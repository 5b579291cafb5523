"""Where apprentice keeps its files: one root, overridable with APPRENTICE_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir() -> Path:
    """Worktrees, trajectories and the index live here (APPRENTICE_HOME overrides)."""
    root = os.environ.get("APPRENTICE_HOME")
    path = Path(root) if root else Path(platformdirs.user_data_dir("apprentice"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "APPRENTICE_HOME" if root else "the data directory"
        raise OSError(f"{where} {path} is not a usable directory: {exc.strerror}") from None
    return path


def worktrees_dir() -> Path:
    path = data_dir() / "worktrees"
    path.mkdir(parents=True, exist_ok=True)
    return path


def trajectories_dir() -> Path:
    path = data_dir() / "trajectories"
    path.mkdir(parents=True, exist_ok=True)
    return path
