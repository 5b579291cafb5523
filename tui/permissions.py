"""Which tool calls run without asking: the permission modes and plan mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["allow", "ask", "deny"]

MODES = ("auto", "ask", "read-only")
"""`auto`: everything runs (the default inside the Docker sandbox); `ask`: commands and edits
wait for the user's yes / no / always; `read-only`: they are declined."""

READ_ONLY_TOOLS = frozenset({"view", "grep", "glob", "repo_map", "todo", "finish"})
"""Tools that change nothing: always allowed."""

PLAN_MODE_NOTE = (
    "[Plan mode: do not edit files or run commands yet. Investigate with view, grep and glob, "
    "write your plan with the todo tool, then reply with a short summary of the plan and stop; "
    "the user approves it before you change anything.]"
)
PLAN_APPROVED = "The plan is approved. Carry it out now, keeping the todo list up to date."


@dataclass
class PermissionPolicy:
    """The user's current rules for tool calls; `decide` is asked before each one."""

    mode: str = "auto"
    plan_mode: bool = False
    always: set[str] = field(default_factory=set)
    """Tools the user allowed for the rest of the session (the "always" answer)."""

    def decide(self, tool: str) -> Decision:
        if tool in READ_ONLY_TOOLS:
            return "allow"
        if self.plan_mode or self.mode == "read-only":
            return "deny"
        if self.mode == "auto" or tool in self.always:
            return "allow"
        return "ask"

    def denial(self, tool: str) -> str:
        """Why a call was declined, as the model reads it."""
        if self.plan_mode:
            return ("plan mode is on, so only view, grep, glob and todo may run; propose the plan "
                    "and wait for the user's approval")
        return f"the session is read-only, so {tool} may not run; only view, grep and glob may"

    def next_mode(self) -> str:
        return MODES[(MODES.index(self.mode) + 1) % len(MODES)] if self.mode in MODES else "auto"
