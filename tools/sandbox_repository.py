"""The git repository the sandbox sees at /workspace/.git: the session's own, disposable copy.

Git inside the sandbox works on this copy only: `git status`, `diff`, `log` and commits on the
session branch. The user's repository is not mounted, so nothing done inside can reach its
checkout, branches or refs. The copy's objects are hardlinked from the user's repository when
that is safe (the links are read-only to the sandbox user), else copied.

The host never runs git on this copy after the sandbox has started: its config and hooks are
the sandbox's to write, and a host git reading them would run the sandbox's commands.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from tools.host_git import run_git
from tools.sandbox.ownership import Owner, chown_tree

SANDBOX_GIT_CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
[user]
\tname = apprentice
\temail = agent@apprentice.invalid
"""


def hardlinks_are_safe(objects: Path, owner: Owner | None) -> bool:
    """Whether the sandbox user can read, and never write, hardlinks to the files in `objects`.

    Only true when the sandbox runs as a different user (`owner`) who does not own, and cannot
    write, any of them but can read all of them.
    """
    if owner is None:
        return False  # the container runs as us, the files' owner: it could change them
    uid, gid = owner
    for folder, _, files in os.walk(objects):
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            if not stat.S_ISREG(info.st_mode):
                continue
            writable = info.st_mode & 0o002 or (info.st_gid == gid and info.st_mode & 0o020)
            if info.st_uid == uid or writable or not info.st_mode & 0o004:
                return False
    return True


def create_sandbox_repository(
    source_git_dir: Path,
    work_tree: Path,
    branch: str,
    base_commit: str,
    owner: Owner | None,
    excludes: str,
    env: dict[str, str],
) -> None:
    """Make `work_tree/.git`: a copy of the source's objects, with only `branch` at the base.

    `work_tree` already holds the files of `base_commit`; the new index matches them. The
    result is given to `owner` (hardlinked objects excepted), ready before any sandbox runs.
    """
    git_dir = work_tree / ".git"
    objects = source_git_dir / "objects"
    clone = ["clone", "--bare", "--template=", "--quiet", "--no-tags"]
    if not hardlinks_are_safe(objects, owner):
        clone.append("--no-hardlinks")
    run_git([*clone, str(source_git_dir), str(git_dir)], env)
    # Only the session branch: the user's other branches and its remote stay outside.
    shutil.rmtree(git_dir / "refs")
    (git_dir / "packed-refs").unlink(missing_ok=True)
    (git_dir / "refs" / "heads" / branch).parent.mkdir(parents=True)
    (git_dir / "refs" / "tags").mkdir()
    (git_dir / "refs" / "heads" / branch).write_text(base_commit + "\n")
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (git_dir / "config").write_text(SANDBOX_GIT_CONFIG)
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "exclude").write_text(excludes)
    run_git(
        [f"--git-dir={git_dir}", f"--work-tree={work_tree}", "read-tree", base_commit], env
    )
    if owner is not None:
        chown_tree(git_dir, owner)
