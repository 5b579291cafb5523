"""Which MCP servers a session starts: the `[mcp.servers.NAME]` tables of .apprentice.toml.

    [mcp.servers.docs]                       # a stdio server, run inside the sandbox
    command = ["python3", "tools/docs_server.py"]
    env = { DOCS_DIR = "docs" }

    [mcp.servers.github]                     # run on the host (needs trust if from the repo)
    command = ["github-mcp", "stdio"]
    host = true

    [mcp.servers.search]                     # streamable HTTP, reached from the host
    url = "http://127.0.0.1:8931/mcp"

A stdio server runs inside the sandbox by default, like everything the model's calls reach:
no network, the sandbox's limits, /workspace as its working directory. Its program must be in
the sandbox image (install it with the `[sandbox] setup` command) or in the repository. With
`host = true` it runs on the host instead, in the session's worktree, with no API keys in its
environment. Servers in the user's own config.toml (the apprentice home) apply to every
repository; one of the repository's with the same name is left out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tools.host_trust import digest, named_files
from tools.project_file import ProjectFileError, Source, read_tables

SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
Where = Literal["sandbox", "host", "url"]


class McpServerConfig(BaseModel):
    """One MCP server: a command speaking MCP on stdio, or the URL of a streamable HTTP one."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] | None = Field(
        None, description="The program and its arguments (a string is split like a shell).")
    url: str | None = Field(None, description="A streamable HTTP endpoint, instead of a command.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Variables added to the server's environment (given "
        "values only: the host's environment never reaches a server).")
    host: bool = Field(False, description="Run the stdio server on the host, in the worktree, "
                       "instead of in the sandbox.")
    startup_timeout: float = Field(
        30.0, gt=0, le=600, description="Seconds to start, shake hands and list tools.")
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds one tool call may take.")

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (a stdio server) or `url` (streamable HTTP)")
        if self.command is not None and not self.command:
            raise ValueError("`command` is empty")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"`url` must start with http:// or https://, not {self.url!r}")
        if self.url is not None and self.host:
            raise ValueError("`host` applies to stdio servers; a `url` is always reached from "
                             "the host")
        return self

    @property
    def where(self) -> Where:
        """Where it runs: in the sandbox, on the host, or behind a URL (reached from the host)."""
        return "url" if self.url else "host" if self.host else "sandbox"

    def describe(self) -> str:
        return self.url or shlex.join(self.command or [])


@dataclass(frozen=True)
class ConfiguredServer:
    """A server as configured, and which file configured it."""

    name: str
    config: McpServerConfig
    source: Source

    @property
    def needs_trust(self) -> bool:
        """A repository's server that runs on, or reaches out from, the host."""
        return self.source == "repository" and self.config.where != "sandbox"


@dataclass(frozen=True)
class McpServersConfig:
    """Every configured server, and the digest the repository's host-side ones are trusted by."""

    servers: list[ConfiguredServer]
    host_digest: str
    """`tools.host_trust.digest` of the repository's host and URL servers (and files they run)."""
    notes: list[str]
    """Servers left out, and why."""

    @property
    def untrusted_possible(self) -> bool:
        return any(server.needs_trust for server in self.servers)


def _servers(table: dict[str, Any], source: Source, where: str) -> list[ConfiguredServer]:
    servers = table.get("servers", {})
    unknown = sorted(set(table) - {"servers"})
    if unknown or not isinstance(servers, dict):
        raise ProjectFileError(f"[mcp] of {where} holds only [mcp.servers.NAME] tables "
                               f"(found {', '.join(unknown) or 'servers = ...'})")
    found = []
    for name, value in servers.items():
        if not SERVER_NAME.fullmatch(name) or "__" in name:
            raise ProjectFileError(f"MCP server name {name!r} in {where}: use letters, digits, "
                                   "- and single _ (its tools are named NAME__tool)")
        try:
            found.append(ConfiguredServer(name, McpServerConfig.model_validate(value), source))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or name}: {e['msg']}"
                                 for e in exc.errors())
            raise ProjectFileError(f"[mcp.servers.{name}] of {where}: {problems}") from None
    return found


def load_mcp_servers(repo: Path, commit: str) -> McpServersConfig:
    """The servers of the user's config.toml and of the repository's .apprentice.toml at
    `commit` (the user's first; a repository server of the same name is left out)."""
    tables = read_tables(repo, commit, "mcp")
    mine = _servers(tables.user, "user", tables.user_file)
    theirs = _servers(tables.repository, "repository", tables.repository_file)
    names = {server.name for server in mine}
    notes = [f"the repository's MCP server {s.name!r} is left out: your config.toml defines "
             "one of that name" for s in theirs if s.name in names]
    theirs = [s for s in theirs if s.name not in names]
    host_side = [s for s in theirs if s.needs_trust]
    files = named_files([s.config.command for s in host_side if s.config.command], repo, commit)
    value = digest({s.name: s.config.model_dump() for s in host_side}, files)
    return McpServersConfig([*mine, *theirs], value, notes)
