"""Session workspaces for real: git worktrees of a real repository, the sandbox's own git, the
checkpoints behind undo / rewind, `agent sessions`, and what a hostile sandbox cannot do."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tools.locations import worktrees_dir
from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.sandbox.ownership import sandbox_owner
from tools.sandbox.pool import SandboxPool
from tools.sandbox_repository import hardlinks_are_safe
from tools.session_setup import open_session
from tools.workspace import Workspace, WorkspaceError, worktrees_lock
from tools.workspace_registry import list_records, save_record

CONFIG = SandboxConfig(memory="512m", pids=128, cpus=1.0, command_timeout=30.0)
OPERATIONS = "calculator/operations.py"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").split()


def user_refs(repo: Path) -> str:
    """Everything the sandbox must not change in the user's repository: refs and checkout."""
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)") + git(
        repo, "status", "--porcelain", "--branch")


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=120)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def mark_ended(workspace: Workspace) -> None:
    """Make the session look like its process has exited."""
    record = workspace.record()
    assert record is not None
    record.pid = dead_pid()
    save_record(record)


@pytest.fixture
def repo(example: tuple[Path, Path]) -> Path:
    return example[0]


@pytest.fixture
def workspace(repo: Path) -> Workspace:
    return Workspace.create(repo, "s1")


# --- the working tree and the user's repository -----------------------------------------------


def test_create_leaves_the_user_repository_alone(repo: Path, apprentice_home: Path) -> None:
    (repo / "scratch.txt").write_text("mine\n")  # uncommitted work
    before = user_refs(repo)
    workspace = Workspace.create(repo, "s1")
    assert workspace.path.is_relative_to(worktrees_dir())
    assert worktrees_dir().is_relative_to(apprentice_home)
    assert not workspace.path.is_relative_to(repo)
    assert (workspace.path / OPERATIONS).read_text() == (repo / OPERATIONS).read_text()
    assert not (workspace.path / "scratch.txt").exists()
    assert workspace.branch == "agent/s1" and workspace.base_commit == git(repo, "rev-parse",
                                                                            "HEAD").strip()
    after = user_refs(repo)
    assert after.replace("refs/heads/agent/s1 " + workspace.base_commit + "\n", "") == before
    assert (repo / "scratch.txt").read_text() == "mine\n"
    assert "locked" in git(repo, "worktree", "list")


def test_the_sandbox_repository_holds_only_the_session_branch(workspace: Workspace) -> None:
    inner = workspace.path / ".git"
    assert inner.is_dir()  # a repository of its own, not a link to the user's .git
    run = ["git", f"--git-dir={inner}", f"--work-tree={workspace.path}"]
    branches = subprocess.run([*run, "branch", "--list"], capture_output=True, text=True)
    assert branches.stdout.split() == ["*", "agent/s1"]
    assert subprocess.run([*run, "remote"], capture_output=True, text=True).stdout == ""
    status = subprocess.run([*run, "status", "--porcelain"], capture_output=True, text=True)
    assert status.stdout == ""
    assert str(workspace.repo_path) not in (inner / "config").read_text()


def test_creating_a_session_twice_is_refused(repo: Path, workspace: Workspace) -> None:
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.create(repo, "s1")
    with pytest.raises(WorkspaceError, match="not a commit"):
        Workspace.create(repo, "s2", base="no-such-ref")
    assert "agent/s2" not in branches(repo)


def test_checkpoints_land_on_the_user_branch_only(repo: Path, workspace: Workspace) -> None:
    assert not workspace.changed() and workspace.checkpoint("nothing") is None
    (workspace.path / "new.txt").write_text("hello\n")
    (workspace.path / "__pycache__").mkdir()
    (workspace.path / "__pycache__" / "x.pyc").write_bytes(b"litter")
    assert workspace.changed()
    commit = workspace.checkpoint("step 1")
    assert commit and git(repo, "rev-parse", "agent/s1").strip() == commit
    assert git(repo, "rev-parse", "main").strip() == workspace.base_commit
    assert git(repo, "show", "--name-only", "--format=", commit).split() == ["new.txt"]
    assert "+hello" in workspace.patch() and "pyc" not in workspace.patch()


