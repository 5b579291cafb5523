"""The typed events a session emits. The TUI, the headless runner and the recorder all read these.

Replaying the events that carry messages (`session_started`'s system prompt, then every
`user_message`, `assistant_message` and `tool_result` in order) rebuilds exactly what the model
was sent at every call.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

SCHEMA_VERSION = 3
"""Version of the on-disk format. 2: `token_ids` of assistant messages store prompt ids as a delta
(see `trajectories.token_ids`). 3: `compaction` events rewrite the context. Readers accept every
version up to this one."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub_text(text: str) -> str:
    """`text` made safe to encode as UTF-8 (files, HTTP, SQLite, git): surrogate pairs are joined
    into their character and lone surrogates become U+FFFD. Text without any is returned as is."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")



ExitStatus = Literal["finished", "max_steps", "no_tool_call", "error", "interrupted", "quit"]
"""How an episode ended (the `finished` event): `finish` was called, the step limit, the model
stopped calling tools, a fatal error, the user interrupted, or the user closed the session."""
IndexStatus = Literal[ExitStatus, "running", "incomplete", "killed"]
"""An episode's status in the index: its exit status once it ended; `running` while it runs;
`incomplete` when it stopped without `finished`; `killed` when its process is gone."""
TurnStatus = Literal["answered", "finished", "max_steps", "interrupted", "error", "closed"]
"""How one chat turn ended (`Session.send`): the model answered without a tool call, ..."""


@dataclass(frozen=True)
class Usage:
    """What an episode, or one model call, used: steps (model calls of the loop), tokens and
    cost. Adds up with `+`. Events keep these as flat fields (the on-disk format); their
    `usage` reads them as one value."""

    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.steps + other.steps, self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens,
                     self.cost_usd + other.cost_usd)

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


class ToolFunction(BaseModel):
    """The `function` of a tool call: which tool, and its arguments as JSON text."""

    name: str
    arguments: str = ""

    @field_validator("arguments", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """Arguments recorded as a JSON object (not text) are read as their JSON text."""
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class ToolCall(BaseModel):
    """One tool call of an assistant reply. Dumps to OpenAI's format, the one providers take
    back and trajectories store: `{"id", "type": "function", "function": {"name",
    "arguments"}}`."""

    id: str
    type: Literal["function"] = "function"
    function: ToolFunction

    @classmethod
    def of(cls, call_id: str, name: str, arguments: str) -> ToolCall:
        return cls(id=call_id, function=ToolFunction(name=name, arguments=arguments))

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def arguments(self) -> str:
        """The arguments as the model wrote them (JSON text, not necessarily valid)."""
        return self.function.arguments


class BaseEvent(BaseModel):
    """Fields every event carries."""

    session_id: str
    step: int = 0
    timestamp: float = Field(default_factory=time.time)


class SessionStarted(BaseEvent):
    """The episode header: everything needed to understand and replay what follows."""

    type: Literal["session_started"] = "session_started"
    schema_version: int = SCHEMA_VERSION
    software_version: str
    task: dict[str, Any]
    model: str
    model_params: dict[str, Any] = {}
    system_prompt: str
    tools: list[dict[str, Any]]
    repo: str
    base_commit: str
    branch: str
    sandbox: dict[str, Any] = {}
    group: dict[str, Any] = {}
    """For one of several attempts at a task (`agent solve --samples N`): `{"id": the group's
    id, "attempt": its number from 0, "samples": N}`; empty for a lone episode."""
    parent: dict[str, Any] = {}
    """For a subagent's episode (the `task` tool): `{"session_id": the parent's id,
    "tool_call_id": the call that started it, "depth": 1 for a child of a top-level session}`;
    empty for a top-level episode. The parent's `tool_result` of that call links back (its
    `data["subagent"]`, see `subagent_usage`)."""


class UserMessage(BaseEvent):
    """A user turn appended to the context (the issue, a nudge, a chat message)."""

    type: Literal["user_message"] = "user_message"
    content: str
    origin: Literal["user", "task", "nudge", "hook"] = "user"
    """`hook`: what a `stop` hook said, to keep the agent going."""


class ModelCallStarted(BaseEvent):
    """A model call began (the UI shows that the model is thinking)."""

    type: Literal["model_call_started"] = "model_call_started"
    prompt_messages: int


class AssistantDelta(BaseEvent):
    """A piece of streamed assistant text."""

    type: Literal["assistant_delta"] = "assistant_delta"
    text: str


class AssistantMessage(BaseEvent):
    """The model's reply as appended to the context, with its accounting."""

    type: Literal["assistant_message"] = "assistant_message"
    content: str | None = None
    tool_calls: list[ToolCall] = []
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    token_ids: dict[str, Any] | None = None
    """Prompt and completion token ids (local models), for training. In memory the full record
    (`prompt_ids`, `completion_ids`, `completion_logprobs`, ...); on disk the prompt part is a
    delta (`trajectories.token_ids`), and `rebuild_calls` restores the full record."""

    @property
    def usage(self) -> Usage:
        """What this call used (its step is counted by the loop, not here)."""
        return Usage(0, self.prompt_tokens, self.completion_tokens, self.cost_usd)


class ToolCallStarted(BaseEvent):
    """A tool call is about to run."""

    type: Literal["tool_call_started"] = "tool_call_started"
    tool_call_id: str
    name: str
    arguments: str


class ToolResult(BaseEvent):
    """A tool call's observation, appended to the context as a tool message."""

    type: Literal["tool_result"] = "tool_result"
    tool_call_id: str
    name: str
    output: str
    is_error: bool = False
    duration_s: float = 0.0
    data: dict[str, Any] = {}


class PlanUpdated(BaseEvent):
    """The model's todo list changed."""

    type: Literal["plan_updated"] = "plan_updated"
    items: list[dict[str, Any]]


class Compaction(BaseEvent):
    """The context was compacted: the messages of every later call start from `context`.

    `context` lists the new messages in order: `{"keep": i}` keeps message i of the context
    before, `{"keep": i, "content": "..."}` keeps it with new content (a masked tool output), and
    `{"message": {...}}` is new (the summary with the re-injected invariants)."""

    type: Literal["compaction"] = "compaction"
    reason: Literal["threshold", "requested"] = "threshold"
    stage: Literal["masked", "summarised", "dropped"] = "masked"
    """How far it went: outputs masked, older turns summarised, or dropped (no summary)."""
    context: list[dict[str, Any]]
    removed: list[int] = []
    """Indices (in the context before) of the messages no longer present."""
    masked: list[int] = []
    """Indices of the tool results whose output became a placeholder."""
    summary: str | None = None
    summary_error: str | None = None
    """Why there is no summary, when the older turns were dropped instead."""
    tokens_before: int = 0
    tokens_after: int = 0
    window: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    """What the summary call cost."""

    @property
    def usage(self) -> Usage:
        """What the summary call used (no step of the loop)."""
        return Usage(0, self.prompt_tokens, self.completion_tokens, self.cost_usd)


class Checkpoint(BaseEvent):
    """Files changed during a turn and were committed on the session branch."""

    type: Literal["checkpoint"] = "checkpoint"
    commit: str


class ErrorEvent(BaseEvent):
    """Something went wrong; `fatal` errors end the episode."""

    type: Literal["error"] = "error"
    message: str
    fatal: bool = False


class HookRun(BaseEvent):
    """A hook (a command the user configured around an event) ran on the host, or was
    skipped; what it said, and what it did to the session."""

    type: Literal["hook_run"] = "hook_run"
    hook_event: Literal["pre_tool_use", "post_tool_use", "user_prompt_submit", "pre_compact",
                        "stop"]
    command: str
    source: Literal["repository", "user"] = "user"
    tool_call_id: str | None = None
    """The call it was about (pre_tool_use, post_tool_use)."""
    outcome: Literal["ok", "blocked", "feedback", "continue", "error", "skipped"] = "ok"
    """`blocked`: the call or prompt did not go ahead; `feedback`: its words were added to the
    observation (post_tool_use) or the prompt (user_prompt_submit); `continue`: a stop hook
    kept the agent going; `error`: it failed or timed out (the session went on as if it had
    not run); `skipped`: it did not run (a file it runs changed during the session)."""
    message: str = ""
    """What the session used of it (the reason, the feedback), or what went wrong."""
    exit_code: int | None = None
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0


class McpServerStatus(BaseEvent):
    """An MCP server at the session's start: ready (its tools are offered), failed to start,
    or not started because the repository's host-side servers are not trusted."""

    type: Literal["mcp_server"] = "mcp_server"
    server: str
    state: Literal["ready", "failed", "untrusted"]
    where: Literal["sandbox", "host", "url"] = "sandbox"
    """Where it runs: in the sandbox, on the host, or behind a URL reached from the host."""
    source: Literal["repository", "user"] = "repository"
    tools: list[str] = []
    """The names its tools are offered under (`server__tool`)."""
    error: str | None = None
    duration_s: float = 0.0


class Finished(BaseEvent):
    """The episode ended."""

    type: Literal["finished"] = "finished"
    exit_status: ExitStatus
    summary: str | None = None
    patch: str = ""
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def usage(self) -> Usage:
        """What the whole episode used."""
        return Usage(self.steps, self.prompt_tokens, self.completion_tokens, self.cost_usd)


class Verified(BaseEvent):
    """The reward: the tests run on the final patch in a fresh sandbox."""

    type: Literal["verified"] = "verified"
    reward: int
    test_command: str
    test_output: str
    exit_code: int | None = None
    image: str = ""
    duration_s: float = 0.0


class Selection(BaseEvent):
    """Which of several attempts at one task was picked, and every candidate's signals.

    `session_id` is the group's id. Each entry of `candidates` is one attempt: `attempt`,
    `session_id`, `trajectory_path`, `lost` (why it is no candidate: a crash, a time-out),
    `signals` (the scores of `signals`, in that order, as the selector computed them) and
    `rank` (1 = selected). The selector sees only what the agent may see: the repository at the
    base commit, its test command and the tests the attempts wrote; never the reward."""

    type: Literal["selection"] = "selection"
    signals: list[str]
    """The signals in the order they decide (an earlier one outranks every later one)."""
    candidates: list[dict[str, Any]]
    selected: int | None = None
    """The attempt picked, or None when every attempt was lost."""
    samples: int = 0
    """Attempts asked for; `len(candidates)` ran (fewer when enough agreed early)."""
    commands: list[str] = []
    """The commands the selector ran in its sandboxes."""
    notes: list[str] = []
    """What the selector could not do (a runner it cannot select files with, a judge that did
    not answer), so a missing signal is explained."""
    duration_s: float = 0.0


def subagent_usage(link: dict[str, Any]) -> Usage:
    """What a subagent's model calls used, from the link its parent's `tool_result` carries
    (`data["subagent"]`: `session_id`, `trajectory` (its file, beside the parent's),
    `exit_status`, `steps`, `files_changed`, `prompt_tokens`, `completion_tokens`, `cost_usd`).
    The parent's tokens and cost include it; its steps are the child's own."""
    return Usage(0, int(link.get("prompt_tokens") or 0), int(link.get("completion_tokens") or 0),
                 float(link.get("cost_usd") or 0.0))


Event = Annotated[
    SessionStarted | UserMessage | ModelCallStarted | AssistantDelta | AssistantMessage
    | ToolCallStarted | ToolResult | PlanUpdated | Compaction | Checkpoint | ErrorEvent | HookRun
    | McpServerStatus | Finished | Verified | Selection,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Validate one event from JSON text or a dict."""
    if isinstance(data, dict):
        return EVENT_ADAPTER.validate_python(data)
    return EVENT_ADAPTER.validate_json(data)
