"""Coloured unified diffs: of one edit (from its arguments) or of the whole session."""

from __future__ import annotations

import difflib
import json

from rich.text import Text
from textual.widgets import Static

EDIT_TOOLS = frozenset({"create", "str_replace", "insert"})
MAX_DIFF_LINES = 400

_STYLES = (("+++", "bold"), ("---", "bold"), ("diff ", "bold"), ("index ", "dim"),
           ("@@", "cyan"), ("+", "green"), ("-", "red"))


def edit_diff(tool: str, arguments: str) -> str | None:
    """The change an edit tool call asks for, as a unified diff; None if it is not an edit."""
    if tool not in EDIT_TOOLS:
        return None
    try:
        args = json.loads(arguments or "{}")
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(args, dict) or not isinstance(args.get("path"), str):
        return None
    path = args["path"]
    if tool == "str_replace":
        old, new = str(args.get("old_str", "")), str(args.get("new_str", ""))
        lines = difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{path}",
                                     f"b/{path}", lineterm="", n=3)
        return "\n".join(lines)
    if tool == "create":
        body = str(args.get("file_text", "")).splitlines()
        return "\n".join([f"+++ b/{path} (new content)", *(f"+{line}" for line in body)])
    body = str(args.get("new_str", "")).splitlines()
    where = args.get("insert_line", "?")
    return "\n".join([f"+++ b/{path}", f"@@ after line {where} @@", *(f"+{x}" for x in body)])


def render_diff(diff: str, max_lines: int = MAX_DIFF_LINES) -> Text:
    """`diff` with added lines green, removed red, hunks cyan; long diffs cut with a note."""
    lines = diff.splitlines()
    text = Text(no_wrap=False)
    for line in lines[:max_lines]:
        style = next((s for prefix, s in _STYLES if line.startswith(prefix)), "")
        text.append(line + "\n", style=style)
    if len(lines) > max_lines:
        text.append(f"... {len(lines) - max_lines} more lines (/diff shows the whole patch)\n",
                    style="dim italic")
    text.rstrip()
    return text


class DiffView(Static):
    """A unified diff, coloured."""

    def __init__(self, diff: str, max_lines: int = MAX_DIFF_LINES, **kwargs: object) -> None:
        super().__init__(render_diff(diff, max_lines), **kwargs)  # type: ignore[arg-type]
        self.diff = diff
