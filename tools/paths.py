"""Map the paths a model writes to files inside the workspace, and never outside it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tools.base import ToolError
from tools.sandbox.base import WORKSPACE


def resolve_in_workspace(path: str, workspace: Path) -> Path:
    """Host path for `path` (relative, or absolute under /workspace); refuse anything outside."""
    if not path or not path.strip():
        raise ToolError("path is empty; give a path relative to the repository root.")
    posix = PurePosixPath(path.strip())
    if posix.is_absolute():
        try:
            posix = posix.relative_to(WORKSPACE)
        except ValueError:
            raise ToolError(
                f"{path} is outside the workspace; use a path under {WORKSPACE} "
                "or relative to the repository root."
            ) from None
    root = workspace.resolve()
    candidate = (root / posix).resolve()
    if candidate != root and root not in candidate.parents:
        raise ToolError(f"{path} resolves outside the workspace ({WORKSPACE}); refusing.")
    if ".git" in candidate.relative_to(root).parts:
        raise ToolError(f"{path} is inside .git; use git through the bash tool instead.")
    return candidate


def display_path(host_path: Path, workspace: Path) -> str:
    """How a host path is shown to the model: relative to the repository root."""
    rel = host_path.resolve().relative_to(workspace.resolve())
    return str(rel) if str(rel) != "." else "."


def match_workspace_owner(host_path: Path, workspace: Path) -> None:
    """Give a file created by the host the workspace's owner, so the sandbox user can edit it."""
    if os.geteuid() != 0:
        return
    owner = workspace.stat()
    current = host_path
    root = workspace.resolve()
    while current != root and root in current.parents:
        st = current.stat()
        if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(current, owner.st_uid, owner.st_gid)
        current = current.parent
