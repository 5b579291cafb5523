"""Host-side file access that stays inside the workspace, whatever the sandbox does meanwhile.

The sandbox can rename folders and plant symbolic links at any moment, so a path checked and
then opened again may lead somewhere else by the time it is opened. Here a path is resolved
and opened in one step, relative to a handle on the workspace folder: with `openat2` and
`RESOLVE_BENEATH` where the kernel has it (links inside the workspace are followed, a link out
of it fails), else one component at a time with `O_NOFOLLOW` (no link is followed at all).
Every further operation (read, write, list, remove, chown) goes through the handles opened
that way, never through the path again. Only regular files are read or written, opened
non-blocking so a FIFO cannot hang the host, and reads stop at a size limit.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 4_000_000
"""Largest file the tools read or rewrite."""

_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it to (5.6+)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_BASE_FLAGS = os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class FileAccessError(OSError):
    """A path cannot be used: outside the workspace, a link out of it, not a regular file, too
    large. The message says which, in words the model can act on."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_libc = _load_libc()
_openat2_works: bool | None = None if _libc is not None else False


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    assert _libc is not None
    how = _OpenHow(flags=flags, mode=mode, resolve=_RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), os.fsencode(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _openat2_flags(flags: int) -> int:
    """openat2 refuses O_PATH with anything but O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC."""
    if flags & os.O_PATH:
        return flags | os.O_CLOEXEC
    return flags | _BASE_FLAGS


def use_openat2(enabled: bool | None) -> None:
    """Force (True/False) or re-detect (None) the use of openat2; tests cover both paths."""
    global _openat2_works
    _openat2_works = enabled if _libc is not None else False


def _parts(relative: str) -> list[str]:
    parts = [p for p in PurePosixPath(relative).parts if p not in ("", ".")]
    if any(p == ".." or p == "/" for p in parts):
        raise FileAccessError(errno.EXDEV, f"{relative} leaves the workspace")
    return parts


@dataclass(frozen=True)
class Entry:
    """One name in a listed folder."""

    name: str
    kind: str
    """"file", "dir", "link" or "other"."""


class WorkspaceFS:
    """File operations on paths relative to `root`, each confined to it (see the module)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def owner(self) -> tuple[int, int] | None:
        """Who files written here should belong to: the root folder's owner, when we are root
        and it is someone else (the sandbox user); else None (ours already)."""
        if os.geteuid() != 0:
            return None
        info = os.stat(self.root)
        return None if (info.st_uid, info.st_gid) == (0, 0) else (info.st_uid, info.st_gid)

    # -- opening --------------------------------------------------------------------------------

    def _open(self, relative: str, flags: int, mode: int = 0o644) -> int:
        """An fd for `relative` (flags as for os.open), resolved beneath the root in one step."""
        global _openat2_works
        parts = _parts(relative)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not parts:
                return os.dup(root_fd) if flags & (os.O_DIRECTORY | os.O_PATH) \
                else _refuse_dir(relative)
            if _openat2_works is not False:
                try:
                    fd = _openat2(root_fd, "/".join(parts), _openat2_flags(flags),
                                  mode if flags & os.O_CREAT else 0)
                    _openat2_works = True
                    return fd
                except OSError as exc:
                    if exc.errno in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:
                        _openat2_works = False  # no openat2 here (old kernel, seccomp)
                    else:
                        raise _explain(exc, relative) from None
            return self._open_stepwise(root_fd, parts, flags, mode, relative)
        finally:
            os.close(root_fd)

    @staticmethod
    def _open_stepwise(root_fd: int, parts: list[str], flags: int, mode: int,
                       relative: str) -> int:
        current = os.dup(root_fd)
        try:
            for part in parts[:-1]:
                try:
                    step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _BASE_FLAGS,
                                   dir_fd=current)
                except OSError as exc:
                    raise _explain(exc, relative) from None
                os.close(current)
                current = step
            try:
                return os.open(parts[-1], flags | os.O_NOFOLLOW | _BASE_FLAGS, mode,
                               dir_fd=current)
            except OSError as exc:
                raise _explain(exc, relative) from None
        finally:
            os.close(current)

    @contextmanager
    def _fd(self, relative: str, flags: int, mode: int = 0o644) -> Iterator[int]:
        fd = self._open(relative, flags, mode)
        try:
            yield fd
        finally:
            os.close(fd)

    # -- queries --------------------------------------------------------------------------------

    def kind(self, relative: str) -> str:
        """"file", "dir", "missing", "other" (FIFO, device...) or "outside" (a link out)."""
        try:
            with self._fd(relative, os.O_PATH) as fd:
                mode = os.fstat(fd).st_mode
        except FileNotFoundError:
            return "missing"
        except FileAccessError as exc:
            return "missing" if exc.errno == errno.ENOENT else "outside"
        if stat.S_ISREG(mode):
            return "file"
        if stat.S_ISLNK(mode):  # only without openat2: no link is followed then
            return "outside"
        return "dir" if stat.S_ISDIR(mode) else "other"

    def stat(self, relative: str) -> os.stat_result:
        """The stat of what `relative` leads to inside the workspace."""
        with self._fd(relative, os.O_PATH) as fd:
            return os.fstat(fd)

    def lstat(self, relative: str) -> os.stat_result:
        """The stat of `relative` itself (a link is not followed at the last step)."""
        with self._fd(relative, os.O_PATH | os.O_NOFOLLOW) as fd:
            return os.fstat(fd)

    def list_dir(self, relative: str = ".") -> list[Entry]:
        """The entries of a folder, links shown as links (not followed)."""
        with self._fd(relative, os.O_RDONLY | os.O_DIRECTORY) as fd, os.scandir(fd) as found:
            return sorted((Entry(item.name, _entry_kind(item)) for item in found),
                          key=lambda e: e.name)

    # -- reading --------------------------------------------------------------------------------

    def read_bytes(self, relative: str, limit: int = MAX_FILE_BYTES) -> bytes:
        """The bytes of a regular file of at most `limit` bytes."""
        with self._fd(relative, os.O_RDONLY) as fd:
            info = os.fstat(fd)
            _require_regular(info, relative)
            if info.st_size > limit:
                raise FileAccessError(errno.EFBIG, f"{relative} is {info.st_size:,} bytes, more "
                                      f"than the {limit:,} this tool reads")
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                raise FileAccessError(errno.EFBIG, f"{relative} grew past {limit:,} bytes")
            return b"".join(chunks)

    def read_text(self, relative: str, limit: int = MAX_FILE_BYTES) -> str:
        """A UTF-8 text file (UnicodeDecodeError if it is not one)."""
        return self.read_bytes(relative, limit).decode("utf-8")

    # -- writing --------------------------------------------------------------------------------

    def write_text(self, relative: str, text: str, owner: tuple[int, int] | None = None) -> None:
        """Write a regular file (created with its folders if missing); `owner` gets what was
        created or rewritten, through the open handles (never by path)."""
        parts = _parts(relative)
        if not parts:
            raise FileAccessError(errno.EISDIR, "the workspace root is a directory")
        parent_fd = self._make_dirs(parts[:-1], owner, relative)
        try:
            try:
                fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | _BASE_FLAGS,
                             0o644, dir_fd=parent_fd)
            except OSError as exc:
                raise _explain(exc, relative) from None
            try:
                _require_regular(os.fstat(fd), relative)
                os.ftruncate(fd, 0)
                data = text.encode("utf-8", errors="surrogateescape")
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if owner is not None:
                    os.fchown(fd, *owner)
            finally:
                os.close(fd)
        finally:
            os.close(parent_fd)

    def _make_dirs(self, parts: list[str], owner: tuple[int, int] | None, relative: str) -> int:
        """An fd of the folder `parts`, creating missing ones (given to `owner`)."""
        current = self._open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _BASE_FLAGS
                try:
                    step = os.open(part, flags, dir_fd=current)
                except FileNotFoundError:
                    with suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=current)
                    try:
                        step = os.open(part, flags, dir_fd=current)
                    except OSError as exc:
                        raise _explain(exc, relative) from None
                    if owner is not None:
                        os.fchown(step, *owner)
                except OSError as exc:
                    raise _explain(exc, relative) from None
                os.close(current)
                current = step
            return current
        except BaseException:
            os.close(current)
            raise

    def unlink(self, relative: str) -> None:
        """Remove a file (not a folder), if it is there."""
        parts = _parts(relative)
        if not parts:
            raise FileAccessError(errno.EISDIR, "the workspace root is a directory")
        parent = "/".join(parts[:-1]) or "."
        with self._fd(parent, os.O_RDONLY | os.O_DIRECTORY) as fd:
            try:
                os.unlink(parts[-1], dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _explain(exc, relative) from None


def _entry_kind(item: os.DirEntry[str]) -> str:
    if item.is_symlink():
        return "link"
    if item.is_dir(follow_symlinks=False):
        return "dir"
    return "file" if item.is_file(follow_symlinks=False) else "other"


def _require_regular(info: os.stat_result, relative: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise FileAccessError(errno.EISDIR, f"{relative} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise FileAccessError(errno.EINVAL, f"{relative} is not a regular file (a FIFO, socket "
                              "or device); the file tools only read and write regular files")


def _refuse_dir(relative: str) -> int:
    raise FileAccessError(errno.EISDIR, f"{relative or '.'} is the workspace root, a directory")


def _explain(exc: OSError, relative: str) -> OSError:
    """The OSError of a failed open, reworded for the model (FileNotFoundError stays one)."""
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(errno.ENOENT, f"{relative} does not exist")
    if exc.errno == errno.EXDEV:
        return FileAccessError(exc.errno, f"{relative} leads outside the workspace (through a "
                               "symbolic link); it is not followed")
    if exc.errno == errno.ELOOP:
        return FileAccessError(exc.errno, f"{relative} goes through a symbolic link, which is "
                               "not followed here; use the real path")
    if exc.errno == errno.ENOTDIR:
        return FileAccessError(exc.errno, f"{relative}: a part of this path is not a directory "
                               "(a symbolic link to a folder is not followed here)")
    if exc.errno == errno.ENXIO:
        return FileAccessError(exc.errno, f"{relative} is not a regular file (a FIFO or socket)")
    if exc.errno == errno.EISDIR:
        return FileAccessError(exc.errno, f"{relative} is a directory")
    if isinstance(exc, FileAccessError):
        return exc
    return FileAccessError(exc.errno or errno.EIO, f"{relative}: {exc.strerror or exc}")
