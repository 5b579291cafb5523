"""Asking the user: may this tool call run? Is this plan approved?"""

from __future__ import annotations

import json

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Label, Static

from tui.widgets.diff_view import DiffView, edit_diff


def call_preview(tool: str, arguments: str) -> Widget:
    """What the user needs to judge a call: the command, the diff, else the arguments."""
    diff = edit_diff(tool, arguments)
    if diff:
        return DiffView(diff, max_lines=80)
    try:
        args = json.loads(arguments or "{}")
    except (json.JSONDecodeError, RecursionError):
        args = arguments
    if tool == "bash" and isinstance(args, dict) and "command" in args:
        return Static(Text("$ " + str(args["command"]), style="bold"))
    shown = json.dumps(args, indent=2, ensure_ascii=False) if not isinstance(args, str) else args
    return Static(Text(shown))


class ApprovalScreen(ModalScreen[str]):
    """A question with a few one-key answers; dismissed with the chosen answer's value."""

    BINDINGS = [Binding("escape", "choose('no')", "No", show=False)]

    def __init__(self, title: str, body: Widget, choices: list[tuple[str, str, str]]) -> None:
        """`choices`: (key, label, value) for each answer, e.g. ("y", "Yes", "yes")."""
        super().__init__()
        self.title_text = title
        self.body = body
        self.choices = choices

    @classmethod
    def for_tool(cls, tool: str, arguments: str) -> ApprovalScreen:
        return cls(f"Allow {tool}?", call_preview(tool, arguments), [
            ("y", "Yes", "yes"), ("n", "No", "no"), ("a", f"Always allow {tool}", "always")])

    @classmethod
    def for_plan(cls, plan: list[dict[str, object]]) -> ApprovalScreen:
        lines = "\n".join(f"{n}. {item.get('content', '')}" for n, item in enumerate(plan, 1))
        return cls("Approve this plan?", Static(Text(lines or "(no plan)")), [
            ("y", "Approve and run it", "yes"), ("n", "Keep planning", "no")])

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield self.body
            with Horizontal(id="dialog-buttons"):
                for key, label, value in self.choices:
                    yield Button(Text(f"{label} ({key})"), id=f"choice-{value}",
                                 variant="primary" if value == "yes" else "default")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss((event.button.id or "choice-no").removeprefix("choice-"))

    def on_key(self, event: events.Key) -> None:
        for key, _, value in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)
                return

    def action_choose(self, value: str) -> None:
        self.dismiss(value)
