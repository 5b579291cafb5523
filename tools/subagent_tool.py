"""The `task` tool: hand a self-contained piece of work to a subagent, a child session with a
fresh context on the same worktree and sandbox. The tool is only its schema and contract; the
agent, which owns sessions, gives it the runner (`agent.subagents`)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError


class TaskArgs(BaseModel):
    description: str = Field(description="A few words on what the subagent is for (shown to "
                             "the user).", min_length=1, max_length=200)
    prompt: str = Field(description="The subagent's whole task. It sees only this, not your "
                        "conversation: say what to look into or do, and what to report back.",
                        min_length=1, max_length=20_000)
    tools: list[str] | None = Field(
        None, description="The tools it may use, by name (default: the read-only ones; "
        "editing tools and bash only where the session lets subagents edit).", max_length=50)


SubagentRunner = Callable[[TaskArgs, ToolContext], Observation]
"""Runs a subagent for a `task` call and returns the observation the caller reads."""


class Subagent(Tool):
    """Start a subagent on a self-contained piece of work (find where something is defined,
    check how a function is used, review a change) in a fresh context with its own step budget.
    It works on the same repository and returns its final summary and the files it changed."""

    name = "task"
    Args = TaskArgs

    def __init__(self, runner: SubagentRunner | None = None):
        self.runner = runner
        """Set by the session's owner; without one the tool says subagents are unavailable."""

    def run(self, args: TaskArgs, ctx: ToolContext) -> Observation:
        if self.runner is None:
            raise ToolError("subagents are not available in this session.")
        return self.runner(args, ctx)
