"""Open a session's workspace and sandbox together: the episode reset.

The container starts (or comes warm from a `SandboxPool`) on an empty folder while git checks
the repository out into that same folder, so the reset costs the longer of the two, not both.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.sandbox.pool import SandboxPool
from tools.sandbox.repo_image import Log, image_for_repository
from tools.workspace import (
    Workspace,
    WorkspaceError,
    open_repository,
    resolve_commit,
    session_path,
)

logger = logging.getLogger(__name__)


@dataclass
class OpenSession:
    """A session's working tree and the started sandbox that mounts it."""

    workspace: Workspace
    sandbox: Sandbox
    config: SandboxConfig
    """The sandbox settings in force (with the repository's setup image, if it has one)."""

    def close(self, remove_workspace: bool = True, delete_branch: bool = False) -> None:
        """Remove the sandbox, then (unless told not to) the working tree. Safe twice."""
        self.sandbox.close()
        if remove_workspace:
            self.workspace.remove(delete_branch=delete_branch)


def open_session(
    repo: Path,
    session_id: str,
    config: SandboxConfig,
    base: str = "HEAD",
    pool: SandboxPool | None = None,
    setup: str | None = None,
    log: Log = logger.info,
) -> OpenSession:
    """A new working tree at `base` on branch `agent/<session_id>` and a started sandbox on it.

    The sandbox runs the repository's setup image (`image_for_repository`: `setup`, a task's,
    else the one of .apprentice.toml), built first if it is not cached; `log` hears of a build.
    Uses `pool` when its configuration is the one asked for. Leaves nothing behind (no branch,
    no container) if either part fails.
    """
    user_repo = open_repository(repo)
    base_commit = resolve_commit(user_repo, base)
    config = image_for_repository(Path(repo), base_commit, config, log, setup=setup)
    if pool is not None and pool.config == config:
        sandbox, folder = pool.acquire()
        try:
            workspace = Workspace.create(repo, session_id, base_commit, path=folder)
        except BaseException:
            sandbox.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return OpenSession(workspace, sandbox, config)
    folder = session_path(Path(user_repo.working_tree_dir or repo).resolve(), session_id)
    if folder.exists():
        raise WorkspaceError(f"{folder} already exists; remove it or use a new session id.")
    folder.mkdir(parents=True)
    return _open_side_by_side(repo, session_id, config, base_commit, folder)


def _open_side_by_side(repo: Path, session_id: str, config: SandboxConfig, base_commit: str,
                       folder: Path) -> OpenSession:
    """Start the sandbox in a thread while git fills the (empty) folder it mounts."""
    started: list[Sandbox] = []
    failed: list[BaseException] = []

    def start() -> None:
        try:
            started.append(make_sandbox(config, folder))
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    starter = threading.Thread(target=start, name=f"sandbox-start-{session_id}")
    starter.start()
    try:
        workspace = Workspace.create(repo, session_id, base_commit, path=folder)
    except BaseException:
        starter.join()
        for sandbox in started:
            sandbox.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    starter.join()
    if failed:
        workspace.remove(delete_branch=True)
        raise failed[0]
    return OpenSession(workspace, started[0], config)

