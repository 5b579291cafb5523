"""A session's own working tree and branch, so the user's checkout is never touched.

Each session works in a folder under `$APPRENTICE_HOME/worktrees/` (`<repo>-<hash>/<session-id>`,
or one a `SandboxPool` made) on a new branch `agent/<session-id>` made from the base commit.
Two gits look at that folder:

- the host's: a git worktree of the user's repository whose metadata stays in the user's
  `.git/worktrees/` (never mounted in the sandbox). Checkpoints, patches, undo and rewind run
  here, so the session branch in the user's repository is written by the host only, and only
  that branch;
- the sandbox's: `<folder>/.git`, a disposable copy (see `tools.sandbox_repository`), so git
  works inside the sandbox without any path to the user's repository. The host never runs git
  with it (its config and hooks are the sandbox's to write).

A checkpoint commit after each turn that changed files gives `undo` and `rewind N`.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import git

from tools.file_lock import exclusive_lock
from tools.host_git import (
    IGNORED_BY_AGENT,
    GitFailed,
    agent_excludes_file,
    isolated_env,
    run_git,
)
from tools.locations import worktrees_dir
from tools.sandbox.ownership import Owner, chown_tree, sandbox_owner
from tools.sandbox_repository import create_sandbox_repository
from tools.workspace_registry import (
    WorkspaceRecord,
    delete_record,
    load_record,
    matching_records,
    save_record,
)

AGENT_IDENTITY = {
    "GIT_AUTHOR_NAME": "apprentice",
    "GIT_AUTHOR_EMAIL": "agent@apprentice.invalid",
    "GIT_COMMITTER_NAME": "apprentice",
    "GIT_COMMITTER_EMAIL": "agent@apprentice.invalid",
}

_UNBORN_NESTED = re.compile(r"error: '(.+?)' does not have a commit checked out")
_INVALID_PATH = re.compile(r"error: invalid path '(.+?)'")


class WorkspaceError(RuntimeError):
    """The repository cannot host a session; the message says why and what to do."""


def host_git_env(repo_root: Path) -> dict[str, str]:
    """The environment of host git commands on the user's repository and the session's files:
    isolated as `tools.host_git` explains, the repository's drivers emptied, our identity."""
    env = isolated_env({"core.excludesFile": str(agent_excludes_file())},
                       config_files=_repository_configs(Path(repo_root)))
    env.update(AGENT_IDENTITY)
    return env


def _repository_configs(repo_root: Path) -> tuple[Path, ...]:
    """The config files of the user's repository (the common one and the worktree's own)."""
    dot_git = repo_root / ".git"
    if dot_git.is_file():  # the user's checkout is itself a linked worktree
        linked = Path(dot_git.read_text().partition("gitdir:")[2].strip())
        common = linked / "commondir"
        base = (linked / common.read_text().strip()).resolve() if common.is_file() else linked
        return (base / "config", linked / "config.worktree")
    return (dot_git / "config", dot_git / "config.worktree")


def open_repository(repo_path: Path) -> git.Repo:
    """The user's repository at `repo_path`, or a WorkspaceError saying what is wrong."""
    path = Path(repo_path).expanduser().resolve()
    if not path.is_dir():
        raise WorkspaceError(f"{path} is not a directory; pass --repo with a git repository.")
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise WorkspaceError(
            f"{path} is not a git repository; run `git init && git add -A && git commit -m init` "
            "there first, or pass --repo PATH."
        ) from None
    if repo.bare:
        raise WorkspaceError(f"{path} is a bare repository; pass a repository with a work tree.")
    try:
        _ = repo.head.commit
    except ValueError:
        raise WorkspaceError(f"{path} has no commits yet; commit something first.") from None
    return repo


def resolve_commit(repo: git.Repo, name: str) -> str:
    """The full hash of commit `name` (a branch, tag, hash, HEAD~2 ...) in `repo`."""
    try:
        return str(repo.commit(name).hexsha)
    except (git.BadName, ValueError):
        raise WorkspaceError(
            f"{name!r} is not a commit of {repo.working_tree_dir}; pass one that is."
        ) from None


@dataclass
class Rewound:
    """What a rewind did."""

    undone: list[str]
    """The checkpoint commits taken back, newest first."""
    head: str
    """The checkpoint (or base commit) whose files are now in place."""
    files: list[str]
    """Files whose content changed."""


