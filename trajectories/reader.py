"""Read a trajectory back, tolerating damage, and rebuild what the model saw at each call."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trajectories.events import (
    SCHEMA_VERSION,
    AssistantMessage,
    Compaction,
    Event,
    SessionStarted,
    ToolResult,
    UserMessage,
    parse_event,
)
from trajectories.token_ids import TokenIdsExpander


class UnsupportedSchemaError(ValueError):
    """The file was written by a newer apprentice whose format this one cannot read."""


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


def check_schema_version(line: str, path: Path) -> None:
    """Refuse a header written in a format newer than this reader knows."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # not a header: parse_event reports the line
        return
    if not isinstance(data, dict) or data.get("type") != "session_started":
        return
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UnsupportedSchemaError(
            f"{path} uses trajectory schema version {version}, but this apprentice reads "
            f"versions 1 to {SCHEMA_VERSION}; upgrade apprentice (pip install -U apprentice) "
            "to read it")


def read_trajectory(path: Path) -> TrajectoryFile:
    """Parse every whole line; a corrupted or cut-off line is reported by number and skipped.

    Raises UnsupportedSchemaError when the header's schema version is newer than this code."""
    result = TrajectoryFile(Path(path))
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            if not result.events:
                check_schema_version(line, Path(path))
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
            message["tool_calls"] = [call.model_dump() for call in event.tool_calls]
        return message
    if isinstance(event, ToolResult):
        return {"role": "tool", "tool_call_id": event.tool_call_id, "content": event.output}
    return None


def apply_compaction(context: list[dict[str, Any]], event: Compaction) -> list[dict[str, Any]]:
    """The context after a compaction (see `Compaction.context`)."""
    rebuilt = []
    for item in event.context:
        if "message" in item:
            rebuilt.append(dict(item["message"]))
            continue
        index = item["keep"]
        if not 0 <= index < len(context):
            raise ValueError(f"compaction at step {event.step} keeps message {index}, but the "
                             f"context has {len(context)}: the trajectory is missing events")
        message = dict(context[index])
        if "content" in item:
            message["content"] = item["content"]
        rebuilt.append(message)
    return rebuilt


def rebuild_calls(events: list[Event]) -> list[dict[str, Any]]:
    """One item per model call: the messages exactly as sent, the tools, the reply, the context
    `segment` (0, then one more after each compaction), and (local models) the full token-id
    record: prompt_ids, completion_ids, completion_logprobs."""
    header = next((e for e in events if isinstance(e, SessionStarted)), None)
    if header is None:
        raise ValueError("the trajectory has no session_started header")
    context: list[dict[str, Any]] = [{"role": "system", "content": header.system_prompt}]
    calls = []
    token_ids = TokenIdsExpander()
    segment = 0
    for event in events:
        if isinstance(event, Compaction):
            context = apply_compaction(context, event)
            segment += 1
            continue
        message = message_of(event)
        if message is None:
            continue
        if isinstance(event, AssistantMessage):
            calls.append({"step": event.step, "messages": [dict(m) for m in context],
                          "tools": header.tools, "response": message, "segment": segment,
                          "token_ids": token_ids.expand(event.token_ids)})
        context.append(message)
    return calls


@dataclass(frozen=True)
class SubagentLink:
    """A subagent an episode started (the `task` tool): the call, and its nested trajectory."""

    tool_call_id: str
    session_id: str
    path: Path
    data: dict[str, Any]
    """The whole link (`ToolResult.data["subagent"]`): exit status, steps, files changed."""


def subagent_links(trajectory: TrajectoryFile) -> list[SubagentLink]:
    """The subagents of an episode in the order they ran, their files found beside its own."""
    links = []
    for event in trajectory.events:
        if not isinstance(event, ToolResult):
            continue
        link = event.data.get("subagent")
        if isinstance(link, dict) and isinstance(link.get("trajectory"), str):
            links.append(SubagentLink(event.tool_call_id, str(link.get("session_id", "")),
                                      trajectory.path.with_name(Path(link["trajectory"]).name),
                                      link))
    return links
