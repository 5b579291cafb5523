"""The event stream folded into what the conversation shows: one entry per block on screen.

Live events and a recorded session go through the same `Transcript.feed`, so a resumed session
looks exactly as it did while it ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.session import INTERRUPTED
from agent.stream import (
    AssistantDelta,
    AssistantMessage,
    Checkpoint,
    Compaction,
    ErrorEvent,
    Event,
    Finished,
    HookRun,
    McpServerStatus,
    ModelCallStarted,
    PlanUpdated,
    SessionStarted,
    ToolCallStarted,
    ToolResult,
    UserMessage,
    Verified,
)


@dataclass(eq=False)
class Entry:
    """A block of the conversation; `widget` is set once it is on screen."""

    widget: Any = field(default=None, repr=False)


@dataclass(eq=False)
class UserEntry(Entry):
    text: str = ""


@dataclass(eq=False)
class AssistantEntry(Entry):
    text: str = ""
    streaming: bool = False


@dataclass(eq=False)
class ToolEntry(Entry):
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    result: ToolResult | None = None


@dataclass(eq=False)
class NoticeEntry(Entry):
    text: str = ""
    kind: str = "info"
    """info, error, interrupt, checkpoint, compaction, finished, nudge."""
    detail: str = ""
    """An id worth showing but not stable from run to run (a commit)."""


@dataclass
class Change:
    """What one event did to the transcript: a new entry, or an update of an existing one."""

    entry: Entry
    new: bool
    delta: str = ""
    """For streamed text: the piece to append."""


class Transcript:
    """Folds events into entries; keeps the latest plan for the side panel."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.plan: list[dict[str, Any]] = []
        self.context_tokens = 0
        self.cost_usd = 0.0
        self._tools: dict[str, ToolEntry] = {}
        self._streaming: AssistantEntry | None = None
        self._call_arguments: dict[str, str] = {}

    def feed(self, event: Event) -> Change | None:
        """Take one event; returns the change to show, or None if it shows nothing."""
        if isinstance(event, AssistantDelta):
            return self._delta(event.text)
        if isinstance(event, ModelCallStarted):
            self._streaming = None
            return None
        if isinstance(event, AssistantMessage):
            return self._assistant(event)
        if isinstance(event, ToolCallStarted):
            entry = ToolEntry(call_id=event.tool_call_id, name=event.name,
                              arguments=event.arguments)
            self._tools[event.tool_call_id] = entry
            return self._add(entry)
        if isinstance(event, ToolResult):
            known = self._tools.pop(event.tool_call_id, None)
            if known is not None:
                known.result = event
                return Change(known, new=False)
            return self._add(ToolEntry(call_id=event.tool_call_id, name=event.name,
                                       result=event,
                                       arguments=self._call_arguments.get(event.tool_call_id, "")))
        if isinstance(event, PlanUpdated):
            self.plan = event.items
            return None
        if isinstance(event, Compaction):
            self.context_tokens = event.tokens_after
            self.cost_usd += event.cost_usd
        return self._notice(event)

    def running_tool(self, call_id: str) -> ToolEntry | None:
        """The entry of a call that has no result yet."""
        return self._tools.get(call_id)

    def end_stream(self) -> AssistantEntry | None:
        """Close a reply left streaming (an interrupted model call); returns it if there was one."""
        entry, self._streaming = self._streaming, None
        if entry is not None:
            entry.streaming = False
        return entry

    def _add(self, entry: Entry) -> Change:
        self.entries.append(entry)
        return Change(entry, new=True)

    def _delta(self, text: str) -> Change:
        if self._streaming is None:
            self._streaming = AssistantEntry(text=text, streaming=True)
            return Change(self._add(self._streaming).entry, new=True, delta=text)
        self._streaming.text += text
        return Change(self._streaming, new=False, delta=text)

    def _assistant(self, event: AssistantMessage) -> Change | None:
        self.context_tokens = event.usage.tokens
        self.cost_usd += event.cost_usd
        self._call_arguments = {c.id: c.arguments for c in event.tool_calls}
        streamed, self._streaming = self._streaming, None
        if streamed is not None:
            streamed.streaming = False
            streamed.text = event.content or streamed.text
            return Change(streamed, new=False)
        if event.content:
            return self._add(AssistantEntry(text=event.content))
        return None

    def _notice(self, event: Event) -> Change | None:
        text, kind = describe(event)
        if isinstance(event, UserMessage) and event.origin not in ("nudge", "hook"):
            return self._add(UserEntry(text=event.content))
        if not text:
            return None
        detail = event.commit[:8] if isinstance(event, Checkpoint) else ""
        return self._add(NoticeEntry(text=text, kind=kind, detail=detail))


def describe(event: Event) -> tuple[str, str]:
    """One line for an event shown as a notice, and its kind ('' for events not shown)."""
    if isinstance(event, UserMessage):
        if event.origin == "hook":
            return f"a stop hook keeps the agent going: {event.content}", "nudge"
        return (f"nudge: {event.content}", "nudge") if event.origin == "nudge" else ("", "")
    if isinstance(event, HookRun):  # errors and skips also come as error events
        if event.outcome in ("blocked", "feedback"):
            return f"{event.hook_event} hook ({event.outcome}): {event.message}", "info"
        return "", ""
    if isinstance(event, McpServerStatus):
        if event.state != "ready":  # why it is not: an error event says
            return "", ""
        where = {"host": "on the host", "url": "over HTTP from the host"}.get(
            event.where, "in the sandbox")
        return (f"MCP server {event.server} ({where}): {len(event.tools)} tools", "info")
    if isinstance(event, Compaction):
        how = {"masked": "old tool outputs masked", "summarised": "older turns summarised",
               "dropped": "older turns dropped"}[event.stage]
        return (f"context compacted ({event.reason}): {how}, {event.tokens_before:,} -> "
                f"{event.tokens_after:,} tokens", "compaction")
    if isinstance(event, Checkpoint):
        return f"checkpoint after step {event.step}", "checkpoint"
    if isinstance(event, ErrorEvent):
        if event.message == INTERRUPTED:
            return "interrupted by the user", "interrupt"
        return f"error: {event.message}", "error"
    if isinstance(event, Finished):
        summary = f": {event.summary}" if event.summary else ""
        return f"session ended ({event.exit_status}, {event.steps} steps){summary}", "finished"
    if isinstance(event, Verified):
        return f"verified: reward {event.reward} ({event.test_command})", "finished"
    if isinstance(event, SessionStarted):
        return "", ""
    kind = str(getattr(event, "type", "event"))  # events this TUI does not know yet
    detail = next((str(getattr(event, name)) for name in ("summary", "message", "content")
                   if getattr(event, name, None)), "")
    return f"{kind.replace('_', ' ')}{': ' + detail if detail else ''}", "info"
