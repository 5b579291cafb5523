"""`agent mcp list|trust`: the MCP servers a session on a repository starts, their tools and
their state."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli.project import RepoOption, fail, repository_head

mcp_app = typer.Typer(help="MCP servers whose tools sessions offer: list, trust.",
                      no_args_is_help=True)

def _started(root: Path, sandbox_kind: str) -> list[dict[str, Any]]:
    """Start every server as a session would (a throwaway worktree and sandbox), and report."""
    from agent.episode import new_session_id
    from agent.episode_extensions import EpisodeExtensions
    from tools.control import default_tools
    from tools.sandbox import SandboxConfig
    from tools.session_setup import open_session

    opened = open_session(root, f"mcp-list-{new_session_id()}", SandboxConfig(kind=sandbox_kind),
                          log=lambda m: print(f"agent: {m}", file=sys.stderr))
    try:
        extensions = EpisodeExtensions.open(
            root, opened.workspace.base_commit, opened.workspace.path, opened.sandbox,
            {tool.name for tool in default_tools()})
        extensions.close()
    finally:
        opened.close(delete_branch=True)
    return [status.model_dump(include={"server", "state", "where", "source", "tools", "error",
                                       "duration_s"}) for status in extensions.statuses]


@mcp_app.command("list")
def mcp_list(
    repo: RepoOption = Path("."),
    start: Annotated[bool, typer.Option(
        help="Start the servers (in a throwaway worktree and sandbox) to list their tools; "
        "--no-start shows the configuration only.")] = True,
    sandbox: Annotated[str, typer.Option(help="Where in-sandbox servers start: docker or "
                                         "local.")] = "docker",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the MCP servers (config.toml and .apprentice.toml), their tools and state."""
    from tools.host_trust import is_trusted
    from tools.mcp_config import load_mcp_servers
    from tools.project_file import ProjectFileError
    from tools.sandbox import SandboxError

    root, commit = repository_head(repo)
    try:
        config = load_mcp_servers(root, commit)
    except (ProjectFileError, SandboxError) as exc:
        raise fail(str(exc)) from None
    if not config.servers:
        print("no MCP servers: add [mcp.servers.NAME] tables to .apprentice.toml (or to "
              "config.toml in the apprentice home)", file=sys.stderr)
        if as_json:
            print("[]")
        return
    trusted = is_trusted(root, "mcp", config.host_digest)
    rows: dict[str, dict[str, Any]] = {
        s.name: {"server": s.name, "where": s.config.where, "source": s.source,
                 "command": s.config.describe(),
                 "state": "untrusted" if s.needs_trust and not trusted else "configured",
                 "tools": [], "error": None} for s in config.servers}
    if start:
        try:
            for found in _started(root, sandbox):
                rows[found["server"]].update(found)
        except (SandboxError, OSError) as exc:
            raise fail(f"could not open a sandbox to start the servers in: {exc} "
                        "(--no-start shows the configuration without starting them)") from None
    for note in config.notes:
        print(f"agent: note: {note}", file=sys.stderr)
    if as_json:
        print(json.dumps(list(rows.values()), indent=2))
        return
    for row in rows.values():
        print(f"{row['server']}  [{row['where']}, {row['source']}]  {row['state']}: "
              f"{row['command']}")
        if row["tools"]:
            print(f"    tools: {', '.join(row['tools'])}")
        if row["state"] == "untrusted":
            print(f"    not started: review it, then run `agent mcp trust --repo {root}`")
        elif row["error"]:
            print("    " + str(row["error"]).replace("\n", "\n    "))


@mcp_app.command("trust")
def mcp_trust(repo: RepoOption = Path(".")) -> None:
    """Trust the repository's host and URL MCP servers as they are at HEAD."""
    from tools.host_trust import trust
    from tools.mcp_config import load_mcp_servers
    from tools.project_file import ProjectFileError
    from tools.sandbox import SandboxError

    root, commit = repository_head(repo)
    try:
        config = load_mcp_servers(root, commit)
    except (ProjectFileError, SandboxError) as exc:
        raise fail(str(exc)) from None
    host_side = [s for s in config.servers if s.needs_trust]
    if not host_side:
        print("nothing to trust: the repository has no MCP server that runs on the host or "
              "behind a URL (servers in the sandbox need no trust)")
        return
    trust(root, "mcp", config.host_digest)
    print(f"trusted for {root}:")
    for server in host_side:
        print(f"  {server.name} [{server.config.where}]: {server.config.describe()}")
    print("any change to these servers (or the files they run) needs trusting again")
