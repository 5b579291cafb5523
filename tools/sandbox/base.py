"""The contract every sandbox satisfies: run a shell command, report what happened."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

WORKSPACE = "/workspace"
"""Where the session's worktree appears inside the sandbox."""

DEFAULT_IMAGE = "apprentice-sandbox:latest"
SANDBOX_UID = 1000
"""uid and gid of the image's `agent` user."""
SETUP_NETWORK_ENV = "APPRENTICE_SETUP_NETWORK"
"""Set to 1 to let repository setup steps use the network (see `SandboxConfig`)."""


class SandboxError(RuntimeError):
    """The sandbox could not be started or used; the message says what to do."""


class SandboxConfig(BaseModel):
    """Settings for a session's sandbox. Defaults are the safe ones."""

    kind: str = Field(
        default="docker", description="`docker` (isolated, default) or `local` (no isolation)."
    )
    image: str = Field(default=DEFAULT_IMAGE, description="Image the container starts from.")
    network: bool = Field(
        default=False, description="Give the container a network (off by default)."
    )
    setup_network: bool = Field(
        default_factory=lambda: os.environ.get(SETUP_NETWORK_ENV) == "1",
        description="Give a repository's setup step (.apprentice.toml) a network; episodes "
        f"still get none unless `network` is set. Default: {SETUP_NETWORK_ENV}=1.",
    )
    memory: str = Field(default="2g", description="Memory limit (docker syntax, e.g. 512m, 2g).")
    pids: int = Field(default=512, description="Maximum number of processes inside the sandbox.")
    cpus: float = Field(default=2.0, description="CPU limit in cores.")
    command_timeout: float = Field(
        default=120.0, description="Default per-command time-out in seconds."
    )
    max_output_chars: int = Field(
        default=20_000, description="Output beyond this is cut (head + tail)."
    )


@dataclass
class CommandResult:
    """What one command did. Never raised: failures are data."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    interrupted: bool = False
    truncated_chars: int = 0
    shell_restarted: bool = False
    duration_s: float = 0.0

    def describe(self) -> str:
        """The observation the model reads."""
        notes = []
        if self.timed_out:
            notes.append("the command timed out and its processes were killed")
        if self.interrupted:
            notes.append("the user interrupted the command and its processes were killed")
        if self.shell_restarted:
            notes.append("the shell died and was restarted: cwd and environment were reset")
        if self.truncated_chars:
            notes.append(f"{self.truncated_chars} characters of output were cut from the middle")
        code = "none" if self.exit_code is None else str(self.exit_code)
        head = f"[exit code: {code}]" + "".join(f"\n[note: {n}]" for n in notes)
        return f"{head}\n{self.output}" if self.output else head


class Sandbox(Protocol):
    """Where shell commands run for one session."""

    config: SandboxConfig
    host_workspace: Path

    def start(self) -> None: ...

    def run(self, command: str, timeout: float | None = None) -> CommandResult: ...

    def interrupt(self) -> None:
        """Kill the running command now (thread-safe; a no-op when none runs)."""
        ...

    def close(self) -> None: ...


def truncate_middle(text: str, limit: int) -> tuple[str, int]:
    """Keep the head and tail of `text` within `limit` characters; return it and the cut count."""
    if len(text) <= limit:
        return text, 0
    half = limit // 2
    cut = len(text) - 2 * half
    return text[:half] + cut_marker(cut) + (text[-half:] if half else ""), cut


def cut_marker(cut: int) -> str:
    """The note that stands in for `cut` characters removed from the middle of an output."""
    return f"\n... [{cut} characters cut] ...\n"
