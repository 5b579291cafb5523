"""The prompt: multi-line, with history and slash-command completion. Enter sends."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static, TextArea

from tui.commands import completions

NEWLINE_KEYS = ("ctrl+j", "shift+enter", "alt+enter")


class PromptInput(TextArea):
    """Where the user types. Enter sends (`PromptInput.Submitted`); Ctrl+J adds a line; Up and
    Down on the first and last line walk the history; Tab completes a slash command."""

    BINDINGS = [Binding("ctrl+j", "newline", "Newline")]

    class Submitted(Message):
        """The user sent a message or a command."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, **kwargs)  # type: ignore[arg-type]
        self.sent: list[str] = []
        """Messages sent, oldest first (Up walks back through them)."""
        self._history_index = 0
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "tab" and self.complete():
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)

    def submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
        self._history_index = len(self.sent)
        self._draft = ""
        self.clear()
        self.post_message(self.Submitted(text))

    def action_newline(self) -> None:
        self.insert("\n")

    def complete(self) -> bool:
        """Complete a slash command at the start of the prompt; True if there was one."""
        matches = completions(self.text)
        if not matches:
            return False
        names = [m.name for m in matches]
        current = self.text.strip().lower()
        following = names[(names.index(current) + 1) % len(names)] if current in names \
            else names[0]
        self.text = following
        self.move_cursor(self.document.end)
        return True

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == 0 and self.sent:
            self._walk_history(-1)
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        last_row = self.document.line_count - 1
        if not select and self.cursor_location[0] == last_row \
                and self._history_index < len(self.sent):
            self._walk_history(+1)
            return
        super().action_cursor_down(select)

    def _walk_history(self, step: int) -> None:
        if self._history_index == len(self.sent):
            self._draft = self.text
        index = max(0, min(len(self.sent), self._history_index + step))
        if index == self._history_index:
            return
        self._history_index = index
        self.text = self.sent[index] if index < len(self.sent) else self._draft
        self.move_cursor(self.document.end)


class CommandHints(Static):
    """The slash commands matching what is typed, shown above the prompt."""

    def show_for(self, text: str) -> None:
        matches = completions(text)
        self.display = bool(matches)
        if not matches:
            return
        rendered = Text()
        for index, command in enumerate(matches):
            if index:
                rendered.append("\n")
            rendered.append(command.name, style="bold")
            if command.argument:
                rendered.append(f" {command.argument}", style="italic")
            rendered.append(f"  {command.help}", style="dim")
        self.update(rendered)