def test_rewind_restores_files_exactly(repo: Path, workspace: Workspace) -> None:
    path = workspace.path
    original = (path / OPERATIONS).read_text()
    (path / OPERATIONS).write_text("changed once\n")
    (path / "added.txt").write_text("a\n")
    first = workspace.checkpoint("step 1")
    (path / OPERATIONS).write_text("changed twice\n")
    (path / "README.md").unlink()
    second = workspace.checkpoint("step 2")
    (path / "pending.txt").write_text("not checkpointed\n")

    undone = workspace.undo()  # the pending change is the latest step
    assert undone.head == second and not (path / "pending.txt").exists()
    assert (path / OPERATIONS).read_text() == "changed twice\n"

    rewound = workspace.rewind(1)
    assert rewound.head == first and rewound.undone == [second]
    assert sorted(rewound.files) == ["README.md", OPERATIONS]
    assert (path / OPERATIONS).read_text() == "changed once\n" and (path / "README.md").exists()

    workspace.rewind(1)
    assert (path / OPERATIONS).read_text() == original and not (path / "added.txt").exists()
    assert git(repo, "rev-parse", "agent/s1").strip() == workspace.base_commit
    assert workspace.patch() == "" and not workspace.changed()
    if workspace.owner is not None:  # files git restored go back to the sandbox user
        assert (path / OPERATIONS).stat().st_uid == workspace.owner[0]
    with pytest.raises(WorkspaceError, match="no checkpoint yet"):
        workspace.undo()
    with pytest.raises(WorkspaceError, match="positive"):
        workspace.rewind(0)


def test_apply_takes_another_sessions_patch_whole_or_not_at_all(repo: Path,
                                                                 workspace: Workspace) -> None:
    other = Workspace.create(repo, "s2")
    (other.path / OPERATIONS).write_text("changed elsewhere\n")
    (other.path / "new.txt").write_text("new\n")
    patch = other.patch()
    other.remove(delete_branch=True)

    workspace.apply(patch)
    assert (workspace.path / OPERATIONS).read_text() == "changed elsewhere\n"
    assert (workspace.path / "new.txt").read_text() == "new\n"
    if workspace.owner is not None:  # files the host wrote go to the sandbox user
        assert (workspace.path / "new.txt").stat().st_uid == workspace.owner[0]
    third = Workspace.create(repo, "s3", base=str(workspace.checkpoint("applied")))
    (third.path / "new.txt").write_text("newer\n")
    (third.path / "README.md").write_text("theirs\n")
    patch = third.patch()
    third.remove(delete_branch=True)
    (workspace.path / "README.md").write_text("mine\n")  # so README's part cannot apply
    with pytest.raises(WorkspaceError, match="does not apply"):
        workspace.apply(patch)
    assert (workspace.path / "README.md").read_text() == "mine\n"
    assert (workspace.path / "new.txt").read_text() == "new\n"  # nor the part that could
    workspace.apply("")  # nothing to do


def test_rewind_without_a_working_tree_moves_the_branch(repo: Path, workspace: Workspace) -> None:
    (workspace.path / "a.txt").write_text("1\n")
    first = workspace.checkpoint("one")
    (workspace.path / "a.txt").write_text("2\n")
    workspace.checkpoint("two")
    workspace.remove()
    assert not workspace.path.exists() and "agent/s1" in branches(repo)
    assert Workspace.open("s1").undo().head == first
    assert git(repo, "show", "agent/s1:a.txt") == "1\n"
    with pytest.raises(WorkspaceError, match="1 checkpoint"):
        Workspace.open("s1").rewind(2)


def test_remove_is_safe_twice_and_can_take_the_branch(repo: Path, workspace: Workspace) -> None:
    workspace.remove()
    workspace.remove()
    assert "agent/s1" in branches(repo)
    assert str(workspace.path) not in git(repo, "worktree", "list")
    workspace.remove(delete_branch=True)
    assert branches(repo) == ["main"]
    assert list_records() == []


def test_a_worktree_is_added_only_while_no_other_git_holds_the_repository(repo: Path) -> None:
    started: list[Workspace] = []
    with worktrees_lock(repo.resolve()):
        adding = threading.Thread(target=lambda: started.append(Workspace.create(repo, "w1")))
        adding.start()
        adding.join(timeout=1.0)
        assert adding.is_alive() and not started  # waits for the lock
    adding.join(timeout=30)
    assert [w.session_id for w in started] == ["w1"]
    started[0].remove(delete_branch=True)


def test_sessions_started_in_parallel_on_one_repository_all_get_worktrees(repo: Path) -> None:
    """Before the lock, about 1 in 30 of these failed: one `git worktree add` read another's
    half-written `.git/worktrees/<id>/commondir` (seen in CI with two parallel attempts)."""
    errors: list[Exception] = []

    def start_and_end(name: str) -> None:
        try:
            Workspace.create(repo, name).remove(delete_branch=True)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start_and_end, args=(f"p{i}",)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert branches(repo) == ["main"]


def test_reopen_checks_the_branch_out_again(repo: Path, workspace: Workspace) -> None:
    (workspace.path / "a.txt").write_text("kept\n")
    head = workspace.checkpoint("one")
    workspace.remove()
    again = Workspace.reopen(repo, "s1", workspace.base_commit)
    assert (again.path / "a.txt").read_text() == "kept\n" and again.head() == head
    inner = ["git", f"--git-dir={again.path / '.git'}", f"--work-tree={again.path}"]
    log = subprocess.run([*inner, "log", "--format=%H"], capture_output=True, text=True).stdout
    assert log.split()[0] == head
    (again.path / "a.txt").write_text("more\n")
    assert again.checkpoint("two") == git(repo, "rev-parse", "agent/s1").strip()
    assert Workspace.reopen(repo, "s1", workspace.base_commit).path == again.path


