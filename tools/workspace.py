"""A session's own git worktree and branch, so the user's checkout is never touched."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import git

from tools.locations import data_dir, worktrees_dir

IGNORED_BY_AGENT = "__pycache__/\n*.pyc\n.pytest_cache/\n.mypy_cache/\n.ruff_cache/\n"
"""Build litter the sandbox produces, kept out of checkpoints and patches."""

AGENT_IDENTITY = {
    "GIT_AUTHOR_NAME": "apprentice",
    "GIT_AUTHOR_EMAIL": "agent@apprentice.invalid",
    "GIT_COMMITTER_NAME": "apprentice",
    "GIT_COMMITTER_EMAIL": "agent@apprentice.invalid",
}


class WorkspaceError(RuntimeError):
    """The repository cannot host a session; the message says why and what to do."""


def _excludes_file() -> Path:
    path = data_dir() / "git-excludes"
    if not path.exists() or path.read_text() != IGNORED_BY_AGENT:
        path.write_text(IGNORED_BY_AGENT)
    return path


def _git(path: Path) -> git.Git:
    """A git command runner for a worktree the sandbox user may own."""
    runner = git.Git(str(path))
    runner.update_environment(
        GIT_CONFIG_COUNT="2",
        GIT_CONFIG_KEY_0="safe.directory",
        GIT_CONFIG_VALUE_0="*",
        GIT_CONFIG_KEY_1="core.excludesFile",
        GIT_CONFIG_VALUE_1=str(_excludes_file()),
        **AGENT_IDENTITY,
    )
    return runner


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


@dataclass
class Workspace:
    """The worktree of one session on branch `agent/<session_id>`, from a base commit."""

    repo_path: Path
    path: Path
    branch: str
    base_commit: str
    session_id: str

    @classmethod
    def create(cls, repo_path: Path, session_id: str, base: str = "HEAD") -> Workspace:
        repo = open_repository(repo_path)
        root = Path(repo.working_tree_dir or repo_path).resolve()
        base_commit = repo.commit(base).hexsha
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
        path = worktrees_dir() / f"{root.name}-{digest}" / session_id
        branch = f"agent/{session_id}"
        if repo.git.branch("--list", branch).strip():
            raise WorkspaceError(f"branch {branch} already exists in {root}; use a new session id.")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            repo.git.worktree("add", "-b", branch, str(path), base_commit)
        except git.GitCommandError as exc:
            raise WorkspaceError(
                f"could not create a worktree for {root}: {exc.stderr.strip()}"
            ) from None
        return cls(root, path, branch, base_commit, session_id)

    def changed(self) -> bool:
        """Whether the worktree differs from its last commit (ignoring build litter)."""
        return bool(_git(self.path).status("--porcelain").strip())

    def checkpoint(self, message: str) -> str | None:
        """Commit every change as a checkpoint; return the commit, or None if nothing changed."""
        runner = _git(self.path)
        runner.add("-A")
        if not runner.diff("--cached", "--name-only").strip():
            return None
        runner.commit("-q", "--no-verify", "-m", message)
        return runner.rev_parse("HEAD")

    def patch(self) -> str:
        """The diff from the base commit to the current files, untracked files included."""
        runner = _git(self.path)
        runner.add("-A")
        text = runner.diff("--cached", "--binary", self.base_commit)
        return text + "\n" if text and not text.endswith("\n") else text

    def head(self) -> str:
        return _git(self.path).rev_parse("HEAD")

    def remove(self, delete_branch: bool = False) -> None:
        """Remove the worktree directory (the branch stays unless asked). Safe to call twice."""
        repo = git.Repo(self.repo_path)
        if self.path.exists():
            try:
                repo.git.worktree("remove", "--force", str(self.path))
            except git.GitCommandError:
                shutil.rmtree(self.path, ignore_errors=True)
        repo.git.worktree("prune")
        if delete_branch:
            with contextlib.suppress(git.GitCommandError):
                repo.git.branch("-D", self.branch)
