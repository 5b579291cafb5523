"""MCP servers' tools as tools like any other: `NAME__tool`, with the server's JSON schema.

The schema the model is shown is the server's own `inputSchema`; arguments are passed through
as the model wrote them (the server validates them and says what is wrong). The result's text
content is the observation (other content is named, not inlined), capped like any output.
"""

from __future__ import annotations

import json
import re
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ConfigDict

from tools.base import Observation, Tool, ToolContext
from tools.mcp_client import McpCallError, McpConnection, McpServers

SEPARATOR = "__"
MAX_TOOL_NAME = 64
"""Providers' limit on a function name (OpenAI: ^[a-zA-Z0-9_-]{1,64}$)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class McpArguments(BaseModel):
    """Whatever object the model passes: the server checks it against its own schema."""

    model_config = ConfigDict(extra="allow")


def tool_name(server: str, tool: str) -> str:
    """`server__tool`, in the characters and length every provider accepts."""
    return _UNSAFE.sub("_", f"{server}{SEPARATOR}{tool}")[:MAX_TOOL_NAME]


class McpTool(Tool):
    """One tool of an MCP server (the description is the server's)."""

    Args = McpArguments

    def __init__(self, connection: McpConnection, tool: types.Tool, name: str):
        self.connection = connection
        self.tool = tool
        # An instance's name and flag, where other tools have their class's:
        self.name = name  # type: ignore[misc]
        self.read_only = bool(  # type: ignore[misc]
            tool.annotations and tool.annotations.read_only_hint)

    def description(self) -> str:  # type: ignore[override]
        text = " ".join((self.tool.description or self.tool.title or "").split())
        return f"{text} (MCP server {self.connection.name})".strip()

    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        parameters = dict(self.tool.input_schema or {})
        parameters.setdefault("type", "object")
        parameters.setdefault("properties", {})
        parameters.pop("title", None)
        return {"type": "function",
                "function": {"name": self.name, "description": self.description(),
                             "parameters": parameters}}

    def run(self, args: McpArguments, ctx: ToolContext) -> Observation:
        data = {"mcp_server": self.connection.name, "mcp_tool": self.tool.name}
        try:
            result = self.connection.call(self.tool.name, args.model_dump())
        except McpCallError as exc:
            return Observation(f"Error: {exc}", True, data=data)
        return Observation(result_text(result), is_error=bool(result.is_error), data=data)


def result_text(result: types.CallToolResult) -> str:
    """What the model reads of a tool result: its text, other content named."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if text is not None else
                         f"[resource {resource.uri} ({resource.mime_type or 'binary'}) not shown]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
        else:
            mime = getattr(block, "mime_type", "") or ""
            parts.append(f"[{block.type} content ({mime or 'unknown type'}) not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, indent=1))
    return "\n".join(parts) or "(the tool returned nothing)"


def mcp_tools(servers: McpServers, taken: set[str]) -> tuple[list[Tool], list[str]]:
    """The tools of every ready server, named `server__tool`; and notes on tools left out
    (a name another tool already has, once made safe and cut to 64 characters)."""
    tools: list[Tool] = []
    notes: list[str] = []
    names = set(taken)
    for connection in servers.connections:
        if connection.state != "ready":
            continue
        for tool in connection.tools:
            name = tool_name(connection.name, tool.name)
            if name in names:
                notes.append(f"the MCP tool {tool.name!r} of {connection.name!r} is left out: "
                             f"another tool is already called {name}")
                continue
            names.add(name)
            tools.append(McpTool(connection, tool, name))
    return tools, notes
