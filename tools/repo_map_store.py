"""Where the repository map's tags live between runs, and which files it reads."""

from __future__ import annotations

import marshal
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from tools.host_git import GitFailed, list_files
from tools.repo_map_languages import LANGUAGE_BY_SUFFIX, FileTags
from tools.workspace_fs import WorkspaceFS

SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv", ".tox",
                          "dist", "build", "target", ".mypy_cache", ".pytest_cache"})


class TagStore:
    """The on-disk cache: tags by content hash, and per repository root the (mtime, size, hash)
    of each file seen."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a lost cache write is only re-parsed
        self.db.execute("CREATE TABLE IF NOT EXISTS tags (digest TEXT PRIMARY KEY, data BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS files (root TEXT, path TEXT, mtime_ns "
                        "INTEGER, size INTEGER, digest TEXT, PRIMARY KEY (root, path))")
        self.db.commit()

    def files(self, root: str) -> dict[str, tuple[int, int, str]]:
        rows = self.db.execute("SELECT path, mtime_ns, size, digest FROM files WHERE root = ?",
                               (root,))
        return {path: (mtime, size, digest) for path, mtime, size, digest in rows}

    def tags(self, digests: Iterable[str]) -> dict[str, FileTags]:
        found: dict[str, FileTags] = {}
        wanted = list(dict.fromkeys(digests))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = self.db.execute(f"SELECT digest, data FROM tags WHERE digest IN "
                                   f"({','.join('?' * len(chunk))})", chunk)
            for digest, data in rows:
                found[digest] = FileTags.from_data(marshal.loads(data))
        return found

    def save(self, root: str, files: dict[str, tuple[int, int, str]],
             new_tags: dict[str, FileTags], gone: Iterable[str]) -> None:
        """Record new tags and the (mtime, size, hash) of changed files; forget gone ones."""
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?)",
                                [(d, marshal.dumps(t.to_data())) for d, t in new_tags.items()])
            self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                                [(root, p, *stat) for p, stat in files.items()])
            self.db.executemany("DELETE FROM files WHERE root = ? AND path = ?",
                                [(root, p) for p in gone])

    def close(self) -> None:
        self.db.close()


def source_files(root: Path) -> list[str]:
    """Files of the languages the map knows, relative to `root`: what git lists (minus what
    .gitignore ignores and vendored folders), else a walk skipping hidden and vendored folders."""
    return sorted(path for path, _ in stat_sources(Path(root)))


def stat_sources(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of each source file (see `source_files`): regular files only, so
    a symbolic link (perhaps to a file outside the workspace) never enters the map."""
    base = str(root)
    fs = WorkspaceFS(root)
    try:
        names = list_files(root)
    except (GitFailed, OSError):
        names = None
    if names is not None:
        for name in names:
            if _known(name) and not _vendored(name):
                try:
                    info = fs.lstat(name)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    yield name, info
        return
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            scan = os.scandir(os.path.join(base, folder))
        except OSError:
            continue
        with scan:
            for item in scan:
                if item.is_dir(follow_symlinks=False):
                    if item.name not in SKIPPED_DIRS and not item.name.startswith("."):
                        folders.append(folder + item.name + "/")
                elif _known(item.name) and item.is_file(follow_symlinks=False):
                    try:
                        yield folder + item.name, item.stat(follow_symlinks=False)
                    except OSError:
                        continue


def _vendored(name: str) -> bool:
    """Whether a listed file lies in a folder the map skips (dependencies, caches)."""
    return any(part in SKIPPED_DIRS - {"dist", "build", "target"} for part in name.split("/")[:-1])


def _known(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in LANGUAGE_BY_SUFFIX
