"""What `.apprentice.toml` adds to an episode: MCP servers' tools and the user's hooks.

Opened with the episode's sandbox (in-sandbox MCP servers run in it) and closed before it.
Nothing here stops an episode: a configuration that is not valid, a server that does not
start, hooks that are not trusted are told as events (after the session's header) and the
session goes on without them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from agent.hooks import HookRunner
from agent.hooks_config import HooksConfig, load_hooks
from tools.base import Tool
from tools.host_trust import is_trusted
from tools.mcp_client import McpServerPlace, McpServers
from tools.mcp_config import McpServersConfig, load_mcp_servers
from tools.mcp_tools import mcp_tools, tool_name
from tools.project_file import ProjectFileError
from tools.sandbox.base import SandboxError
from trajectories.events import ErrorEvent, Event, McpServerStatus

UNSET = ""
"""Notices are made before the session exists; it sets their session id and step."""


class EpisodeExtensions:
    """The MCP servers (started) and hooks of one episode, and the events that tell of them."""

    def __init__(self, tools: list[Tool], hooks: HookRunner, notices: list[Event],
                 servers: McpServers | None = None):
        self.tools = tools
        self.hooks = hooks
        self.notices = notices
        self.servers = servers
        self.statuses = [e for e in notices if isinstance(e, McpServerStatus)]
        """Each configured MCP server's state at the start (what the TUI's status shows)."""

    @classmethod
    def none(cls) -> EpisodeExtensions:
        return cls([], HookRunner.none(), [])

    @classmethod
    def open(cls, repo: Path, commit: str, workspace: Path, sandbox: Any,
             taken: set[str]) -> EpisodeExtensions:
        """Start the MCP servers configured for `repo` at `commit` (those that may start) and
        load its hooks; `taken` are the names of the session's other tools."""
        notices: list[Event] = []
        hooks = HookRunner.none()
        try:
            hooks_config = load_hooks(repo, commit)
            hooks = HookRunner(hooks_config, workspace)
            notices += _untrusted_hooks(hooks_config, repo)
        except (ProjectFileError, SandboxError) as exc:
            notices.append(_error(f"no hooks run: {exc}"))
        try:
            servers_config = load_mcp_servers(repo, commit)
        except (ProjectFileError, SandboxError) as exc:
            notices.append(_error(f"no MCP server is started: {exc}"))
            return cls([], hooks, notices)
        if not servers_config.servers:
            return cls([], hooks, notices)
        trusted = is_trusted(repo, "mcp", servers_config.host_digest)
        startable = [s for s in servers_config.servers if trusted or not s.needs_trust]
        spawner = sandbox if callable(getattr(sandbox, "spawn", None)) else None
        servers = McpServers(startable, McpServerPlace(workspace, spawner))
        try:
            servers.start()
            tools, left_out = mcp_tools(servers, taken)
        except BaseException:
            servers.close()
            raise
        notices += [_error(note) for note in [*servers_config.notes, *left_out]]
        notices += _server_notices(servers, servers_config, repo)
        return cls(tools, hooks, notices, servers)

    def close(self) -> None:
        """Stop the MCP servers; safe to call twice."""
        servers, self.servers = self.servers, None
        if servers is not None:
            with contextlib.suppress(Exception):
                servers.close()


def _error(message: str) -> ErrorEvent:
    return ErrorEvent(session_id=UNSET, message=message)


def _untrusted_hooks(config: HooksConfig, repo: Path) -> list[Event]:
    skipped = config.untrusted()
    if not skipped:
        return []
    listed = "; ".join(f"{h.event}: `{h.hook.describe()}`" for h in skipped)
    return [_error(f"the repository's hooks are not trusted, so they do not run ({listed}). "
                   f"Review them in .apprentice.toml, then run `agent hooks trust --repo "
                   f"{repo}` to let them run.")]


def _server_notices(servers: McpServers, config: McpServersConfig,
                    repo: Path) -> list[Event]:
    """A status event per configured server, and an error for each that is not ready."""
    notices: list[Event] = []
    started = {connection.name: connection for connection in servers.connections}
    for server in config.servers:
        connection = started.get(server.name)
        where, source = server.config.where, server.source
        if connection is None:
            message = (f"the repository's MCP server {server.name!r} runs on the host "
                       f"({server.config.describe()}) and is not trusted, so it is not started; "
                       f"review .apprentice.toml, then run `agent mcp trust --repo {repo}`")
            notices += [McpServerStatus(session_id=UNSET, server=server.name,
                                        state="untrusted", where=where, source=source,
                                        error=message), _error(message)]
            continue
        if connection.state == "ready":
            names = [tool_name(server.name, tool.name) for tool in connection.tools]
            notices.append(McpServerStatus(
                session_id=UNSET, server=server.name, state="ready", where=where, source=source,
                tools=names, duration_s=round(connection.started_s, 3)))
            continue
        message = (f"the MCP server {server.name!r} did not start, so its tools are not "
                   f"offered: {connection.error}")
        notices += [McpServerStatus(session_id=UNSET, server=server.name, state="failed",
                                    where=where, source=source, error=connection.error,
                                    duration_s=round(connection.started_s, 3)),
                    _error(message)]
    return notices

