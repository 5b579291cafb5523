"""Which process owns a thing left on disk or in Docker (an index row, a verify folder, a
container), told apart from a later process that reuses its pid, so that what a killed process
left behind can be recognised and cleaned up."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LABEL_PREFIX = "apprentice.owner."
"""Docker labels `apprentice.owner.pid`, `.started`, `.boot` and `.host`."""
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def process_started(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux), else None."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def boot_id() -> str | None:
    """This boot of this machine (Linux), else None."""
    try:
        return BOOT_ID_FILE.read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class ProcessOwner:
    """A process, named so that it stays distinct from a later one with the same pid."""

    pid: int
    started: str | None
    """Its start time (`process_started`); a different one means a reused pid."""
    boot: str | None
    """The boot it ran in (`boot_id`); a different one means the machine restarted since."""
    host: str
    """The machine; an owner on another machine is never judged gone."""

    @classmethod
    def current(cls) -> ProcessOwner:
        pid = os.getpid()
        return cls(pid, process_started(pid), boot_id(), socket.gethostname())

    def gone(self) -> bool:
        """True only when it is certain the process no longer runs."""
        if self.host != socket.gethostname():
            return False
        now = boot_id()
        if self.boot and now and self.boot != now:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, someone else's
        fields = _proc_stat(self.pid)
        if fields is None:
            return False
        if fields[0] in ("Z", "X"):
            return True  # killed, not yet reaped by its parent
        started = fields[19] if len(fields) > 19 else None
        return bool(self.started and started and started != self.started)

    def labels(self) -> dict[str, str]:
        """The owner as Docker labels."""
        return {LABEL_PREFIX + k: str(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> ProcessOwner | None:
        """The owner named by a container's labels, if it has them."""
        values = {k[len(LABEL_PREFIX):]: v for k, v in labels.items()
                  if k.startswith(LABEL_PREFIX)}
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ProcessOwner | None:
        try:
            return cls(int(values["pid"]), values.get("started"), values.get("boot"),
                       str(values["host"]))
        except (KeyError, TypeError, ValueError):
            return None

    def write(self, path: Path) -> None:
        """Save the owner as a JSON note at `path`."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> ProcessOwner | None:
        """The owner saved at `path`, or None if there is no readable note."""
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            return cls.from_dict(data) if isinstance(data, dict) else None
        return None
