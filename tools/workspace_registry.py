"""A note on disk per session workspace, so later commands can find, list, undo and prune it.

Each note sits next to the workspace folder (`<sessions>/<repo-key>/<session-id>.json`),
outside what the sandbox can reach. It records which process owns the session, so a session
whose process has exited (normally or not) counts as ended.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from pydantic import BaseModel, Field

from tools.locations import worktrees_dir
from tools.process_owner import ProcessOwner, process_started


class WorkspaceRecord(BaseModel):
    """What is known about one session's workspace, written when it is created."""

    session_id: str
    repo_path: str = Field(description="The user's repository (its working tree root).")
    path: str = Field(description="The session's working tree, mounted at /workspace.")
    branch: str = Field(description="The session branch in the user's repository.")
    base_commit: str
    git_dir: str = Field(description="Host-only git metadata of the working tree.")
    owner: tuple[int, int] | None = Field(
        default=None, description="uid, gid the files are given to."
    )
    created_at: float = Field(default_factory=time.time)
    pid: int = Field(default_factory=os.getpid, description="Process running the session.")
    pid_started: str | None = Field(
        default_factory=lambda: process_started(os.getpid()),
        description="That process's start time, so a reused pid is not taken for it.",
    )
    removed_at: float | None = Field(default=None, description="When the working tree was removed.")

    def active(self) -> bool:
        """Whether the process that runs the session is still alive."""
        if self.removed_at is not None:
            return False
        if self.pid == os.getpid():
            return True
        owner = ProcessOwner(self.pid, self.pid_started, boot=None, host=socket.gethostname())
        return not owner.gone()

    def state(self) -> str:
        """`active` (its process runs), `ended` (working tree left), `removed` (branch only)."""
        if self.removed_at is not None or not Path(self.path).exists():
            return "removed"
        return "active" if self.active() else "ended"


def record_file(workspace_path: Path) -> Path:
    """Where the note of the workspace at `workspace_path` is kept."""
    return workspace_path.parent / f"{workspace_path.name}.json"


def save_record(record: WorkspaceRecord) -> None:
    """Write the note atomically (a reader never sees half of it)."""
    target = record_file(Path(record.path))
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(record.model_dump_json(indent=2))
    os.replace(temporary, target)


def load_record(workspace_path: Path) -> WorkspaceRecord | None:
    """The note of the workspace at `workspace_path`, if there is a readable one."""
    try:
        return WorkspaceRecord.model_validate_json(record_file(workspace_path).read_text())
    except (OSError, ValueError):
        return None


def delete_record(record: WorkspaceRecord) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_file(Path(record.path)).unlink()


def list_records() -> list[WorkspaceRecord]:
    """Every recorded session, oldest first (unreadable notes are skipped)."""
    records = []
    for note in worktrees_dir().glob("*/*.json"):
        with contextlib.suppress(OSError, ValueError):
            records.append(WorkspaceRecord.model_validate_json(note.read_text()))
    return sorted(records, key=lambda r: r.created_at)


def matching_records(session_id: str) -> list[WorkspaceRecord]:
    """The notes of session `session_id`, or of the sessions whose id starts with it."""
    records = list_records()
    exact = [r for r in records if r.session_id == session_id]
    return exact or [r for r in records if r.session_id.startswith(session_id)]
