"""Read a trajectory back, tolerating damage, and rebuild what the model saw at each call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajectories.events import (
    AssistantMessage,
    Event,
    SessionStarted,
    ToolResult,
    UserMessage,
    parse_event,
)


@dataclass
class TrajectoryFile:
    """The events of one trajectory file and the lines that could not be read."""

    path: Path
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def header(self) -> SessionStarted | None:
        first = self.events[0] if self.events else None
        return first if isinstance(first, SessionStarted) else None


def read_trajectory(path: Path) -> TrajectoryFile:
    """Parse every whole line; a corrupted or cut-off line is reported by number and skipped."""
    result = TrajectoryFile(Path(path))
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                result.events.append(parse_event(line))
            except (ValidationError, ValueError) as exc:
                reason = str(exc).splitlines()[0]
                result.problems.append(f"{path}:{number}: skipped unreadable event ({reason})")
    return result


def message_of(event: Event) -> dict[str, Any] | None:
    """The chat message an event appends to the model's context, if any."""
    if isinstance(event, UserMessage):
        return {"role": "user", "content": event.content}
    if isinstance(event, AssistantMessage):
        message: dict[str, Any] = {"role": "assistant"}
        if event.content is not None or not event.tool_calls:
            message["content"] = event.content or ""
        if event.tool_calls:
            message["tool_calls"] = event.tool_calls
        return message
    if isinstance(event, ToolResult):
        return {"role": "tool", "tool_call_id": event.tool_call_id, "content": event.output}
    return None


def rebuild_calls(events: list[Event]) -> list[dict[str, Any]]:
    """One item per model call: the messages exactly as sent, the tools, and the reply."""
    header = next((e for e in events if isinstance(e, SessionStarted)), None)
    if header is None:
        raise ValueError("the trajectory has no session_started header")
    context: list[dict[str, Any]] = [{"role": "system", "content": header.system_prompt}]
    calls = []
    for event in events:
        message = message_of(event)
        if message is None:
            continue
        if isinstance(event, AssistantMessage):
            calls.append({"step": event.step, "messages": [dict(m) for m in context],
                          "tools": header.tools, "response": message,
                          "token_ids": event.token_ids})
        context.append(message)
    return calls
