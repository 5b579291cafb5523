"""One tool call: what was called, how it ended, its output collapsed until asked for."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Click
from textual.reactive import reactive
from textual.widgets import Static

from agent.stream import ToolResult
from tui.widgets.diff_view import EDIT_TOOLS, DiffView, edit_diff

PREVIEW_LINES = 6
SUBAGENT_LINES = 4
"""A running subagent's latest lines shown in its `task` block (all of them when expanded)."""
SUMMARY_CHARS = 100
_KEY_ARGUMENT = {"bash": "command", "view": "path", "create": "path", "str_replace": "path",
                 "insert": "path", "undo_edit": "path", "grep": "pattern", "glob": "pattern",
                 "finish": "summary", "task": "description"}


def summarize_arguments(tool: str, arguments: str) -> str:
    """The arguments of a call in one short line (the command, the path, the pattern)."""
    try:
        args = json.loads(arguments or "{}")
    except (json.JSONDecodeError, RecursionError):
        return arguments[:SUMMARY_CHARS]
    if not isinstance(args, dict):
        return str(args)[:SUMMARY_CHARS]
    if tool == "todo":
        return f"{len(args.get('items') or [])} items"
    key = _KEY_ARGUMENT.get(tool)
    text = str(args[key]) if key and key in args else json.dumps(args, ensure_ascii=False)
    if tool == "view" and args.get("view_range"):
        text += f" {args['view_range']}"
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "…"


class ToolBlock(Vertical, can_focus=True):
    """A tool call in the conversation; Enter or a click expands its output."""

    BINDINGS = [Binding("enter", "toggle_output", "Expand output")]

    expanded: reactive[bool] = reactive(False)

    def __init__(self, tool: str, arguments: str, result: ToolResult | None = None,
                 show_volatile: bool = True) -> None:
        super().__init__(classes="tool-block")
        self.tool = tool
        self.arguments = arguments
        self.result = result
        self.show_volatile = show_volatile
        self._diff = edit_diff(tool, arguments)
        self._header = Static(classes="tool-header")
        self._output = Static(classes="tool-output")
        self._subagent = Static(classes="tool-subagent")
        self.subagent_lines: list[str] = []
        """What the subagent of a `task` call did, a line per reply, result and end."""

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._subagent
        if self._diff:
            yield DiffView(self._diff, max_lines=60, classes="tool-diff")
        yield self._output

    def on_mount(self) -> None:
        self._refresh_all()

    def set_result(self, result: ToolResult) -> None:
        self.result = result
        self._refresh_all()

    def add_subagent_line(self, line: str) -> None:
        self.subagent_lines.append(line)
        self._refresh_subagent()

    def action_toggle_output(self) -> None:
        self.expanded = not self.expanded

    def on_click(self, event: Click) -> None:
        event.stop()
        self.expanded = not self.expanded

    def watch_expanded(self) -> None:
        self._refresh_output()

    @property
    def state(self) -> str:
        """running, ok, error or declined."""
        if self.result is None:
            return "running"
        if self.result.data.get("declined"):
            return "declined"
        return "error" if self.result.is_error else "ok"

    def _refresh_all(self) -> None:
        for name in ("running", "ok", "error", "declined"):
            self.set_class(self.state == name, f"-{name}")
        self._header.update(self._header_text())
        self._refresh_output()

    def _header_text(self) -> Text:
        marks = {"running": ("◌", "yellow"), "ok": ("✓", "green"), "error": ("✗", "red"),
                 "declined": ("⊘", "magenta")}
        mark, colour = marks[self.state]
        text = Text()
        text.append(f"{mark} ", style=f"bold {colour}")
        text.append(self.tool, style="bold")
        text.append(f"  {summarize_arguments(self.tool, self.arguments)}", style="")
        if self.result is None:
            text.append("  running…", style="italic yellow")
            return text
        details = []
        code = self.result.data.get("exit_code", "absent")
        subagent = self.result.data.get("subagent")
        if self.state == "declined":
            details.append("declined")
        elif isinstance(subagent, dict):  # a `task` call: what its subagent did
            files = len(subagent.get("files_changed") or [])
            details.append(f"subagent {subagent.get('exit_status')}, {subagent.get('steps')} "
                           f"steps, {files} file{'' if files == 1 else 's'} changed")
        elif code != "absent":
            details.append("killed" if code is None else f"exit {code}")
        if self.show_volatile and self.result.duration_s >= 0.05:
            details.append(f"{self.result.duration_s:.1f}s")
        if details:
            text.append("  " + " · ".join(details), style="dim")
        return text

    def _refresh_subagent(self) -> None:
        """While it runs, its latest lines; once done, all of them when expanded, else none."""
        lines = self.subagent_lines
        shown = lines if self.expanded else lines[-SUBAGENT_LINES:] if self.result is None \
            else []
        self._subagent.update(Text("\n".join(shown), style="dim"))
        self._subagent.display = bool(shown)

    def _refresh_output(self) -> None:
        self._refresh_subagent()
        if self.result is None:
            self._output.display = False
            return
        lines = self.result.output.rstrip("\n").splitlines()
        if self.state == "ok" and (self.tool in EDIT_TOOLS or self.tool == "todo"):
            preview = 0  # the diff or the plan panel already shows it
        else:
            preview = PREVIEW_LINES
        shown = lines if self.expanded else lines[:preview]
        text = Text("\n".join(shown), style="red" if self.state == "error" else "")
        hidden = len(lines) - len(shown)
        if hidden > 0:
            text.append(("\n" if shown else "") + f"… {hidden} more lines (enter to expand)",
                        style="dim italic")
        elif self.expanded and len(lines) > preview:
            text.append("\n(enter to collapse)", style="dim italic")
        self._output.update(text)
        self._output.display = bool(text.plain)
