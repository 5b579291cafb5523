"""The default sandbox: one locked-down container per session, one persistent bash inside."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound

from tools.process_owner import ProcessOwner
from tools.sandbox.base import WORKSPACE, SandboxConfig, SandboxError
from tools.sandbox.heartbeat import MOUNT_POINT as HEARTBEAT_MOUNT
from tools.sandbox.heartbeat import heartbeat_folder, watchdog_command
from tools.sandbox.image import SANDBOX_PATH, connect_docker
from tools.sandbox.isolation import PROBE, isolation_problems, parse_probe
from tools.sandbox.ownership import chown_tree, sandbox_owner
from tools.sandbox.shell_protocol import (
    BASH_ARGV,
    HANDSHAKE_TIMEOUT,
    CommandRunner,
    RunnerSandbox,
)

SANDBOX_LABEL = "apprentice.sandbox"
"""Label on every sandbox container (find strays with `docker ps -a -f label=...`). Each also
carries its owner's `ProcessOwner.labels()`, so `agent sessions prune` can remove the containers
of processes that are gone."""

CONTAINER_ENV = {
    "PATH": SANDBOX_PATH,
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
"""The whole environment commands see: nothing of the host's (API keys stay outside)."""

_FRAME_HEADER = struct.Struct(">BxxxL")


class DockerExecTransport:
    """bash (or `argv`) started by `docker exec -i`, spoken to over the raw attach socket.

    Without a TTY Docker frames the stream: an 8-byte header (stream id, 3 zero bytes, payload
    length as big-endian uint32) before each payload; `receive` strips the headers. With
    `split_stderr`, stderr payloads are kept apart (the last `STDERR_KEPT` bytes, in `stderr`)
    instead of joining stdout: a process speaking a protocol on stdout (an MCP server).
    """

    STDERR_KEPT = 8192

    def __init__(self, api: docker.APIClient, container_id: str, user: str,
                 argv: list[str] | None = None, environment: dict[str, str] | None = None,
                 split_stderr: bool = False) -> None:
        self._api = api
        self.exec_id: str = api.exec_create(
            container_id,
            argv or BASH_ARGV,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=False,
            user=user,
            workdir=WORKSPACE,
            environment=environment,
        )["Id"]
        self.stderr = bytearray()
        self._split_stderr = split_stderr
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
            stream, size = _FRAME_HEADER.unpack_from(frames, offset)
            end = offset + _FRAME_HEADER.size + size
            if end > len(frames):
                break
            if stream == 2 and self._split_stderr:
                self.stderr += frames[offset + _FRAME_HEADER.size : end]
                del self.stderr[:-self.STDERR_KEPT]
            else:
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


