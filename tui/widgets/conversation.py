"""The conversation: the transcript's entries as blocks, kept scrolled to the newest."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Button

from tui.transcript import AssistantEntry, Change, Entry, NoticeEntry, ToolEntry, UserEntry
from tui.widgets.diff_view import DiffView
from tui.widgets.message_blocks import AssistantBlock, MarkdownNotice, NoticeBlock, UserBlock
from tui.widgets.tool_block import ToolBlock

SHOWN_ON_LOAD = 120
"""Blocks mounted when a recorded session opens; older ones come on demand."""


class ShowEarlier(Button):
    """Mounts the next batch of older blocks of a long session."""


class ConversationView(VerticalScroll):
    """Shows what the transcript holds; new blocks are mounted, changed ones updated."""

    def __init__(self, show_volatile: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.show_volatile = show_volatile
        self._hidden: list[Entry] = []

    def on_mount(self) -> None:
        self.anchor()

    async def show(self, change: Change) -> None:
        """Put one transcript change on screen."""
        entry = change.entry
        if change.new:
            entry.widget = self.block_for(entry)
            await self.mount(entry.widget)
            if change.delta:
                entry.widget.stream_text(change.delta)
            return
        widget = entry.widget
        if widget is None:
            return
        if isinstance(entry, ToolEntry) and entry.result is not None:
            widget.set_result(entry.result)
        elif isinstance(entry, AssistantEntry):
            if change.delta:
                widget.stream_text(change.delta)
            elif not entry.streaming:
                await widget.finish(entry.text)

    async def end_stream(self, entry: AssistantEntry | None) -> None:
        if entry is not None and isinstance(entry.widget, AssistantBlock):
            await entry.widget.finish()

    async def load(self, entries: list[Entry]) -> None:
        """Show a recorded session: its last blocks at once, the rest on demand."""
        await self.remove_children()
        self._hidden = list(entries[:-SHOWN_ON_LOAD]) if len(entries) > SHOWN_ON_LOAD else []
        tail = entries[len(self._hidden):]
        widgets: list[Widget] = []
        if self._hidden:
            widgets.append(ShowEarlier(self._earlier_label(), id="show-earlier"))
        for entry in tail:
            entry.widget = self.block_for(entry)
            widgets.append(entry.widget)
        await self.mount_all(widgets)
        self.scroll_end(animate=False)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if not isinstance(event.button, ShowEarlier):
            return
        event.stop()
        batch, self._hidden = self._hidden[-SHOWN_ON_LOAD:], self._hidden[:-SHOWN_ON_LOAD]
        for entry in batch:
            entry.widget = self.block_for(entry)
        await self.mount_all([e.widget for e in batch], after=event.button)
        if self._hidden:
            event.button.label = self._earlier_label()
        else:
            await event.button.remove()

    def _earlier_label(self) -> str:
        batch = min(SHOWN_ON_LOAD, len(self._hidden))
        return f"▲ {len(self._hidden):,} earlier blocks: show {batch}"

    async def add_notice(self, text: str, kind: str = "info") -> None:
        await self.mount(NoticeBlock(text, kind))

    async def add_markdown(self, text: str) -> None:
        await self.mount(MarkdownNotice(text, classes="notice-help"))

    async def add_diff(self, title: str, diff: str) -> None:
        await self.mount(NoticeBlock(title, "info"))
        await self.mount(DiffView(diff or "(no changes)", classes="session-diff"))

    async def clear_view(self) -> None:
        self._hidden = []
        await self.remove_children()

    def set_outputs_expanded(self, expanded: bool) -> None:
        for block in self.query(ToolBlock):
            block.expanded = expanded

    def block_for(self, entry: Entry) -> Widget:
        if isinstance(entry, UserEntry):
            return UserBlock(entry.text)
        if isinstance(entry, AssistantEntry):
            return AssistantBlock("" if entry.streaming else entry.text)
        if isinstance(entry, ToolEntry):
            return ToolBlock(entry.name, entry.arguments, entry.result, self.show_volatile)
        assert isinstance(entry, NoticeEntry)
        detail = f" ({entry.detail})" if entry.detail and self.show_volatile else ""
        return NoticeBlock(entry.text + detail, entry.kind)
