"""The default sandbox: one locked-down container per session, one persistent bash inside."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
from docker.errors import DockerException

from tools.sandbox.base import WORKSPACE, CommandResult, SandboxConfig, SandboxError
from tools.sandbox.image import SANDBOX_PATH, SANDBOX_UID, connect_docker, image_exists
from tools.sandbox.shell_protocol import BASH_ARGV, CommandRunner

SANDBOX_LABEL = "apprentice.sandbox"
"""Label on every sandbox container (find strays with `docker ps -a -f label=...`)."""

CONTAINER_ENV = {
    "PATH": SANDBOX_PATH,
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
"""The whole environment commands see: nothing of the host's (API keys stay outside)."""

_FRAME_HEADER = struct.Struct(">BxxxL")


class DockerExecTransport:
    """bash started by `docker exec -i`, spoken to over the raw attach socket.

    Without a TTY Docker frames the stream: an 8-byte header (stream id, 3 zero bytes, payload
    length as big-endian uint32) before each payload; `receive` strips the headers.
    """

    def __init__(self, api: docker.APIClient, container_id: str, user: str) -> None:
        self._api = api
        self.exec_id: str = api.exec_create(
            container_id,
            BASH_ARGV,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            user=user,
            workdir=WORKSPACE,
        )["Id"]
        self._response: Any = api.exec_start(self.exec_id, socket=True, tty=False)
        self._sock: socket.socket = getattr(self._response, "_sock", self._response)
        self._sock.settimeout(None)
        self._frames = bytearray()
        self._eof = False

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def receive(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            payload = self._take_payloads()
            if payload:
                return payload
            if self._eof:
                return None
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._sock], [], [], remaining)
            if not ready:
                return b""
            try:
                chunk = self._sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                self._frames += chunk
            else:
                self._eof = True

    def _take_payloads(self) -> bytes:
        """Payloads of all complete frames received so far (stdout and stderr alike)."""
        out = bytearray()
        offset = 0
        frames = self._frames
        while len(frames) - offset >= _FRAME_HEADER.size:
            _, size = _FRAME_HEADER.unpack_from(frames, offset)
            end = offset + _FRAME_HEADER.size + size
            if end > len(frames):
                break
            out += frames[offset + _FRAME_HEADER.size : end]
            offset = end
        del frames[:offset]
        return bytes(out)

    def exit_code(self) -> int | None:
        for _ in range(50):
            try:
                state = self._api.exec_inspect(self.exec_id)
            except DockerException:
                return None
            if not state.get("Running"):
                return state.get("ExitCode")
            time.sleep(0.02)
        return None

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            close = getattr(self._response, "close", None)
            if close is not None and self._response is not self._sock:
                close()


class DockerSandbox:
    """Runs the session's commands in a container that can only touch the workspace.

    One container per session (no network unless asked, memory / pids / CPU limits, all
    capabilities dropped, no-new-privileges, read-only root with a tmpfs /tmp, a non-root
    user), the host workspace bind-mounted at /workspace, and one persistent bash in it.
    """

    def __init__(self, config: SandboxConfig, host_workspace: Path) -> None:
        self.config = config
        self.host_workspace = Path(host_workspace).resolve()
        self._client: docker.DockerClient | None = None
        self._container: Any = None
        self._runner: CommandRunner | None = None

    @property
    def container_id(self) -> str | None:
        """The container's id while the sandbox runs."""
        return self._container.id if self._container is not None else None

    def start(self) -> None:
        """Create the container and its shells (no-op if already started)."""
        if self._runner is not None:
            return
        if not self.host_workspace.is_dir():
            raise SandboxError(f"Workspace {self.host_workspace} is not a directory.")
        client = connect_docker()
        if not image_exists(client, self.config.image):
            raise SandboxError(
                f"Sandbox image {self.config.image} not found: build it with "
                "`agent sandbox build --offline` (or `agent sandbox build` where a registry "
                "is reachable)."
            )
        self._client = client
        user = self._container_user()
        try:
            self._container = client.containers.run(self.config.image, **self._run_options(user))
            runner = CommandRunner(
                lambda: DockerExecTransport(client.api, self._container.id, user),
                output_limit=self.config.max_output_chars,
                default_timeout=self.config.command_timeout,
                recover=self._restart_container,
            )
            runner.start()
        except (DockerException, SandboxError) as exc:
            self.close()
            if isinstance(exc, SandboxError):
                raise
            raise SandboxError(f"Could not start the sandbox container: {exc}") from exc
        self._runner = runner

    def _run_options(self, user: str) -> dict[str, Any]:
        """How the container is locked down (keyword arguments of `containers.run`)."""
        return {
            "command": ["sleep", "infinity"],
            "detach": True,
            "init": True,  # reaps orphans, so zombies never eat the pids limit
            "user": user,
            "environment": CONTAINER_ENV,
            "working_dir": WORKSPACE,
            "volumes": {str(self.host_workspace): {"bind": WORKSPACE, "mode": "rw"}},
            "network_mode": "bridge" if self.config.network else "none",
            "mem_limit": self.config.memory,
            "memswap_limit": self.config.memory,
            "pids_limit": self.config.pids,
            "nano_cpus": int(self.config.cpus * 1e9),
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,exec,mode=1777,size={self.config.memory}"},
            "labels": {SANDBOX_LABEL: "1"},
            "hostname": "sandbox",
        }

    def _container_user(self) -> str:
        """The host user's uid:gid; as root, the image's `agent` user, given the workspace."""
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        _chown_tree(self.host_workspace, SANDBOX_UID, SANDBOX_UID)
        return f"{SANDBOX_UID}:{SANDBOX_UID}"

    def _restart_container(self) -> None:
        """Last resort when no shell can be started inside: kill everything, start afresh."""
        if self._container is not None:
            self._container.restart(timeout=0)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        """Run one command in the persistent shell; failures come back as data."""
        if self._runner is None:
            raise SandboxError("The sandbox is not started: call start() first.")
        return self._runner.run(command, timeout)

    def close(self) -> None:
        """Remove the container (and so everything in it); safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
        container, self._container = self._container, None
        if container is not None:
            # NotFound: already gone; otherwise the engine went away (the label finds it later)
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DockerSandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give `root` and everything under it to uid:gid (symlinks themselves, not their targets)."""
    for folder, dirs, files in os.walk(root):  # does not descend into symlinked folders
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            if stat.st_uid != uid or stat.st_gid != gid:
                os.chown(path, uid, gid, follow_symlinks=False)
