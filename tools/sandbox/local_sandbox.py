"""The unisolated sandbox: a persistent bash on this machine, in the host workspace."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
from pathlib import Path

from tools.sandbox.base import SandboxConfig, SandboxError
from tools.sandbox.shell_protocol import BASH_ARGV, CommandRunner, RunnerSandbox

logger = logging.getLogger(__name__)

_PASSED_THROUGH = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR")


def local_environment(workspace: Path | None = None) -> dict[str, str]:
    """A minimal environment for local commands: the host PATH and HOME, never its secrets.

    With `workspace`, git trusts the repository there even when the sandbox user owns it.
    """
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env["LANG"] = os.environ.get("LANG", "C.UTF-8")
    env["TERM"] = "dumb"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if workspace is not None:
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory",
                   GIT_CONFIG_VALUE_0=str(workspace))
    return env


class LocalProcessTransport:
    """bash as a child of this process, in a session of its own (its pid is the session id)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            BASH_ARGV,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            bufsize=0,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin.fileno()
        self._stdout = self._proc.stdout.fileno()
        self._eof = False

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._stdin, view) :]

    def receive(self, timeout: float) -> bytes | None:
        if self._eof:
            return None
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        if not ready:
            return b""
        chunk = os.read(self._stdout, 1 << 16)
        if not chunk:
            self._eof = True
            return None
        return chunk

    def exit_code(self) -> int | None:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=5)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


class LocalSandbox(RunnerSandbox):
    """Runs the session's commands directly on this machine: for hosts without Docker.

    Nothing is isolated: commands can read and change anything the user can. It exists so the
    agent works at all where Docker is missing, and only when asked for (`--sandbox local`).
    """

    def __init__(self, config: SandboxConfig, host_workspace: Path) -> None:
        self.config = config
        self.host_workspace = Path(host_workspace).resolve()
        self._runner: CommandRunner | None = None

    def start(self) -> None:
        """Start the persistent shell in the host workspace (no-op if already started)."""
        if self._runner is not None:
            return
        if shutil.which("bash") is None:
            raise SandboxError("The local sandbox needs `bash` on PATH: install it.")
        if not self.host_workspace.is_dir():
            raise SandboxError(f"Workspace {self.host_workspace} is not a directory.")
        logger.warning(
            "Local sandbox: commands run directly on this machine in %s with your permissions;"
            " nothing is isolated. Use --sandbox docker for isolation.",
            self.host_workspace,
        )
        env = local_environment(self.host_workspace)
        runner = CommandRunner(
            lambda: LocalProcessTransport(self.host_workspace, env),
            output_limit=self.config.max_output_chars,
            default_timeout=self.config.command_timeout,
        )
        try:
            runner.start()
        except BaseException:
            runner.close()
            raise
        self._runner = runner

    def close(self) -> None:
        """Kill the shell and everything it started; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close(kill_all=True)
