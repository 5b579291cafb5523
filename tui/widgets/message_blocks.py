"""The plain blocks of the conversation: the user's messages, the model's replies, notices."""

from __future__ import annotations

import re

from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import Markdown, Static

_NOTE = re.compile(r"\A(\[[^\]]*\]\s*)+")
"""Bracketed notes the TUI puts before a message (plan mode, an undo): shown dimmed."""

NOTICE_MARKS = {"error": "✗", "interrupt": "■", "checkpoint": "◆", "finished": "●",
                "nudge": "›", "compaction": "⇣", "info": "·"}


class UserBlock(Static):
    """A message the user sent."""

    def __init__(self, text: str) -> None:
        rendered = Text()
        note = _NOTE.match(text)
        if note:
            rendered.append(note.group(0).strip() + "\n", style="dim italic")
            text = text[note.end():]
        rendered.append(text)
        super().__init__(rendered)


def split_point(text: str, min_chars: int) -> int:
    """Where `text` can be cut into two Markdown documents that render as one: the last blank
    line past `min_chars` outside a code fence (0: nowhere yet)."""
    if len(text) <= min_chars:
        return 0
    cut = text.rfind("\n\n")
    while cut >= min_chars:
        if text.count("```", 0, cut) % 2 == 0:
            return cut + 2
        cut = text.rfind("\n\n", 0, cut)
    return 0


class AssistantBlock(Vertical):
    """A reply of the model as Markdown, streamed in as it is generated.

    The text is rendered in segments: a finished stretch of paragraphs is frozen in its own
    `Static`, and only the tail is re-rendered, at most every `STREAM_INTERVAL` seconds. A few
    widgets per reply keep layout cheap; batching leaves the keyboard time at 1,000 tokens/s.
    """

    STREAM_INTERVAL = 0.1
    SEGMENT_CHARS = 1000

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.text = text
        """Everything received so far (the screen may lag by one batch)."""
        self.shown_chars = len(text)
        """How much of `text` is on screen."""
        self._frozen = 0
        self._tail = Static(classes="reply-segment")
        self._flusher: Timer | None = None

    def compose(self) -> ComposeResult:
        yield from self._freeze()
        self._tail.update(RichMarkdown(self.text[self._frozen:]))
        yield self._tail

    def stream_text(self, fragment: str) -> None:
        self.text += fragment
        if self._flusher is None:
            self._flusher = self.set_timer(self.STREAM_INTERVAL, self._flush)

    def _freeze(self) -> list[Static]:
        """Segments for the finished part of the tail (moving `_frozen` past them)."""
        segments = []
        while cut := split_point(self.text[self._frozen:], self.SEGMENT_CHARS):
            segment = self.text[self._frozen:self._frozen + cut]
            segments.append(Static(RichMarkdown(segment), classes="reply-segment"))
            self._frozen += cut
        return segments

    async def _flush(self) -> None:
        self._flusher = None
        segments = self._freeze()
        if segments:
            await self.mount_all(segments, before=self._tail)
        self._tail.update(RichMarkdown(self.text[self._frozen:]))
        self.shown_chars = len(self.text)

    async def finish(self, final_text: str | None = None) -> None:
        """Render what is pending; show `final_text` if it differs from what streamed in."""
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        if final_text is not None and final_text != self.text:
            for child in list(self.children):
                if child is not self._tail:
                    await child.remove()
            self.text, self._frozen = final_text, 0
        await self._flush()


class NoticeBlock(Static):
    """One line about the session: a checkpoint, an error, an interruption, an end."""

    def __init__(self, text: str, kind: str = "info") -> None:
        super().__init__(Text(f"{NOTICE_MARKS.get(kind, '·')} {text}"), classes=f"notice-{kind}")
        self.kind = kind


class MarkdownNotice(Markdown):
    """A longer notice in Markdown (/help)."""
