"""What `agent mcp` and `agent hooks` share: the repository they read, at the commit sessions
start from."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

RepoOption = Annotated[Path, typer.Option(help="Git repository whose configuration to read.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line reason to stderr and return the exit to raise."""
    print(f"agent: error: {' '.join(message.split())}", file=sys.stderr)
    return typer.Exit(code)


def repository_head(repo: Path) -> tuple[Path, str]:
    """The repository's root and its HEAD commit (what sessions start from; uncommitted
    changes to .apprentice.toml are not read)."""
    from tools.workspace import WorkspaceError, open_repository, resolve_commit

    try:
        found = open_repository(repo)
        return Path(found.working_tree_dir or repo).resolve(), resolve_commit(found, "HEAD")
    except WorkspaceError as exc:
        raise fail(str(exc)) from None
