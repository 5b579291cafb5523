"""Subagents: the `task` tool's runner. A child `Session` with a fresh context (the system
prompt, the rules file, the prompt it was given; not the parent's conversation) on the same
worktree and sandbox, with its own step budget; read-only tools unless edits are allowed; at
most `max_depth` levels below the top-level session.

Its events are a nested trajectory beside the parent's (`<parent>.task<N>.jsonl`), whose header
names the parent and the call (`SessionStarted.parent`); the parent's `tool_result` of the call
links back to it (`data["subagent"]`). The child shares the parent's interrupt, so interrupting
the parent stops the child. Listeners of the parent that say `subagent_events = True` (the
headless printers) hear the child's events too; the others (the recorder, the TUI) do not.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from agent.session import Listener, Session
from tools.base import Observation, Tool, ToolBox, ToolContext, ToolError
from tools.project_file import ProjectFileError, read_tables
from tools.subagent_tool import Subagent, TaskArgs
from trajectories.events import ErrorEvent, Event
from trajectories.recorder import TrajectoryRecorder

if TYPE_CHECKING:
    from agent.session import SessionResult

TABLE = "subagents"


class SubagentConfig(BaseModel):
    """`[subagents]` of `.apprentice.toml` (or of the user's config.toml, which wins)."""

    max_steps: int = Field(10, ge=1, le=200)
    """Model calls a subagent may make."""
    max_depth: int = Field(1, ge=0, le=4)
    """How many levels of subagents below the top-level session: 1 lets it start subagents
    that cannot start their own; 0 turns the `task` tool off."""
    allow_edits: bool = False
    """Let subagents have bash and the editing tools (else only read-only tools)."""

    model_config = {"extra": "forbid"}


def load_config(repo: Path, commit: str) -> tuple[SubagentConfig, list[Event]]:
    """The `[subagents]` settings, and an error event (the defaults then apply) when a file's
    table is not valid."""
    try:
        tables = read_tables(repo, commit, TABLE)
        return SubagentConfig.model_validate({**tables.repository, **tables.user}), []
    except (ProjectFileError, ValidationError) as exc:
        message = f"[{TABLE}] ignored, the defaults apply: {' '.join(str(exc).split())}"
        return SubagentConfig(), [ErrorEvent(session_id="", message=message)]


def hears_subagents(listener: Listener) -> bool:
    """Whether a parent's listener wants its subagents' events too."""
    return bool(getattr(listener, "subagent_events", False))


class SubagentRunner:
    """Runs the `task` calls of one session (`parent`), each as a child session."""

    def __init__(self, parent: Session, config: SubagentConfig, trajectory_path: Path,
                 listeners: list[Listener] | None = None, depth: int = 0):
        self.parent = parent
        self.config = config
        self.trajectory_path = trajectory_path
        """The parent's trajectory; the children's go beside it."""
        self.listeners = [listener for listener in listeners or [] if hears_subagents(listener)]
        self.depth = depth
        """The parent's depth: 0 for a top-level session."""
        self.started = 0

    def __call__(self, args: TaskArgs, ctx: ToolContext) -> Observation:
        if self.depth >= self.config.max_depth:
            raise ToolError(f"a subagent at depth {self.depth} cannot start another (the depth "
                            f"limit is {self.config.max_depth}: [subagents] max_depth in "
                            ".apprentice.toml).")
        tools = self._child_tools(args.tools)
        child_id, path = self._next_child()
        recorder = TrajectoryRecorder(path)
        child = Session(
            child_id, self.parent.task, self.parent.llm, ToolBox(tools),
            ToolContext(workspace=ctx.workspace, sandbox=ctx.sandbox,
                        task_text=args.prompt), self.parent.workspace,
            max_steps=self.config.max_steps, listeners=[recorder, *self.listeners],
            sandbox_settings=self.parent.sandbox_settings, approve=self.parent.approve,
            context=self.parent.context, repeat_guard=self.parent.repeat_guard is not None,
            hooks=copy.copy(self.parent.hooks),  # the same hooks; its own once-per-run stop
            first_message=args.prompt,
            parent={"session_id": self.parent.id, "tool_call_id": ctx.tool_call_id,
                    "depth": self.depth + 1, "description": args.description},
            interrupted=self.parent._interrupted,  # noqa: SLF001 - one interrupt for both
        )
        for tool in tools:  # its own `task` runs at the next depth
            if isinstance(tool, Subagent):
                tool.runner = SubagentRunner(child, self.config, path, self.listeners,
                                             self.depth + 1)
        workspace = self.parent.workspace
        before = workspace.snapshot()
        try:
            result = child.run()
        finally:
            recorder.close()
        changed = workspace.changed_between(before, workspace.snapshot())
        return _observation(args, result, changed, {
            "session_id": child_id, "trajectory": path.name, "depth": self.depth + 1})

    def _next_child(self) -> tuple[str, Path]:
        """The next child's id and trajectory file (a resumed parent's earlier ones kept)."""
        while True:
            self.started += 1
            child_id = f"{self.parent.id}.task{self.started}"
            path = self.trajectory_path.with_name(f"{child_id}.jsonl")
            if not path.exists():
                return child_id, path

    def _child_tools(self, asked: list[str] | None) -> list[Tool]:
        """The child's tools: those asked for (default: all it may have), each one the parent
        has, read-only unless edits are allowed; `task` only above the depth limit."""
        nested = self.depth + 1 < self.config.max_depth
        mine = self.parent.toolbox.tools
        allowed = {name for name, tool in mine.items()
                   if (tool.read_only or self.config.allow_edits)
                   and (name != Subagent.name or nested)}
        names = list(mine) if asked is None else [*asked, "finish"]
        refused = [name for name in names if asked is not None and name not in allowed]
        if refused:
            raise ToolError(_refusal(refused, mine, allowed, nested))
        return [Subagent() if name == Subagent.name else tool for name, tool in mine.items()
                if name in allowed and name in names]


def _refusal(refused: list[str], mine: dict[str, Tool], allowed: set[str], nested: bool) -> str:
    reasons = []
    for name in dict.fromkeys(refused):
        if name not in mine:
            reasons.append(f"{name} is not a tool of this session")
        elif name == Subagent.name and not nested:
            reasons.append("task: a subagent cannot start subagents (the depth limit, "
                           "[subagents] max_depth in .apprentice.toml)")
        else:
            reasons.append(f"{name}: subagents get read-only tools unless [subagents] "
                           "allow_edits = true in .apprentice.toml")
    return (f"the subagent cannot have {'; '.join(reasons)}. It may have: "
            f"{', '.join(sorted(allowed))}.")


def _observation(args: TaskArgs, result: SessionResult, changed: list[str],
                 link: dict[str, Any]) -> Observation:
    """What the parent reads: how the child ended, its summary and the files it changed."""
    usage = result.usage
    ended = "finished" if result.exit_status == "finished" else f"ended ({result.exit_status})"
    lines = [f"Subagent {args.description!r} {ended} after {usage.steps} steps."]
    if result.summary:
        lines.append(f"Its summary:\n{result.summary}")
    elif result.error:
        lines.append(f"Its error: {result.error}")
    else:
        lines.append("It gave no summary.")
    lines.append("Files it changed: " + (", ".join(changed) if changed else "none"))
    return Observation("\n".join(lines), is_error=result.exit_status in ("error", "interrupted"),
                       data={"subagent": {**link, "exit_status": result.exit_status,
                                          "steps": usage.steps, "files_changed": changed,
                                          "prompt_tokens": usage.prompt_tokens,
                                          "completion_tokens": usage.completion_tokens,
                                          "cost_usd": usage.cost_usd}})


def bind_subagents(session: Session, config: SubagentConfig, trajectory_path: Path,
                   listeners: list[Listener]) -> None:
    """Give the session's `task` tool (if it has one) its runner."""
    tool = session.toolbox.tools.get(Subagent.name)
    if isinstance(tool, Subagent):
        tool.runner = SubagentRunner(session, config, trajectory_path, listeners)


def without_subagents(tools: list[Tool], config: SubagentConfig) -> list[Tool]:
    """`tools`, less `task` when the configuration turns subagents off (`max_depth = 0`)."""
    return [tool for tool in tools if tool.name != Subagent.name or config.max_depth > 0]
