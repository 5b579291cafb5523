"""Map the paths a model writes to paths relative to the workspace, and never outside it.

Only the text of the path is checked here; opening it safely (no symlink leads out of the
workspace, even one planted meanwhile) is `tools.workspace_fs`'s job.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from tools.base import ToolError
from tools.sandbox.base import WORKSPACE

MAX_PATH_CHARS = 4_096


def is_git_reserved(relative: str) -> bool:
    """Whether git reserves the path: a `.git` component anywhere, in any letter case (git's
    own check is case-insensitive, so `.GIT/x` cannot be tracked either)."""
    return any(part.lower() == ".git" for part in PurePosixPath(relative).parts)


def workspace_relative(path: str) -> str:
    """The workspace-relative form (`.` for the root) of `path` (relative, or absolute under
    /workspace); refuses anything outside the workspace or inside `.git`."""
    if not path or not path.strip():
        raise ToolError("path is empty; give a path relative to the repository root.")
    if len(path) > MAX_PATH_CHARS:
        raise ToolError(f"path is {len(path):,} characters long; give a real path.")
    if "\0" in path:
        raise ToolError("path contains a NUL character.")
    posix = PurePosixPath(path.strip())
    if posix.is_absolute():
        try:
            posix = posix.relative_to(WORKSPACE)
        except ValueError:
            raise ToolError(
                f"{path} is outside the workspace; use a path under {WORKSPACE} "
                "or relative to the repository root."
            ) from None
    parts: list[str] = []
    for part in posix.parts:
        if part == "..":
            if not parts:
                raise ToolError(f"{path} resolves outside the workspace ({WORKSPACE}); refusing.")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    relative = "/".join(parts) or "."
    if is_git_reserved(relative):
        raise ToolError(f"{path} is inside .git; use git through the bash tool instead.")
    return relative
