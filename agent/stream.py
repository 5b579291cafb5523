"""The event stream a session emits, as its consumers see it: every event type and the values
they carry. A user interface renders these and imports them from here, never from
`trajectories` (where the recorder, which writes them to disk, defines them).

    from agent.stream import AssistantMessage, Event, ToolResult
"""

from __future__ import annotations

from trajectories.events import (
    AssistantDelta,
    AssistantMessage,
    BaseEvent,
    Checkpoint,
    Compaction,
    ErrorEvent,
    Event,
    ExitStatus,
    Finished,
    HookRun,
    McpServerStatus,
    ModelCallStarted,
    PlanUpdated,
    Selection,
    SessionStarted,
    ToolCall,
    ToolCallStarted,
    ToolResult,
    TurnStatus,
    Usage,
    UserMessage,
    Verified,
    parse_event,
)

__all__ = [
    "AssistantDelta", "AssistantMessage", "BaseEvent", "Checkpoint", "Compaction", "ErrorEvent",
    "Event", "ExitStatus", "Finished", "ModelCallStarted", "PlanUpdated", "Selection",
    "HookRun", "McpServerStatus",
    "SessionStarted", "ToolCall", "ToolCallStarted", "ToolResult", "TurnStatus", "Usage",
    "UserMessage", "Verified", "parse_event",
]
