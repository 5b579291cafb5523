"""Command-line options shared by several `agent` commands."""

from __future__ import annotations

from typing import Annotated

import typer


def check_tools(value: str | None) -> str | None:
    """Refuse an unknown tool set or tool name before anything starts."""
    if value is not None:
        from tools.control import select_tools

        try:
            select_tools(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


SandboxOption = Annotated[str, typer.Option(help="docker (isolated) or local (no isolation).")]
NetworkOption = Annotated[bool, typer.Option(help="Give the sandbox a network.")]
ContextWindowOption = Annotated[int | None, typer.Option(
    help="The model's window in tokens (default: its metadata).")]
RepoMapTokensOption = Annotated[int, typer.Option(
    help="Repository map in the system prompt, in tokens (0: none).")]
CompactAtOption = Annotated[float, typer.Option(
    min=0.1, max=1.0, help="Share of the window at which the context is compacted.")]
ToolsOption = Annotated[str | None, typer.Option(
    callback=check_tools,
    help="Tools the model gets: full, core (bash, view, create, str_replace, grep, finish), "
         "tool names, or both (core,glob). Default: the model's own (core for smollm2-135m, "
         "else full).")]