class DockerSandbox(RunnerSandbox):
    """Runs the session's commands in a container that can only touch the workspace.

    One container per session (no network unless asked, memory / pids / CPU limits, all
    capabilities dropped, no-new-privileges, read-only root with a tmpfs /tmp, a non-root
    user), the host workspace bind-mounted at /workspace, and one persistent bash in it.
    """

    def __init__(self, config: SandboxConfig, host_workspace: Path) -> None:
        self.config = config
        self.host_workspace = Path(host_workspace).resolve()
        self._client: docker.DockerClient | None = None
        self._container_id: str | None = None
        self._runner: CommandRunner | None = None
        self._user: str | None = None

    @property
    def container_id(self) -> str | None:
        """The container's id while the sandbox runs."""
        return self._container_id

    def start(self) -> None:
        """Create the container and its shells, then check its isolation (no-op if started).

        Fails closed: if the container cannot start, or its processes are not isolated as
        configured, it is removed and SandboxError says why. Nothing ever runs on the host.
        """
        if self._runner is not None:
            return
        if not self.host_workspace.is_dir():
            raise SandboxError(f"Workspace {self.host_workspace} is not a directory.")
        self._client = client = connect_docker()
        try:
            self._user = user = self._container_user()
            self._container_id = self._create_container(client, user)
            client.api.start(self._container_id)
            runner = CommandRunner(
                lambda: DockerExecTransport(client.api, str(self._container_id), user),
                output_limit=self.config.max_output_chars,
                default_timeout=self.config.command_timeout,
                recover=self._restart_container,
            )
            self._runner = runner
            runner.start()
            self._check_isolation(runner)
        except BaseException as exc:
            self.close()
            if isinstance(exc, DockerException):
                raise SandboxError(f"Could not start the sandbox container: {exc}") from exc
            raise

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> DockerExecTransport:
        """Start `argv` in the container beside the shell (in /workspace, as the shell's user,
        with the container's environment plus `env`): stdin and stdout attached, stderr kept
        apart. How a program that speaks a protocol on stdio (an MCP server) runs inside."""
        if self._client is None or self._container_id is None or self._user is None:
            raise SandboxError("The sandbox is not running, so nothing can be started in it.")
        try:
            return DockerExecTransport(self._client.api, self._container_id, self._user,
                                       argv=argv, environment=env, split_stderr=True)
        except DockerException as exc:
            raise SandboxError(f"Could not start {argv[0]} in the sandbox: {exc}") from exc

    def _create_container(self, client: docker.DockerClient, user: str) -> str:
        """Create (never pull: no registry is contacted) the locked-down container."""
        api = client.api
        try:
            created = api.create_container(
                self.config.image,
                host_config=api.create_host_config(**self._host_options()),
                **self._container_options(user),
            )
        except ImageNotFound:
            raise SandboxError(
                f"Sandbox image {self.config.image} not found: build it with "
                "`agent sandbox build --offline` (or `agent sandbox build` where a registry "
                "is reachable)."
            ) from None
        return str(created["Id"])

    def _container_options(self, user: str) -> dict[str, Any]:
        """What runs in the container, as whom, and what it sees of the host: only this."""
        return {
            "command": watchdog_command(),  # ends the container once its owner is gone
            "user": user,
            "environment": CONTAINER_ENV,
            "working_dir": WORKSPACE,
            "labels": {SANDBOX_LABEL: "1", **ProcessOwner.current().labels()},
            "hostname": "sandbox",
        }

    def _host_options(self) -> dict[str, Any]:
        """How the container is locked down (keyword arguments of `create_host_config`)."""
        return {
            "binds": {str(self.host_workspace): {"bind": WORKSPACE, "mode": "rw"},
                      str(heartbeat_folder()): {"bind": HEARTBEAT_MOUNT, "mode": "ro"}},
            "network_mode": "bridge" if self.config.network else "none",
            "mem_limit": self.config.memory,
            "memswap_limit": self.config.memory,
            "pids_limit": self.config.pids,
            "nano_cpus": int(self.config.cpus * 1e9),
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,exec,mode=1777,size={self.config.memory}"},
            "init": True,  # reaps orphans, so zombies never eat the pids limit
        }

    def _check_isolation(self, runner: CommandRunner) -> None:
        """Ask the processes inside what they get; raise SandboxError if anything is missing."""
        probe = runner.run(PROBE, timeout=HANDSHAKE_TIMEOUT)
        problems = isolation_problems(parse_probe(probe.output), self.config)
        if probe.exit_code is None or problems:
            found = "; ".join(problems) or f"the isolation check failed: {probe.describe()}"
            raise SandboxError(
                f"The sandbox container is not isolated as configured ({found}), so no command "
                "will run in it. Check the Docker engine (rootless or userns-remap setups, "
                "runtime and daemon options), or rebuild the image with `agent sandbox build "
                "--offline --force`."
            )

    def _container_user(self) -> str:
        """The host user's uid:gid; as root, the image's `agent` user, given the workspace."""
        owner = sandbox_owner()
        if owner is None:
            return f"{os.getuid()}:{os.getgid()}"
        chown_tree(self.host_workspace, owner)
        return f"{owner[0]}:{owner[1]}"

    def _restart_container(self) -> None:
        """Last resort when no shell can be started inside: kill everything, start afresh."""
        if self._client is not None and self._container_id is not None:
            self._client.api.restart(self._container_id, timeout=0)

    def close(self) -> None:
        """Remove the container (and so everything in it); safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
        container_id, self._container_id = self._container_id, None
        if container_id is not None and self._client is not None:
            # NotFound: already gone; otherwise the engine went away (the label finds it later)
            with contextlib.suppress(DockerException):
                self._client.api.remove_container(container_id, force=True)
        if self._client is not None:
            self._client.close()
            self._client = None