def test_hardlinked_objects_stay_the_users(repo: Path, workspace: Workspace,
                                           tmp_path: Path) -> None:
    owner = sandbox_owner()
    objects = workspace.path / ".git" / "objects"
    files = [p for p in objects.rglob("*") if p.is_file()]
    assert files
    if owner is None:  # the sandbox runs as us: a link would let it write our objects
        assert all(p.stat().st_nlink == 1 for p in files)
        return
    linked = [p for p in files if p.stat().st_nlink > 1]
    assert linked and all(p.stat().st_uid != owner[0] for p in linked)
    assert all(p.stat().st_mode & 0o222 == 0 for p in linked)  # read-only: cannot be changed
    # Objects the sandbox user owns or could write are copied, never linked.
    theirs = tmp_path / "objects"
    (theirs / "ab").mkdir(parents=True)
    (theirs / "ab" / "cdef").write_bytes(b"x")
    os.chown(theirs / "ab" / "cdef", *owner)
    assert not hardlinks_are_safe(theirs, owner)
    os.chown(theirs / "ab" / "cdef", 0, 0)
    os.chmod(theirs / "ab" / "cdef", 0o666)
    assert not hardlinks_are_safe(theirs, owner)
    os.chmod(theirs / "ab" / "cdef", 0o444)
    assert hardlinks_are_safe(theirs, owner) and not hardlinks_are_safe(theirs, None)


# --- agent sessions / undo / rewind -------------------------------------------------------------


