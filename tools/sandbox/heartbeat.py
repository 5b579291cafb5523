"""A sandbox container ends itself when the process that owns it is gone.

A container cannot see host processes, so its owner shows it is alive instead: a thread of
the owning process touches a heartbeat file every `BEAT_S` seconds, and the container sees that
file read-only. The container's main process exits once the file is older than `STALE_S`
(the owner was killed, even with kill -9), and with it the container, so nothing keeps
running; `agent sessions prune` (or the next `agent` start) then removes what is left.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from tools.locations import data_dir
from tools.process_owner import ProcessOwner

BEAT_S = 10.0
STALE_S = 120.0
"""Seconds without a beat after which the container ends: well above `BEAT_S`, so a busy or
briefly suspended owner does not lose its sandbox."""
POLL_S = 5
"""Seconds between the container's looks at the heartbeat."""
MOUNT_POINT = "/run/apprentice-owner"
"""Where the container sees the folder holding its owner's heartbeat file."""
FILE_NAME = "alive"

_lock = threading.Lock()
_files: set[Path] = set()
_thread: threading.Thread | None = None


def heartbeat_folder() -> Path:
    """This process's heartbeat folder (one file, `alive`), beating from now on."""
    owner = ProcessOwner.current()
    folder = data_dir() / "heartbeats" / f"{owner.pid}-{owner.started or 0}"
    folder.mkdir(parents=True, exist_ok=True)
    beat = folder / FILE_NAME
    beat.touch()
    global _thread
    with _lock:
        _files.add(beat)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_beat, name="sandbox-heartbeat", daemon=True)
            _thread.start()
    return folder


def _beat() -> None:
    while True:
        time.sleep(BEAT_S)
        with _lock:
            files = list(_files)
        for path in files:
            with contextlib.suppress(OSError):
                os.utime(path)


def watchdog_command(stale_s: float | None = None) -> list[str]:
    """The container's main process: wait while the heartbeat is fresh (younger than
    `stale_s`, default `STALE_S`), then exit."""
    stale_s = STALE_S if stale_s is None else stale_s
    beat = f"{MOUNT_POINT}/{FILE_NAME}"
    script = (f'while now=$(date +%s) && seen=$(stat -c %Y {beat} 2>/dev/null) '
              f'&& [ $((now - seen)) -lt {int(stale_s)} ]; do sleep {POLL_S}; done')
    return ["sh", "-c", script]
