"""The slash commands the prompt understands, their help and their completion."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlashCommand:
    """One command: its name (with the slash), its argument and one line of help."""

    name: str
    argument: str
    help: str


COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("/help", "", "show commands and keys"),
    SlashCommand("/model", "NAME", "show or switch the model (litellm name)"),
    SlashCommand("/compact", "", "compact the context now"),
    SlashCommand("/undo", "", "restore the files to the previous checkpoint"),
    SlashCommand("/rewind", "N", "restore the files to N checkpoints back"),
    SlashCommand("/diff", "", "show the session's changes from its base commit"),
    SlashCommand("/plan", "[REQUEST]", "toggle plan mode: read-only tools, a plan to approve"),
    SlashCommand("/samples", "N [REQUEST]", "run the next request as N attempts, each in its "
                 "own sandbox; the tests select one, its change is applied (1: cancel)"),
    SlashCommand("/clear", "", "clear the screen (the session and its context go on)"),
    SlashCommand("/resume", "[ID]", "continue a recorded session (pick one without ID)"),
    SlashCommand("/trajectory", "", "where this session is recorded"),
    SlashCommand("/quit", "", "leave (the session stays resumable)"),
)
BY_NAME = {command.name: command for command in COMMANDS}


def parse(text: str) -> tuple[str, str] | None:
    """("/name", "argument") for a slash command line, else None."""
    text = text.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, argument = text.partition(" ")
    return name.lower(), argument.strip()


def completions(text: str) -> list[SlashCommand]:
    """The commands a partly typed first word could be."""
    if not text.startswith("/") or " " in text or "\n" in text:
        return []
    return [c for c in COMMANDS if c.name.startswith(text.lower())]


def help_text() -> str:
    """The /help listing (Markdown)."""
    rows = [f"- `{c.name}{' ' + c.argument if c.argument else ''}`: {c.help}" for c in COMMANDS]
    keys = [
        "- `Enter` sends, `Ctrl+J` (or `Shift+Enter`, `Alt+Enter`) starts a new line, "
        "`Up`/`Down` at the first/last line walk the history, `Tab` completes a command",
        "- `Esc` or `Ctrl+C` interrupts the running step; `Shift+Tab` or `F2` switches the "
        "permission mode (auto, ask, read-only)",
        "- `Ctrl+O` expands or collapses tool outputs (or `Enter` on one), `Ctrl+B` shows the "
        "plan, `Ctrl+P` opens the command palette (themes), `Ctrl+Q` quits",
    ]
    return "**Commands**\n\n" + "\n".join(rows) + "\n\n**Keys**\n\n" + "\n".join(keys)
