"""MCP over the stdio of a process inside the sandbox.

The MCP client runs on the host; the server's process runs in the session's container, started
beside the shell (`DockerSandbox.spawn`) with its stdin and stdout attached to the client. So a
server inside the sandbox needs nothing of the host: no network, no mount, no Python package on
the host side, only its own program in the image or the repository.

`sandbox_stdio` is the transport (an async context manager yielding the read and write streams
the MCP SDK's client drives), newline-delimited JSON-RPC as in MCP's stdio transport.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

POLL_S = 0.2
"""How long one blocking read waits, so that closing never waits longer than this."""
STOP_WAIT_S = 5.0


class ProcessPipe(Protocol):
    """A started process's stdin and stdout (`DockerExecTransport`)."""

    stderr: bytearray

    def send(self, data: bytes) -> None: ...

    def receive(self, timeout: float) -> bytes | None:
        """What arrived (b"" when nothing did within `timeout`), or None at the end."""
        ...

    def close(self) -> None: ...


class Spawner(Protocol):
    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> ProcessPipe: ...


class SandboxProcess:
    """A command started in the sandbox under a wrapper that records its pid, so that closing
    ends it even when it ignores the end of its stdin."""

    def __init__(self, sandbox: Spawner, command: list[str], env: dict[str, str]):
        self.sandbox = sandbox
        self.pid_file = f"/tmp/apprentice-mcp-{secrets.token_hex(6)}.pid"
        self.pipe = sandbox.spawn(["sh", "-c", 'echo $$ > "$0" && exec "$@"', self.pid_file,
                                   *command], env)

    def stderr_text(self) -> str:
        return self.pipe.stderr.decode(errors="replace").strip()

    def stop(self) -> None:
        """Close its stdin and stdout, then kill it if it is still there (safe twice)."""
        with contextlib.suppress(Exception):
            self.pipe.close()
        with contextlib.suppress(Exception):
            killer = self.sandbox.spawn(
                ["sh", "-c", 'kill -9 "$(cat "$0")" 2>/dev/null; rm -f "$0"', self.pid_file])
            try:
                while killer.receive(STOP_WAIT_S) not in (None, b""):
                    pass
            finally:
                killer.close()


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


@contextlib.asynccontextmanager
async def sandbox_stdio(
    open_process: Callable[[], SandboxProcess],
) -> AsyncIterator[tuple[anyio.abc.ObjectReceiveStream, anyio.abc.ObjectSendStream]]:
    """MCP's stdio transport over a process `open_process` starts in the sandbox."""
    process = await anyio.to_thread.run_sync(open_process)
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def read_stdout() -> None:
        buffer = b""
        async with read_writer:
            while True:
                chunk = await anyio.to_thread.run_sync(process.pipe.receive, POLL_S)
                if chunk is None:
                    return  # the process is gone: the session sees the connection close
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        await read_writer.send(_parse(line))

    async def write_stdin() -> None:
        async with write_reader:
            async for message in write_reader:
                data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await anyio.to_thread.run_sync(process.pipe.send, data.encode() + b"\n")
                except OSError:
                    await read_writer.aclose()
                    return

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_stdout)
            tasks.start_soon(write_stdin)
            try:
                yield read_stream, write_stream
            finally:
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(process.stop)
