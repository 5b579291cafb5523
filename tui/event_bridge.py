"""From the session's worker thread to the UI thread: events as messages, in order.

A model can stream a thousand tokens a second; one message per token would flood the UI. Streamed
text is posted as batches instead: the first token of a batch posts a message, later tokens join
it until the UI takes it (or another event seals it), so the UI does one update per frame it
manages, however fast the tokens come.
"""

from __future__ import annotations

import threading

from textual.message import Message
from textual.message_pump import MessagePump

from agent.stream import AssistantDelta, Event


class EventBridge:
    """A session listener posting to `target` (the app); call it from any thread. It hears the
    session's subagents too (`tui.subagent_view` sorts their events out)."""

    subagent_events = True

    class SessionEvent(Message):
        """An event of the session, other than streamed text."""

        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    class StreamedText(Message):
        """Streamed assistant text; `EventBridge.take` gives all of it that has arrived."""

        def __init__(self, batch: list[str], session_id: str, step: int) -> None:
            super().__init__()
            self.batch = batch
            self.session_id = session_id
            self.step = step

    def __init__(self, target: MessagePump) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._open: list[str] | None = None

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, AssistantDelta):
                if self._open is not None:
                    self._open.append(event.text)
                    return
                self._open = [event.text]
                message: Message = self.StreamedText(self._open, event.session_id, event.step)
            else:
                self._open = None  # text after this event belongs to a later batch
                message = self.SessionEvent(event)
            self._target.post_message(message)

    def take(self, message: StreamedText) -> AssistantDelta | None:
        """(UI thread) The text of a batch as one delta; tokens after this start a new batch."""
        with self._lock:
            if self._open is message.batch:
                self._open = None
            text = "".join(message.batch)
            message.batch.clear()
        if not text:
            return None
        return AssistantDelta(session_id=message.session_id, step=message.step, text=text)
