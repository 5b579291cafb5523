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
    # fwalk opens each folder relative to its parent's handle and checks it is the folder it
    # listed, so a folder swapped for a symlink meanwhile is not entered (os.walk would).
    for folder, dirs, files, folder_fd in os.fwalk(root, follow_symlinks=False):
        if folder == str(root):
            dirs[:] = [name for name in dirs if name not in skip]
            files = [name for name in files if name not in skip]
        _chown_at(folder_fd, None, uid, gid)
        for name in [*dirs, *files]:
            _chown_at(folder_fd, name, uid, gid)


def _chown_at(folder_fd: int, name: str | None, uid: int, gid: int) -> None:
    """chown `name` in the folder `folder_fd` (the folder itself for None), never a link's
    target, never a regular file with several links."""
    try:
        info = os.fstat(folder_fd) if name is None else os.stat(
            name, dir_fd=folder_fd, follow_symlinks=False)
        if (info.st_uid, info.st_gid) == (uid, gid):
            return
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            return
        if name is None:
            os.fchown(folder_fd, uid, gid)
        else:
            os.chown(name, uid, gid, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:  # removed meanwhile (e.g. git's lock files)
        return
