"""What a tool is, what it returns, and how a call by name is dispatched."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from tools.sandbox.base import Sandbox, truncate_middle

MAX_OUTPUT_CHARS = 20_000
"""What any tool's output may hold, as for bash (`SandboxConfig.max_output_chars`)."""
OUTPUT_SLACK = 1_000
"""Room above the cap for the notes bash puts before its already cut output."""
MAX_NAME_CHARS = 80


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the model as the observation."""


@dataclass
class Observation:
    """What the model sees after a tool call."""

    output: str
    is_error: bool = False
    finished: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    """Structured extras for events (exit code, path, todo list); not shown to the model."""
    plan: list[dict[str, str]] | None = None
    """The new todo list, when the call replaced it (a `plan_updated` event follows)."""
    duration_s: float = 0.0
    """How long the call took (set by whoever ran it)."""


@dataclass
class ToolContext:
    """What tools may touch: the sandbox and the host copy of the workspace."""

    workspace: Path
    sandbox: Sandbox | None = None
    edit_history: dict[str, list[str | None]] = field(default_factory=dict)
    """Per file (workspace-relative), its contents before each edit (None: it did not exist),
    for undo_edit; the repo map also ranks these files first."""
    todo: list[dict[str, str]] = field(default_factory=list)
    """The plan, as the todo tool last wrote it."""
    task_text: str = ""
    """The task, whose names the repo map boosts."""
    tool_call_id: str = ""
    """The id of the call being run (a subagent's trajectory names the call that started it)."""


class Tool:
    """A callable the model can use. Subclasses set `name`, `Args`, a docstring, and `run`."""

    name: ClassVar[str]
    Args: ClassVar[type[BaseModel]]
    read_only: ClassVar[bool] = False
    """True when a call cannot change the workspace (viewing, searching, planning)."""
    error_changes_nothing: ClassVar[bool] = False
    """True when a call that fails leaves the workspace as it was (the file edits check
    everything before they write), so the same call would fail again."""
    path_arguments: ClassVar[tuple[str, ...]] = ()
    """Arguments that name a file or directory that exists in the workspace (a local model's
    decoding keeps them to such paths, `agent.tool_grammar`)."""
    edit_arguments: ClassVar[tuple[str, str] | None] = None
    """(file, text) arguments of an edit that replaces text in a file (a local model's decoding
    keeps them to whole lines it was shown of a file it viewed)."""
    test_arguments: ClassVar[tuple[str, ...]] = ()
    """Arguments that name a test by its pytest id (a local model's decoding keeps them to ids
    the conversation shows, when it shows any)."""

    def run(self, args: Any, ctx: ToolContext) -> Observation:
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        return " ".join((cls.__doc__ or "").split())

    @classmethod
    def schema(cls) -> dict[str, Any]:
        """The OpenAI function-tool schema the model is shown."""
        params = cls.Args.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "function": {"name": cls.name, "description": cls.description(), "parameters": params},
        }


class ToolBox:
    """The tools of a session, dispatching calls by name with validated arguments."""

    def __init__(self, tools: list[Tool]):
        self.tools = {tool.name: tool for tool in tools}

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    def path_arguments(self) -> dict[str, tuple[str, ...]]:
        """Per tool, its arguments that name an existing workspace path."""
        return {name: tool.path_arguments for name, tool in self.tools.items()
                if tool.path_arguments}

    def edit_arguments(self) -> dict[str, tuple[str, str]]:
        """Per editing tool, its (file, replaced text) arguments."""
        return {name: tool.edit_arguments for name, tool in self.tools.items()
                if tool.edit_arguments}

    def test_arguments(self) -> dict[str, tuple[str, ...]]:
        """Per tool, its arguments that name a test by its pytest id."""
        return {name: tool.test_arguments for name, tool in self.tools.items()
                if tool.test_arguments}

    def call(self, name: str, raw_arguments: str | dict | None, ctx: ToolContext) -> Observation:
        """Run one call. Bad names, bad JSON and bad arguments become error observations; any
        output is capped at `MAX_OUTPUT_CHARS` (head and tail kept, with a note)."""
        return capped(self._call(name, raw_arguments, ctx))

    def validate(self, name: str, raw_arguments: str | dict | None) -> BaseModel | str:
        """The parsed arguments of a call, or why it is not a valid call of one of these tools
        (unknown tool, arguments not a JSON object, or not what its schema accepts)."""
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            return f"unknown tool {_clip(str(name), MAX_NAME_CHARS)!r}"
        try:
            arguments = _decode_arguments(raw_arguments)
        except ValueError as exc:
            return f"arguments for {name} are not valid JSON ({exc})"
        try:
            return tool.Args.model_validate(arguments)
        except ValidationError as exc:
            return f"invalid arguments for {name}: {_explain(exc)}"

    def _call(self, name: str, raw_arguments: str | dict | None, ctx: ToolContext) -> Observation:
        args = self.validate(name, raw_arguments)
        if isinstance(args, str):
            known = ", ".join(sorted(self.tools))
            hint = f" Available tools: {known}." if args.startswith("unknown tool") else ""
            stop = "" if args.endswith(".") else "."
            return Observation(f"Error: {args}{stop}{hint}", True)
        try:
            return self.tools[name].run(args, ctx)
        except ToolError as exc:
            return Observation(f"Error: {exc}", True)


def capped(observation: Observation) -> Observation:
    """`observation` with its output cut to `MAX_OUTPUT_CHARS` (head and tail) if longer."""
    if len(observation.output) <= MAX_OUTPUT_CHARS + OUTPUT_SLACK:
        return observation
    text, cut = truncate_middle(observation.output, MAX_OUTPUT_CHARS)
    observation.output = f"[note: {cut} characters of output were cut from the middle]\n{text}"
    return observation


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _decode_arguments(raw: str | dict | None) -> dict:
    """The arguments as a JSON object whose text is safe to store (lone surrogates, even as
    `\\ud800` escapes, become U+FFFD); a ValueError says what is wrong with them."""
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str | dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
        if isinstance(value, dict) and (isinstance(raw, dict) or "\\u" in raw
                                        or not raw.isascii()):
            text = json.dumps(value, ensure_ascii=False, default=str)
            safe = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            value = json.loads(safe) if safe != text else value
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise ValueError("nested too deeply to parse; send a flat JSON object") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
