"""Command-line options shared by several `agent` commands."""

from __future__ import annotations

import math
from pathlib import Path
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


def limit_problem(max_steps: int, context_window: int | None, repo_map_tokens: int,
                  timeout: float = 1.0, max_tokens: int = 1, temperature: float = 0.0
                  ) -> str | None:
    """What is wrong with the numeric options of `solve` / `tui`, naming the flag, or None.
    Written so that NaN fails too."""
    checks = [
        (max_steps >= 1, f"--max-steps must be at least 1, not {max_steps}"),
        (context_window is None or context_window >= 1,
         f"--context-window must be a positive number of tokens, not {context_window}"),
        (repo_map_tokens >= 0, f"--repo-map-tokens must be 0 or more, not {repo_map_tokens}"),
        (math.isfinite(timeout) and timeout > 0,
         f"--timeout must be a positive number of seconds, not {timeout}"),
        (max_tokens >= 1, f"--max-tokens must be at least 1, not {max_tokens}"),
        (math.isfinite(temperature) and temperature >= 0,
         f"--temperature must be 0 or more, not {temperature}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def text_file_problem(path: Path, what: str) -> str | None:
    """Why the file at `path` is not UTF-8 text (`what` names it: "issue file"), or None.
    A missing file is left to the caller, which says what to pass instead."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); give a Markdown or plain-text file")
    if b"\0" in data:
        return (f"{what} {path} looks binary (it holds NUL bytes); give a Markdown or "
                "plain-text file")
    return None