def _reserved_root(path: str) -> str:
    """The first component of `path` from which git refuses it (`a/.GIT/x` -> `a/.GIT`)."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if part.lower() == ".git":
            return "/".join(parts[: index + 1])
    return path


def worktrees_lock(root: Path) -> contextlib.AbstractContextManager[None]:
    """Held while a worktree of `root` is added or removed, or git runs in `root` itself.

    Git reads every linked worktree's metadata (to check a branch is not checked out twice),
    and fails on one that another git is half way through writing or a removal half way
    through deleting: sessions started in parallel on one repository take turns here.
    """
    return exclusive_lock(f"worktrees-{_repository_key(root)}.lock")


def _repository_key(root: Path) -> str:
    """`<name>-<hash of the path>`: one repository's name among apprentice's own files."""
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


def session_path(root: Path, session_id: str) -> Path:
    """Where the working tree of session `session_id` on repository `root` lives."""
    return worktrees_dir() / _repository_key(root) / session_id


@dataclass
class Workspace:
    """The working tree of one session on branch `agent/<session_id>`, from a base commit.

    `path` is what the sandbox mounts at /workspace; `git_dir` is the host-only git metadata
    of that working tree; `owner` is who the files are given to (the sandbox user, as root).
    """

    repo_path: Path
    path: Path
    branch: str
    base_commit: str
    session_id: str
    git_dir: Path | None = None
    owner: Owner | None = None
    left_out: list[str] = field(default_factory=list)
    """Paths the last checkpoint could not include (git refuses them), relative."""

    def __post_init__(self) -> None:
        if self.git_dir is None:  # built by hand: the note knows, or a plain worktree's link
            record = self.record()
            link = self.path / ".git"
            if record is not None:
                self.git_dir, self.owner = Path(record.git_dir), record.owner
            elif link.is_file():
                self.git_dir = Path(link.read_text().partition("gitdir:")[2].strip())

    @classmethod
    def create(cls, repo_path: Path, session_id: str, base: str = "HEAD",
               path: Path | None = None) -> Workspace:
        """A new working tree at `base` on a new branch, with git ready inside the sandbox.

        `path` (default: under $APPRENTICE_HOME) may be an empty folder that a sandbox has
        already mounted, so the container can start while the files are checked out.
        """
        repo = open_repository(repo_path)
        root = Path(repo.working_tree_dir or repo_path).resolve()
        base_commit = resolve_commit(repo, base)
        branch = f"agent/{session_id}"
        return cls._check_out(repo, root, path or session_path(root, session_id), session_id,
                              branch, base_commit, new_branch=True)

    @classmethod
    def reopen(cls, repo_path: Path, session_id: str, base_commit: str,
               branch: str | None = None) -> Workspace:
        """An earlier session's workspace, to resume it: its working tree checked out again
        from its branch if it was removed. This process becomes the session's owner."""
        repo = open_repository(repo_path)
        root = Path(repo.working_tree_dir or repo_path).resolve()
        branch = branch or f"agent/{session_id}"
        with worktrees_lock(root):
            listed = repo.git.branch("--list", branch).strip()
        if not listed:
            raise WorkspaceError(f"branch {branch} no longer exists in {root}; the session "
                                 "cannot be resumed.")
        record = next((r for r in matching_records(session_id) if r.session_id == session_id),
                      None)
        path = Path(record.path) if record else session_path(root, session_id)
        workspace = cls(root, path, branch, base_commit, session_id)
        if workspace.path.is_dir() and workspace.git_dir is not None:
            save_record(workspace._record())
            return workspace
        workspace.remove()  # leftovers of a half-removed working tree
        return cls._check_out(repo, root, session_path(root, session_id), session_id, branch,
                              base_commit, new_branch=False)

    @classmethod
    def _check_out(cls, repo: git.Repo, root: Path, path: Path, session_id: str, branch: str,
                   base_commit: str, new_branch: bool) -> Workspace:
        """Add the host-side worktree, then the sandbox's own repository in it."""
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise WorkspaceError(f"{path} already exists; remove it or use a new session id.")
        path.parent.mkdir(parents=True, exist_ok=True)
        env = host_git_env(root)
        add = ["-b", branch, str(path), base_commit] if new_branch else [str(path), branch]
        try:
            with worktrees_lock(root):
                run_git(["-C", str(root), "worktree", "add", "-q", "--lock", *add], env)
        except GitFailed as exc:
            raise WorkspaceError(f"could not create a worktree for {root}: {exc}") from None
        link = path / ".git"
        workspace = cls(root, path, branch, base_commit, session_id,
                        git_dir=Path(link.read_text().partition("gitdir:")[2].strip()),
                        owner=sandbox_owner())
        try:
            link.unlink()
            if workspace.owner is not None:
                chown_tree(path, workspace.owner)
            head = base_commit if new_branch else repo.commit(branch).hexsha
            create_sandbox_repository(Path(repo.common_dir), path, branch, head,
                                      workspace.owner, IGNORED_BY_AGENT, env)
            save_record(workspace._record())
        except BaseException as exc:
            workspace.remove(delete_branch=new_branch)
            if isinstance(exc, GitFailed):
                raise WorkspaceError(f"could not set up the session's git: {exc}") from None
            raise
        return workspace

    @classmethod
    def open(cls, session_id: str) -> Workspace:
        """The workspace of an earlier session as it is (a unique prefix of its id will do)."""
        records = matching_records(session_id)
        if not records:
            raise WorkspaceError(
                f"no session {session_id!r}; `agent sessions list` shows the known ones."
            )
        if len(records) > 1:
            ids = ", ".join(r.session_id for r in records)
            raise WorkspaceError(f"{session_id!r} matches several sessions ({ids}); say which.")
        record = records[0]
        return cls(Path(record.repo_path), Path(record.path), record.branch, record.base_commit,
                   record.session_id, Path(record.git_dir), record.owner)

    def record(self) -> WorkspaceRecord | None:
        """The note kept about this session, if any."""
        record = load_record(self.path)
        return record if record is not None and record.session_id == self.session_id else None

    def _record(self) -> WorkspaceRecord:
        return WorkspaceRecord(
            session_id=self.session_id, repo_path=str(self.repo_path), path=str(self.path),
            branch=self.branch, base_commit=self.base_commit, git_dir=str(self.git_dir),
            owner=self.owner,
        )

    def _git(self, *args: str) -> str:
        """Host git on the working tree, through the host-only metadata."""
        if not self.path.is_dir() or self.git_dir is None:
            raise WorkspaceError(f"the working tree of session {self.session_id} was removed.")
        return run_git([f"--git-dir={self.git_dir}", f"--work-tree={self.path}", *args],
                       host_git_env(self.repo_path), cwd=self.path)

    def _repo_git(self, *args: str) -> str:
        """Host git in the user's repository."""
        with worktrees_lock(self.repo_path):
            return run_git(["-C", str(self.repo_path), *args], host_git_env(self.repo_path))

    def changed(self) -> bool:
        """Whether the files differ from the last checkpoint (ignoring build litter)."""
        return bool(self._git("status", "--porcelain", "--ignore-submodules=all").strip())

    def _stage_all(self) -> None:
        """`git add -A`, leaving out what git refuses to track: nested repositories without a
        commit, and paths git reserves (`.GIT/x`, `.git` in any case, anywhere). What was left
        out is in `self.left_out`, for the session to report."""
        excluded: list[str] = []
        for _ in range(50):
            try:
                self._git("add", "-A", "--", ".", *(f":(exclude,literal){p}" for p in excluded))
                break
            except GitFailed as exc:
                found = _UNBORN_NESTED.findall(str(exc)) + _INVALID_PATH.findall(str(exc))
                if not found or set(found) <= set(excluded):
                    raise
                excluded += [_reserved_root(p) for p in found]
        else:
            raise WorkspaceError(f"too many paths git refuses in {self.path}")
        self.left_out = sorted(set(excluded))

    def checkpoint(self, message: str) -> str | None:
        """Commit every change as a checkpoint; return the commit, or None if nothing changed."""
        self._stage_all()
        if not self._git("diff", "--cached", "--name-only", "--no-ext-diff").strip():
            return None
        self._git("commit", "-q", "--no-verify", "-m", message)
        return self.head()

    def apply(self, patch: str) -> None:
        """Apply `patch` (a git diff from the last checkpoint, say another session's) to the
        files, all of it or nothing; WorkspaceError says why it does not apply. Nothing should
        run in the sandbox meanwhile."""
        if not patch.strip():
            return
        with tempfile.TemporaryDirectory(prefix="apprentice-apply-") as tmp:
            diff = Path(tmp) / "change.diff"  # outside the working tree: the host's only
            diff.write_text(patch if patch.endswith("\n") else patch + "\n")
            try:
                self._git("apply", "--whitespace=nowarn", str(diff))
            except GitFailed as exc:
                raise WorkspaceError(f"the change does not apply to session "
                                     f"{self.session_id}: {exc}") from None
        if self.owner is not None:  # files git wrote belong to the host user now
            chown_tree(self.path, self.owner, skip=frozenset({".git"}))

    def patch(self) -> str:
        """The diff from the base commit to the current files, untracked files included."""
        self._stage_all()
        text = self._git("diff", "--cached", "--binary", "--no-ext-diff", "--no-textconv",
                         self.base_commit)
        return text + "\n" if text and not text.endswith("\n") else text

    def snapshot(self) -> str:
        """The git tree of the files as they are now (committing nothing), to compare with a
        later one (`changed_between`)."""
        self._stage_all()
        return self._git("write-tree").strip()

    def changed_between(self, before: str, after: str) -> list[str]:
        """The paths whose contents differ between two snapshots."""
        out = self._git("diff", "--name-only", "-z", "--no-renames", before, after)
        return [path for path in out.split("\0") if path]

    def head(self) -> str:
        """The last checkpoint (the base commit before the first one)."""
        if self.path.is_dir():
            return self._git("rev-parse", "HEAD").strip()
        return self._repo_git("rev-parse", f"refs/heads/{self.branch}").strip()

    def checkpoints(self) -> list[str]:
        """The checkpoint commits since the base, newest first."""
        head = self.head()
        listed = self._repo_git("rev-list", "--first-parent", f"{self.base_commit}..{head}")
        return listed.split()

    def undo(self) -> Rewound:
        """Restore the files as they were before the last turn."""
        return self.rewind(1)

    def rewind(self, steps: int) -> Rewound:
        """Restore the files exactly as they were `steps` checkpoints ago.

        Changes not yet checkpointed count as the latest step (they are committed first, so
        they stay in the branch's reflog). The branch moves back to the restored checkpoint.
        With the working tree removed, only the branch moves. Files are restored by the host;
        nothing should run in the sandbox meanwhile.
        """
        if steps < 1:
            raise WorkspaceError(f"rewind needs a positive number of steps, not {steps}.")
        present = self.path.is_dir()
        if present:
            self.checkpoint("apprentice: changes before rewind")
        history = self.checkpoints()
        if steps > len(history):
            have = f"{len(history)} checkpoint(s)" if history else "no checkpoint yet"
            raise WorkspaceError(f"session {self.session_id} has {have} since its base commit;"
                                 f" cannot rewind {steps}.")
        target = history[steps] if steps < len(history) else self.base_commit
        try:
            files = self._repo_git("diff", "--name-only", target, history[0]).split("\n")
            if present:
                self._git("reset", "-q", "--hard", target)
                if self.owner is not None:  # files git rewrote belong to the host user now
                    chown_tree(self.path, self.owner, skip=frozenset({".git"}))
            else:
                self._repo_git("branch", "-f", self.branch, target)
        except GitFailed as exc:
            raise WorkspaceError(f"could not rewind session {self.session_id}: {exc}") from None
        return Rewound(history[:steps], target, [name for name in files if name])

    def remove(self, delete_branch: bool = False) -> None:
        """Remove the working tree (the branch stays unless asked). Safe to call twice."""
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        if self.git_dir is not None and self._owns_git_dir():
            with worktrees_lock(self.repo_path):  # what `git worktree prune` does
                shutil.rmtree(self.git_dir, ignore_errors=True)
        record = self.record()
        if delete_branch:
            with contextlib.suppress(GitFailed):
                self._repo_git("branch", "-D", self.branch)
            if record is not None:
                delete_record(record)
        elif record is not None and record.removed_at is None:
            record.removed_at = time.time()
            save_record(record)

    def _owns_git_dir(self) -> bool:
        """Whether `git_dir` is the worktree metadata of this session's folder (and no other)."""
        assert self.git_dir is not None
        try:
            pointer = (self.git_dir / "gitdir").read_text().strip()
        except OSError:
            return False
        return Path(pointer) == self.path / ".git"
