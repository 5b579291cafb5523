"""/resume without an id: pick one of the recorded sessions."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


def session_label(row: dict[str, Any]) -> Text:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.get("started_at") or 0))
    text = Text()
    text.append(str(row["id"]), style="bold")
    text.append(f"  {started}  {row.get('model') or '?'}  {row.get('steps') or 0} steps  "
                f"{row.get('exit_status') or ''}", style="dim")
    if row.get("task"):
        text.append(f"\n  {row['task']}")
    return text


class SessionPicker(ModalScreen[str | None]):
    """A list of recorded sessions, newest first; Enter picks, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Resume a session", id="dialog-title")
            yield OptionList(*[Option(session_label(r), id=str(r["id"])) for r in self.rows],
                             id="sessions")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
