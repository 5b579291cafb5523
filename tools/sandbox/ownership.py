"""Who owns the workspace files, so the sandbox user can edit them and nothing else."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tools.sandbox.base import SANDBOX_UID

Owner = tuple[int, int]


def sandbox_owner() -> Owner | None:
    """uid:gid the container runs as when it differs from this process's user, else None.

    As root the container runs as the image's `agent` user (uid 1000), so the workspace must be
    given to it; otherwise the container runs as the host user, who owns the files already.
    """
    return (SANDBOX_UID, SANDBOX_UID) if os.geteuid() == 0 else None


def chown_tree(root: Path, owner: Owner, skip: frozenset[str] = frozenset()) -> None:
    """Give `root` and everything under it to `owner`, without following symlinks.

    Regular files with more than one link are left alone: they are shared with something
    outside the tree (e.g. git objects hardlinked from the user's repository), and changing
    their owner would hand that outside file to the sandbox. Top-level names in `skip` are
    not entered.
    """
    uid, gid = owner
    for folder, dirs, files in os.walk(root):  # does not descend into symlinked folders
        if folder == str(root):
            dirs[:] = [name for name in dirs if name not in skip]
            files = [name for name in files if name not in skip]
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
                if info.st_uid == uid and info.st_gid == gid:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                    continue
                os.chown(path, uid, gid, follow_symlinks=False)
            except FileNotFoundError:  # removed meanwhile (e.g. git's lock files)
                continue
