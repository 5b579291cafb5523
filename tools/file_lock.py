"""Exclusive locks across threads and processes, kept as files under `$APPRENTICE_HOME/locks`."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

from tools.locations import data_dir


@contextlib.contextmanager
def exclusive_lock(name: str) -> Iterator[None]:
    """Hold the lock called `name` (a file name) while the block runs; others wait.

    `flock` locks belong to an open file, so two threads of one process exclude each other
    as two processes do.
    """
    folder = data_dir() / "locks"
    folder.mkdir(exist_ok=True)
    with open(folder / name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
