"""Tools that steer the episode rather than touch files: bash, todo and finish; and the
default tool set."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.sandbox.base import WORKSPACE
from tools.search import tests_named, workspace_files
from tools.workspace_fs import WorkspaceFS

MISSING_FILE = re.compile(r"(?:file or directory not found|ERROR: not found): (\S+)")
"""pytest's complaint about a path or a test it was given that does not exist."""
TEST_NAME = re.compile(r"test\w*")
"""A name pytest collects as a test function (its default `python_functions`)."""
MAX_HINTED_TESTS = 5


class BashArgs(BaseModel):
    command: str = Field(description="A bash command; cwd and exported variables persist.")
    timeout: float | None = Field(
        None, gt=0, le=3600, description="Seconds before the command is killed (default 120)."
    )


class Bash(Tool):
    """Run a command in a persistent bash shell inside the sandbox, at /workspace (the
    repository). Output is stdout and stderr together, with the exit code."""

    name = "bash"
    Args = BashArgs

    def run(self, args: BashArgs, ctx: ToolContext) -> Observation:
        if ctx.sandbox is None:
            raise ToolError("no sandbox is running, so commands cannot run.")
        if not args.command.strip():
            raise ToolError("command is empty.")
        result = ctx.sandbox.run(args.command, timeout=args.timeout)
        hint = missing_test_hint(result.output, ctx.workspace) if result.exit_code else ""
        return Observation(
            result.describe() + hint,
            is_error=result.exit_code != 0,
            data={"exit_code": result.exit_code, "timed_out": result.timed_out,
                  "shell_restarted": result.shell_restarted,
                  "duration_s": round(result.duration_s, 4)},
        )


def missing_test_hint(output: str, workspace: Path) -> str:
    """A hint for a test pytest did not find, or "": the workspace's files called like the test
    file (a folder left out of the path is the usual slip), else the test files that define a
    test of that name, as full node ids (a bare `test_x`, or a test asked of the wrong file)."""
    targets = [match.group(1).removeprefix(WORKSPACE + "/")
               for match in MISSING_FILE.finditer(output)]
    if not targets:
        return ""
    fs = WorkspaceFS(workspace)
    try:
        listed = workspace_files(workspace)
    except OSError:
        return ""
    for target in targets:
        path, _, inside = target.partition("::")
        if path.startswith("/") or ".." in path.split("/"):
            continue
        test = inside.split("::")[-1].split("[")[0] if inside else \
            (path if TEST_NAME.fullmatch(path) else "")
        if path.endswith(".py") and _kind(fs, path) == "missing":
            name = PurePosixPath(path).name
            same = [f for f in listed if PurePosixPath(f).name == name][:5]
            if same:
                return f"\n[hint: the workspace has no {path}; files named {name}: " \
                       f"{', '.join(same)}]"
        if TEST_NAME.fullmatch(test):
            ids = tests_named(workspace, test, listed)[:MAX_HINTED_TESTS]
            if ids:
                return f"\n[hint: pytest found no {target}; tests named {test}: " \
                       f"{', '.join(ids)}]"
    return ""


def _kind(fs: WorkspaceFS, path: str) -> str:
    try:
        return fs.kind(path)
    except (ToolError, OSError):
        return "other"


class TodoItem(BaseModel):
    content: str = Field(description="What to do.", max_length=1_000)
    status: Literal["pending", "in_progress", "completed"] = Field("pending")


class TodoArgs(BaseModel):
    items: list[TodoItem] = Field(description="The whole plan; replaces the previous one.",
                                  max_length=100)


class Todo(Tool):
    """Write the plan as a todo list (the whole list each time); mark items in_progress or
    completed as you go."""

    name = "todo"
    read_only = True
    Args = TodoArgs

    def run(self, args: TodoArgs, ctx: ToolContext) -> Observation:
        items = [item.model_dump() for item in args.items]
        ctx.todo = items
        marks = {"pending": "[ ]", "in_progress": "[~]", "completed": "[x]"}
        lines = [f"{marks[i['status']]} {i['content']}" for i in items] or ["(empty)"]
        return Observation("Plan updated:\n" + "\n".join(lines), data={"items": items},
                           plan=items)


class FinishArgs(BaseModel):
    summary: str = Field(description="What was changed and why, in a few sentences.",
                         max_length=20_000)


class Finish(Tool):
    """Call when the task is done (or cannot be done), with a short summary. Ends the episode."""

    name = "finish"
    read_only = True
    Args = FinishArgs

    def run(self, args: FinishArgs, ctx: ToolContext) -> Observation:
        return Observation(f"Finished: {args.summary}", finished=True,
                           data={"summary": args.summary})


TOOL_SETS: dict[str, tuple[str, ...]] = {
    "core": ("bash", "view", "create", "str_replace", "grep", "finish"),
}
"""Named tool sets besides `full` (every tool of `default_tools`). `core` is what a small local
model handles: its tool list is half the prompt tokens of `full` (880 instead of 1,750 for
SmolLM2, the `task` tool's 290 included)."""


def default_tools() -> list[Tool]:
    """The tool set of a coding session, in the order the model is shown them."""
    from tools.files import Create, Insert, StrReplace, UndoEdit, View
    from tools.locate import Locate
    from tools.repo_map import RepoMapTool
    from tools.search import Glob, Grep
    from tools.subagent_tool import Subagent

    return [Bash(), View(), Create(), StrReplace(), Insert(), UndoEdit(), Grep(), Glob(),
            Locate(), RepoMapTool(), Todo(), Subagent(), Finish()]


def select_tools(spec: str = "full") -> list[Tool]:
    """The tools named by `spec`: comma-separated set names (`full`, `core`) and tool names
    (`core,glob`), kept in the session's usual order. `finish` is always included."""
    tools = default_tools()
    known = [tool.name for tool in tools]
    sets = {"full": tuple(known), **TOOL_SETS}
    items = [item.strip() for item in spec.split(",") if item.strip()]
    wanted = [name for item in items for name in sets.get(item, (item,))]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown tool set or tool {', '.join(unknown) or repr(spec)}: use "
                         f"{' or '.join(sets)}, or a comma-separated list of "
                         f"{', '.join(known)}")
    chosen = {*wanted, "finish"}
    return [tool for tool in tools if tool.name in chosen]
