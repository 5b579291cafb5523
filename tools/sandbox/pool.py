"""Warm sandboxes: started, never used, each on its own empty folder, ready for an episode.

Starting a container is most of an episode reset (a few hundred ms of the engine's time).
Rollouts reset back to back, so a pool starts the next containers in the background while
episodes run; a reset then takes a ready one and only has to fill its folder with the
repository (see `tools.session_setup`). Each container is used by one episode, then removed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import shutil
import threading
from pathlib import Path
from types import TracebackType

from tools.locations import worktrees_dir
from tools.sandbox.base import Sandbox, SandboxConfig, SandboxError

logger = logging.getLogger(__name__)


def empty_folder() -> Path:
    """A new empty folder for a future workspace, under $APPRENTICE_HOME."""
    folder = worktrees_dir() / "pool" / secrets.token_hex(6)
    folder.mkdir(parents=True)
    return folder


class SandboxPool:
    """Keeps `size` started sandboxes of one configuration ready (thread-safe).

    `acquire` hands one out (starting one at once if none is ready) and a background thread
    starts its replacement. A sandbox that fails to start is logged and retried on the next
    `acquire`, which raises the error if it cannot start one itself.
    """

    def __init__(self, config: SandboxConfig, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"a sandbox pool holds at least 1 sandbox, not {size}")
        self.config = config
        self.size = size
        self._ready: queue.Queue[tuple[Sandbox, Path]] = queue.Queue()
        self._wanted = threading.Semaphore(0)
        self._closed = threading.Event()
        self._filler = threading.Thread(target=self._fill, name="sandbox-pool", daemon=True)
        for _ in range(size):
            self._wanted.release()
        self._filler.start()

    def _start_one(self) -> tuple[Sandbox, Path]:
        from tools.sandbox import make_sandbox  # the package imports this module

        folder = empty_folder()
        try:
            return make_sandbox(self.config, folder), folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _fill(self) -> None:
        while True:
            self._wanted.acquire()
            if self._closed.is_set():
                return
            try:
                started = self._start_one()
            except Exception as exc:  # the next `acquire` starts one itself, and says why
                logger.warning("sandbox pool: could not start a sandbox: %s", exc)
                continue
            if self._closed.is_set():
                _discard(started)
                return
            self._ready.put(started)

    def acquire(self) -> tuple[Sandbox, Path]:
        """A started sandbox whose /workspace is the returned empty folder; yours to close."""
        if self._closed.is_set():
            raise SandboxError("the sandbox pool is closed")
        try:
            taken = self._ready.get_nowait()
        except queue.Empty:
            taken = self._start_one()
        else:
            self._wanted.release()  # start its replacement in the background
        return taken

    def close(self) -> None:
        """Remove the sandboxes not handed out; safe to call twice."""
        self._closed.set()
        self._wanted.release()
        self._filler.join(timeout=60)
        while True:
            try:
                _discard(self._ready.get_nowait())
            except queue.Empty:
                return

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _discard(started: tuple[Sandbox, Path]) -> None:
    sandbox, folder = started
    with contextlib.suppress(Exception):
        sandbox.close()
    shutil.rmtree(folder, ignore_errors=True)