def test_sessions_list_and_prune(repo: Path) -> None:
    active, ended, removed = (Workspace.create(repo, name) for name in ("a1", "e1", "r1"))
    (ended.path / "x.txt").write_text("x\n")
    ended.checkpoint("one")
    mark_ended(ended)
    removed.remove()
    listed = agent_cli("sessions", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert lines["a1"][1] == "active" and lines["e1"][1:3] == ["ended", "1"]
    assert lines["r1"][1] == "removed"

    pruned = agent_cli("sessions", "prune")
    assert pruned.returncode == 0 and "remove working tree of e1" in pruned.stdout
    assert not ended.path.exists() and active.path.exists()
    assert "agent/e1" in branches(repo)

    pruned = agent_cli("sessions", "prune", "--branches")
    assert "delete branch of e1" in pruned.stdout  # its working tree went on the first prune
    assert "delete branch of r1" in pruned.stdout
    assert branches(repo) == ["agent/a1", "main"]
    assert [r.session_id for r in list_records()] == ["a1"]
    assert "nothing to prune" in agent_cli("sessions", "prune", "--branches").stdout


@pytest.mark.docker
def test_prune_removes_the_container_a_crashed_session_left(
    workspace: Workspace, docker_ready: None
) -> None:
    from tools.sandbox import connect_docker

    box = make_sandbox(CONFIG, workspace.path)  # its process "crashes": never closed
    container_id = getattr(box, "container_id", None)
    assert container_id
    try:
        assert "nothing to prune" in agent_cli("sessions", "prune").stdout  # still active
        mark_ended(workspace)
        pruned = agent_cli("sessions", "prune")
        assert f"remove container {container_id[:12]} of s1" in pruned.stdout, pruned.stdout
        assert not connect_docker().containers.list(all=True, filters={"id": container_id})
        assert not workspace.path.exists()
    finally:
        box.close()


def test_undo_and_rewind_commands(repo: Path, workspace: Workspace) -> None:
    for text in ("1\n", "2\n", "3\n"):
        (workspace.path / "n.txt").write_text(text)
        workspace.checkpoint(f"wrote {text.strip()}")
    refused = agent_cli("undo", "--session", "s1")
    assert refused.returncode == 1 and "is running" in refused.stderr
    mark_ended(workspace)
    undone = agent_cli("undo", "--session", "s1")
    assert undone.returncode == 0, undone.stderr
    assert "undid 1 checkpoint(s) of s1" in undone.stdout and "n.txt" in undone.stdout
    assert (workspace.path / "n.txt").read_text() == "2\n"
    assert agent_cli("rewind", "1", "--session", "s").returncode == 0  # a prefix will do
    assert (workspace.path / "n.txt").read_text() == "1\n"
    too_far = agent_cli("rewind", "5", "--session", "s1")
    assert too_far.returncode == 1 and "cannot rewind 5" in too_far.stderr
    unknown = agent_cli("undo", "--session", "nope")
    assert unknown.returncode == 1 and "agent sessions list" in unknown.stderr


# --- git inside the sandbox (Docker) ------------------------------------------------------------


@pytest.fixture
def boxed(workspace: Workspace, docker_ready: None) -> Sandbox:
    box = make_sandbox(CONFIG, workspace.path)
    yield box
    box.close()


@pytest.mark.docker
def test_git_works_inside_on_the_session_branch(repo: Path, workspace: Workspace,
                                                boxed: Sandbox) -> None:
    before = user_refs(repo)
    assert boxed.run("git status --porcelain").output == ""
    assert boxed.run("git branch --show-current").output == "agent/s1\n"
    assert boxed.run("git log --format=%H").output.split() == [workspace.base_commit]
    boxed.run(f"echo '# more' >> {OPERATIONS}")
    assert "+# more" in boxed.run("git diff").output
    committed = boxed.run("git commit -qam 'from inside' && git log --oneline | head -1")
    assert committed.exit_code == 0 and "from inside" in committed.output
    # Nothing inside can reach the user's repository: it is not there, and there is no remote.
    assert boxed.run(f"ls {repo}").exit_code != 0
    assert boxed.run("git push origin HEAD").exit_code != 0
    assert boxed.run("git branch -f main HEAD && git branch --list main").exit_code == 0
    assert user_refs(repo) == before
    # The host's checkpoint takes the files, on the user's branch.
    commit = workspace.checkpoint("after the sandbox")
    assert commit and git(repo, "show", f"{commit}:{OPERATIONS}").endswith("# more\n")
    assert git(repo, "rev-parse", "main").strip() == workspace.base_commit


@pytest.mark.docker
def test_a_hostile_sandbox_cannot_run_code_on_the_host(workspace: Workspace, boxed: Sandbox,
                                                       tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    command = f"touch {pwned}"
    script = f"""
git config core.fsmonitor '{command}'
git config core.hooksPath .git/hooks
git config filter.evil.clean '{command}; cat'
git config diff.evil.textconv '{command}; cat'
mkdir -p .git/hooks && printf '#!/bin/sh\\n{command}\\n' > .git/hooks/post-commit
chmod +x .git/hooks/post-commit
echo '* filter=evil diff=evil' > .gitattributes
echo 'ref: refs/heads/main' > .git/HEAD
mkdir -p nested && cd nested && git init -q && git config core.fsmonitor '{command}' && cd ..
echo "gitdir: /etc" > other.git && echo changed >> README.md
"""
    assert boxed.run(script).exit_code == 0
    assert workspace.changed()
    commit = workspace.checkpoint("host checkpoint")
    assert commit and "README.md" in workspace.patch()
    workspace.undo()
    assert not pwned.exists()


# --- opening sessions: side by side, from a pool, eight at once (Docker) --------------------------


@pytest.mark.docker
def test_open_session_side_by_side_and_from_a_pool(repo: Path, docker_ready: None) -> None:
    with SandboxPool(CONFIG, size=1) as pool:
        for name, source in (("plain", None), ("pooled", pool)):
            opened = open_session(repo, name, CONFIG, pool=source)
            try:
                result = opened.sandbox.run(f"git status --porcelain && cat {OPERATIONS}")
                assert result.exit_code == 0
                assert result.output == (repo / OPERATIONS).read_text()
                assert opened.sandbox.run("touch made-inside").exit_code == 0
                assert (opened.workspace.path / "made-inside").exists()
                assert opened.workspace.changed()
            finally:
                opened.close(delete_branch=True)
            assert not opened.workspace.path.exists()
    assert branches(repo) == ["main"]


def test_open_session_leaves_nothing_when_docker_is_missing(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(Exception, match="not reachable"):
        open_session(repo, "nodocker", CONFIG)
    assert branches(repo) == ["main"]
    assert list_records() == [] and not any(worktrees_dir().glob("*/*"))


@pytest.mark.docker
def test_eight_sessions_at_once_without_cross_talk(repo: Path, docker_ready: None) -> None:
    failures: list[BaseException] = []
    seen: dict[int, str] = {}

    def episode(index: int) -> None:
        try:
            opened = open_session(repo, f"par{index}", CONFIG)
            try:
                box = opened.sandbox
                assert box.run(f"echo {index} > marker && export MINE={index}").exit_code == 0
                for _ in range(20):
                    assert box.run("cat marker").output == f"{index}\n"
                seen[index] = box.run('echo "$MINE $(ls marker*) $(git status --porcelain)"'
                                      ).output
                assert (opened.workspace.path / "marker").read_text() == f"{index}\n"
            finally:
                opened.close(delete_branch=True)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=episode, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    assert seen == {i: f"{i} marker ?? marker\n" for i in range(8)}
    assert branches(repo) == ["main"]
