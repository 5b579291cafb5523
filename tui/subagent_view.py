"""A subagent's events in the TUI: not turns of the conversation, but lines inside the tool block
of the `task` call that started it (collapsed once the call has its result).

The session's listener hears its subagents' events too (`EventBridge.subagent_events`); the app
asks `SubagentEvents.claim` first, and feeds only the events it does not claim to the transcript.
"""

from __future__ import annotations

from agent.stream import (
    AssistantMessage,
    ErrorEvent,
    Event,
    Finished,
    SessionStarted,
    ToolResult,
)


class SubagentEvents:
    """Which events come from subagents, and the top-level `task` call each belongs to."""

    def __init__(self) -> None:
        self._calls: dict[str, str] = {}
        """A subagent's session id -> the id of the top-level call that (in)directly started it."""

    def owns(self, session_id: str) -> bool:
        return session_id in self._calls

    def claim(self, event: Event) -> tuple[str, str | None] | None:
        """None for an event of the session itself; for a subagent's, the top-level call's id
        and the line to show for it (None when it shows nothing)."""
        if isinstance(event, SessionStarted) and event.parent:
            parent = str(event.parent.get("session_id", ""))
            call = str(event.parent.get("tool_call_id", ""))
            self._calls[event.session_id] = self._calls.get(parent, call)
            return self._calls[event.session_id], f"started: {event.parent.get('description')}"
        call_id = self._calls.get(event.session_id)
        if call_id is None:
            return None
        return call_id, subagent_line(event)


def subagent_line(event: Event) -> str | None:
    """One short line for what a subagent did: a reply, a call's result, an error, its end."""
    if isinstance(event, AssistantMessage):
        calls = ", ".join(call.name for call in event.tool_calls) or "no tool call"
        return f"step {event.step}: {calls}"
    if isinstance(event, ToolResult):
        first = event.output.strip().splitlines()[0] if event.output.strip() else ""
        return f"  {'✗' if event.is_error else '✓'} {event.name}: {first[:80]}"
    if isinstance(event, ErrorEvent):
        return f"  error: {event.message[:100]}"
    if isinstance(event, Finished):
        return f"ended: {event.exit_status} after {event.steps} steps"
    return None
