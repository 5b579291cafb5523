"""`agent sessions list|prune`, `agent undo` and `agent rewind`: session working trees and
branches, and their checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tools.host_git import GitFailed, run_git
from tools.process_owner import ProcessOwner
from tools.workspace import Rewound, Workspace, WorkspaceError, host_git_env
from tools.workspace_registry import WorkspaceRecord, delete_record, list_records

DOCKER_SOCKET = "/var/run/docker.sock"

sessions_app = typer.Typer(help="Session working trees and branches: list, prune.",
                           no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"agent: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _branch_head(record: WorkspaceRecord) -> str | None:
    """The commit the session branch points to, or None if it (or the repository) is gone."""
    repo = Path(record.repo_path)
    if not repo.is_dir():
        return None
    try:
        return run_git(["-C", str(repo), "rev-parse", "--verify", "-q",
                        f"refs/heads/{record.branch}"], host_git_env(repo)).strip() or None
    except GitFailed:
        return None


def describe(record: WorkspaceRecord) -> dict[str, Any]:
    """One session as `agent sessions list --json` shows it."""
    head = _branch_head(record)
    checkpoints = None
    if head is not None:
        repo = Path(record.repo_path)
        listed = run_git(["-C", str(repo), "rev-list", "--count", "--first-parent",
                          f"{record.base_commit}..{head}"], host_git_env(repo))
        checkpoints = int(listed.strip() or 0)
    return {
        "session_id": record.session_id,
        "state": record.state(),
        "branch": record.branch if head else None,
        "checkpoints": checkpoints,
        "head": head,
        "base_commit": record.base_commit,
        "repo": record.repo_path,
        "path": record.path if Path(record.path).exists() else None,
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created_at)),
    }


@sessions_app.command("list")
def sessions_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each session: its state, branch, checkpoints and working tree.

    States: active (its process runs), ended (working tree left behind), removed (only the
    branch is left). Episodes whose process was killed are marked `killed` in the trajectory
    index on the way (`--json` shows each session's episode status).
    """
    statuses = _episode_statuses()
    rows = [{**describe(record), "episode": statuses.get(record.session_id)}
            for record in list_records()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no sessions")
        return
    print(f"{'SESSION':<24} {'STATE':<8} {'CKPTS':>5}  {'CREATED':<16}  BRANCH / REPOSITORY")
    for row in rows:
        count = "-" if row["checkpoints"] is None else str(row["checkpoints"])
        branch = row["branch"] or "(branch deleted)"
        print(f"{row['session_id']:<24} {row['state']:<8} {count:>5}  {row['created']:<16}  "
              f"{branch} in {row['repo']}")


@sessions_app.command("prune")
def sessions_prune(
    branches: Annotated[bool, typer.Option(
        "--branches", help="Also delete the sessions' branches (their checkpoints).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go.")] = False,
) -> None:
    """Remove the working trees of sessions that have ended (active ones are left alone),
    sandbox and verify containers and verify folders a killed process left, and mark its
    unfinished episodes `killed` in the trajectory index."""
    pruned = _mark_killed_episodes(dry_run)
    ended = [record for record in list_records() if not record.active()]
    pruned += _remove_containers({r.path: r.session_id for r in ended}, dry_run)
    pruned += _remove_verify_folders(dry_run)
    for record in ended:
        state = record.state()
        gone = _branch_head(record) is None
        if state == "removed" and not branches and not gone:
            continue
        action = "delete branch and working tree of" if branches else "remove working tree of"
        if state == "removed":
            action = "forget" if gone else "delete branch of"
        print(f"{'would ' if dry_run else ''}{action} {record.session_id} ({record.branch})")
        pruned += 1
        if dry_run:
            continue
        if gone and state == "removed":
            delete_record(record)
        else:
            Workspace.open(record.session_id).remove(delete_branch=branches)
    if not pruned:
        print("nothing to prune")


def remove_orphans_at_start() -> None:
    """What `agent` does as it starts: remove the containers and verify folders of processes
    that are gone (killed), saying so on stderr. Quiet and quick when there are none."""
    if not Path(DOCKER_SOCKET).exists() and "DOCKER_HOST" not in os.environ:
        return
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            _remove_containers({}, dry_run=False)
            _remove_verify_folders(dry_run=False)
    except Exception as exc:  # cleaning up must never stop the command the user asked for
        print(f"agent: note: could not look for orphaned sandboxes: {exc}", file=sys.stderr)
    for line in said.getvalue().splitlines():
        print(f"agent: note: removed {line.removeprefix('remove ')}", file=sys.stderr)


def _episode_statuses() -> dict[str, str]:
    """Each indexed episode's exit status, after marking those whose process is gone."""
    from trajectories.store import TrajectoryStore

    store = TrajectoryStore()
    try:
        killed = store.mark_killed()
        rows = store.list()
    finally:
        store.close()
    if killed:
        print(f"agent: note: marked {len(killed)} episode(s) killed, their process is gone: "
              f"{', '.join(killed)}", file=sys.stderr)
    return {row["id"]: row["exit_status"] for row in rows}


def _mark_killed_episodes(dry_run: bool) -> int:
    """Mark the unfinished episodes of processes that are gone as killed in the index."""
    from trajectories.store import TrajectoryStore

    store = TrajectoryStore()
    try:
        killed = store.orphaned()
        if not dry_run:
            store.mark_killed(killed)
    finally:
        store.close()
    for episode_id in killed:
        print(f"{'would ' if dry_run else ''}mark episode {episode_id} killed (its process is "
              "gone)")
    return len(killed)


def _remove_containers(sessions_by_path: dict[str, str], dry_run: bool) -> int:
    """Remove sandbox containers that mount the working tree of an ended session, and those
    (sessions' or verify's) whose owner process is gone."""
    from docker.errors import DockerException

    from tools.sandbox import SandboxError, connect_docker
    from tools.sandbox.docker_sandbox import SANDBOX_LABEL

    try:
        client = connect_docker(timeout=5)
    except SandboxError:
        return 0  # no engine: no container to remove either
    removed = 0
    try:
        containers = client.containers.list(all=True, filters={"label": SANDBOX_LABEL})
    except DockerException:
        containers = []
    for container in containers:
        reason = _stray_reason(container.attrs, sessions_by_path)
        if reason is None:
            continue
        print(f"{'would ' if dry_run else ''}remove container {container.short_id} {reason}")
        removed += 1
        if not dry_run:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
    client.close()
    return removed


def _stray_reason(attrs: dict[str, Any], sessions_by_path: dict[str, str]) -> str | None:
    """Why a sandbox container is a stray (`of <session>`), or None if it is in use."""
    sources = {mount.get("Source") for mount in attrs.get("Mounts", [])}
    mounted_sessions = sorted(sources & set(sessions_by_path))
    if mounted_sessions:
        return f"of {sessions_by_path[mounted_sessions[0]]}"
    owner = ProcessOwner.from_labels(attrs.get("Config", {}).get("Labels") or {})
    if owner is not None and owner.gone():
        mounted = ", ".join(sorted(s for s in sources if s)) or "nothing"
        return f"of process {owner.pid}, which is gone (it mounted {mounted})"
    return None


def _remove_verify_folders(dry_run: bool) -> int:
    """Remove the temporary folders of verify runs whose process is gone."""
    from trajectories.verify import orphaned_verify_folders, remove_folder

    folders = orphaned_verify_folders()
    for folder in folders:
        print(f"{'would ' if dry_run else ''}remove verify folder {folder} (its process is "
              "gone)")
        problem = None if dry_run else remove_folder(folder)
        if problem:
            print(f"agent: warning: could not remove {folder}: {problem}", file=sys.stderr)
    return len(folders)


def _open_idle(session: str, force: bool) -> Workspace:
    """The session's workspace, unless another process is running the session."""
    try:
        workspace = Workspace.open(session)
    except WorkspaceError as exc:
        raise _fail(str(exc)) from None
    record = workspace.record()
    if record is not None and record.active() and not force:
        raise _fail(f"session {workspace.session_id} is running (pid {record.pid}); undo it "
                    "from its own app (/undo), or pass --force")
    return workspace


def _report(workspace: Workspace, done: Rewound) -> None:
    where = "files" if workspace.path.is_dir() else f"branch {workspace.branch}"
    print(f"undid {len(done.undone)} checkpoint(s) of {workspace.session_id}: {where} now as at "
          f"{done.head[:12]}")
    for name in done.files:
        print(f"  {name}")


def undo_command(
    session: Annotated[str, typer.Option("--session", help="Session id (a unique prefix).")],
    force: Annotated[bool, typer.Option(help="Even if the session is running.")] = False,
) -> None:
    """Undo a session's last turn: restore its files (or branch) to the checkpoint before."""
    rewind_command(1, session, force)


def rewind_command(
    steps: Annotated[int, typer.Argument(help="How many checkpoints to go back.")],
    session: Annotated[str, typer.Option("--session", help="Session id (a unique prefix).")],
    force: Annotated[bool, typer.Option(help="Even if the session is running.")] = False,
) -> None:
    """Restore a session's files (or branch) exactly as they were N checkpoints ago."""
    workspace = _open_idle(session, force)
    try:
        done = workspace.rewind(steps)
    except WorkspaceError as exc:
        raise _fail(str(exc)) from None
    _report(workspace, done)
