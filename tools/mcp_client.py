"""MCP servers of one session, reached with the `mcp` SDK from the (synchronous) agent loop.

The SDK is asynchronous; the loop is not. `McpServers` runs one asyncio event loop in a thread
of its own; each `McpConnection` holds its server's client open in a task on that loop, and the
loop's thread hands calls to it and waits for their answers with a time-out.

Nothing a server does raises into the session: a server that fails to start, does not answer
in time or crashes has a `state` and an `error` saying what happened, and its tools answer
with that error from then on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tools.mcp_config import ConfiguredServer
from tools.mcp_transport import SandboxProcess, Spawner, sandbox_stdio
from tools.sandbox.local_sandbox import local_environment

State = Literal["starting", "ready", "failed", "crashed", "closed"]
CLOSE_WAIT_S = 6.0
"""How long closing waits for a server to stop (the SDK asks, then kills, within this)."""
STDERR_LINES = 8


class McpCallError(Exception):
    """A tool call did not get an answer; the message says why, for the model to read."""


@dataclass
class McpServerPlace:
    """Where a session's servers run: its worktree on the host, and its sandbox (None, or a
    local sandbox, when in-sandbox servers run as processes in the worktree)."""

    workspace: Path
    sandbox: Spawner | None


class McpConnection:
    """One server: started once, asked for its tools, called, closed."""

    def __init__(self, server: ConfiguredServer, place: McpServerPlace,
                 loop: asyncio.AbstractEventLoop):
        self.server = server
        self.name = server.name
        self.config = server.config
        self.place = place
        self.state: State = "starting"
        self.error: str | None = None
        self.tools: list[types.Tool] = []
        self.started_s = 0.0
        self._loop = loop
        self._client: Client | None = None
        self._ready = threading.Event()
        self._closing: asyncio.Event | None = None
        self._held: concurrent.futures.Future[None] | None = None
        self._process: SandboxProcess | None = None
        self._errlog = tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
            mode="w+", encoding="utf-8", errors="replace")

    # -- on the caller's thread ------------------------------------------------------------

    def begin(self) -> None:
        """Start connecting (in the loop's thread); `wait_ready` waits for the outcome."""
        self._began = time.monotonic()
        self._held = asyncio.run_coroutine_threadsafe(self._hold(), self._loop)

    def wait_ready(self, deadline: float) -> None:
        """Wait until the server is ready or has failed, or until `deadline` (monotonic)."""
        if not self._ready.wait(max(0.0, deadline - time.monotonic())):
            self._fail(f"it did not start within {self.config.startup_timeout:g} s "
                       "(startup_timeout)")
            if self._held is not None:
                self._held.cancel()
        self.started_s = time.monotonic() - self._began

    def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call `tool`; raises McpCallError (with the reason) when no answer comes."""
        client = self._client
        if self.state != "ready" or client is None:
            raise McpCallError(self.unavailable())
        future = asyncio.run_coroutine_threadsafe(client.call_tool(tool, arguments), self._loop)
        try:
            return future.result(self.config.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpCallError(
                f"the MCP server {self.name!r} did not answer {tool} within "
                f"{self.config.timeout:g} s (timeout); the call was abandoned") from None
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED or self._gone():
                self._crashed()
                raise McpCallError(self.unavailable()) from None
            raise McpCallError(f"the MCP server {self.name!r} refused the call: {exc}") from None
        except Exception as exc:  # a broken transport, a malformed answer
            if self._gone():
                self._crashed()
                raise McpCallError(self.unavailable()) from None
            raise McpCallError(f"the call to the MCP server {self.name!r} failed: "
                               f"{type(exc).__name__}: {exc}") from None

    def unavailable(self) -> str:
        """Why this server's tools cannot be called."""
        if self.state == "crashed":
            return (f"the MCP server {self.name!r} has stopped; its tools are unavailable for "
                    f"the rest of the session.{self._stderr_note()}")
        if self.state == "failed":
            return f"the MCP server {self.name!r} did not start: {self.error}"
        return f"the MCP server {self.name!r} is {self.state}"

    def close(self) -> None:
        """Stop the server (the SDK closes its stdin, then kills it); safe to call twice."""
        if self.state == "closed":
            return
        held, self._held = self._held, None
        if held is not None and not held.done():
            closing = self._closing
            if closing is not None:
                self._loop.call_soon_threadsafe(closing.set)
            with contextlib.suppress(Exception):
                held.result(CLOSE_WAIT_S)
            held.cancel()
        if self.state in ("starting", "ready"):
            self.state = "closed"
        self._client = None
        self._errlog.close()

    # -- in the loop's thread --------------------------------------------------------------

    def _target(self) -> Any:
        """What the SDK's `Client` connects to, for this server and where it runs."""
        config = self.config
        if config.url:
            return config.url
        assert config.command is not None
        if config.where == "sandbox" and self.place.sandbox is not None:
            sandbox = self.place.sandbox

            def start() -> SandboxProcess:
                self._process = SandboxProcess(sandbox, list(config.command or []), config.env)
                return self._process

            return sandbox_stdio(start)
        env = {**local_environment(self.place.workspace), **config.env}
        return StdioServerParameters(command=config.command[0], args=config.command[1:],
                                     env=env, cwd=self.place.workspace)

    async def _hold(self) -> None:
        """Connect, list the tools, and keep the connection open until closed."""
        self._closing = asyncio.Event()
        try:
            target = self._target()
            if isinstance(target, StdioServerParameters):  # its stderr kept for messages, off
                target = stdio_client(target, errlog=self._errlog)  # the user's screen
            async with Client(target) as client:
                self.tools = await _all_tools(client)
                self._client = client
                self.state = "ready"
                self._ready.set()
                await self._closing.wait()
        except BaseException as exc:
            if not self._ready.is_set():
                self._fail(self._start_failure(exc))
            elif self.state == "ready" and not (self._closing and self._closing.is_set()):
                self._crashed()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._ready.set()

    # -- state -----------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self.state == "starting":
            self.state, self.error = "failed", reason
            self._ready.set()

    def _crashed(self) -> None:
        if self.state == "ready":
            self.state = "crashed"
            self.error = f"it stopped.{self._stderr_note()}"
            self._client = None

    def _gone(self) -> bool:
        return self._held is None or self._held.done()

    def _start_failure(self, exc: BaseException) -> str:
        if isinstance(exc, FileNotFoundError | PermissionError):
            where = "in the sandbox" if self.config.where == "sandbox" else "on the host"
            return f"cannot run {self.config.describe()!r} {where}: {exc.strerror or exc}"
        if isinstance(exc, asyncio.CancelledError):
            return f"it did not start within {self.config.startup_timeout:g} s"
        hint = ""
        if self.config.where == "sandbox" and self.place.sandbox is not None:
            hint = ("\nA server in the sandbox runs from the sandbox image: install its program "
                    "there with the `[sandbox] setup` command of .apprentice.toml, or keep it in "
                    "the repository; `host = true` runs it on the host instead.")
        return f"{_exception_text(exc)}.{self._stderr_note()}{hint}"

    def _stderr_note(self) -> str:
        text = ""
        if self._process is not None:
            text = self._process.stderr_text()
        else:
            with contextlib.suppress(Exception):
                self._errlog.flush()
                self._errlog.seek(0)
                text = self._errlog.read().strip()
        if not text:
            return ""
        tail = "\n".join(text.splitlines()[-STDERR_LINES:])
        return f"\nIts stderr ends with:\n{tail}"


async def _all_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(100):  # a server that pages forever cannot hang the start
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _exception_text(exc: BaseException) -> str:
    """The innermost readable message of `exc` (task groups wrap the real failure)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError) and exc.code == types.CONNECTION_CLOSED:
        return "it exited before answering the MCP handshake"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


class McpServers:
    """The MCP servers of a session, on one event loop in one thread of their own."""

    def __init__(self, servers: list[ConfiguredServer], place: McpServerPlace):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-servers",
                                        daemon=True)
        self._thread.start()
        self.connections = [McpConnection(server, place, self._loop) for server in servers]
        self._closed = False

    def start(self) -> None:
        """Start every server at once; wait for each until its `startup_timeout`."""
        began = time.monotonic()
        for connection in self.connections:
            connection.begin()
        for connection in self.connections:
            connection.wait_ready(began + connection.config.startup_timeout)

    def close(self) -> None:
        """Stop every server and the loop; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for connection in self.connections:
            connection.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_WAIT_S)
        if not self._thread.is_alive():
            self._loop.close()
