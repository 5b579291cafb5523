"""Replay: re-run an episode's recorded tool calls in a fresh sandbox and compare, call by call,
what the tools observe now with what they observed then. It checks the environment, not the
model: the model's replies are taken from the file, never asked for again.

Outputs that legitimately change between runs (durations such as pytest's "in 0.03s", commit
and container hashes, timestamps, memory addresses) are masked before a second comparison; a
call equal only after masking is reported as "volatile" and still counts as reproduced.
"""

from __future__ import annotations

import difflib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tools.base import Observation, ToolBox, ToolContext
from tools.control import default_tools, select_tools
from tools.sandbox import SandboxConfig, make_sandbox
from tools.subagent_tool import Subagent
from tools.workspace import Workspace
from trajectories.events import AssistantMessage, Finished, ToolCallStarted, ToolResult
from trajectories.reader import TrajectoryFile, read_trajectory
from trajectories.redact import Redactor

Status = Literal["same", "volatile", "differs"]
VOLATILE = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"),
     "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:s|ms|us|µs|sec|secs|seconds)\b"), "<duration>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<address>"),
    (re.compile(r"\b(?=[0-9]*[a-f])[0-9a-f]{7,64}\b"), "<hash>"),  # not plain numbers
]
MAX_DIFF_LINES = 40
MCP_SEPARATOR = "__"
"""In the name of an MCP server's tool (`server__tool`, `tools.mcp_tools`)."""
SUBAGENT_TOOL = Subagent.name
POST_HOOK_NOTE = "post_tool_use_hook"
"""A tool result's data key: what post_tool_use hooks added to its output (`agent.hooks`)."""


def mask_volatile(text: str) -> str:
    """`text` with durations, timestamps, hashes and addresses replaced by placeholders."""
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    return text


def compare(recorded: str, replayed: str) -> Status:
    if recorded == replayed:
        return "same"
    return "volatile" if mask_volatile(recorded) == mask_volatile(replayed) else "differs"


def short_diff(recorded: str, replayed: str) -> str:
    lines = list(difflib.unified_diff(recorded.splitlines(), replayed.splitlines(),
                                      "recorded", "replayed", lineterm="", n=1))
    if len(lines) > MAX_DIFF_LINES:
        lines = [*lines[:MAX_DIFF_LINES], f"... ({len(lines) - MAX_DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


@dataclass
class CallComparison:
    """One tool call: what it observed when recorded and when replayed."""

    step: int
    tool_call_id: str
    name: str
    arguments: str
    status: Status
    recorded: str
    replayed: str
    recorded_error: bool
    replayed_error: bool
    diff: str = ""


@dataclass
class ReplayReport:
    """The determinism check of one episode."""

    session_id: str
    base_commit: str
    image: str
    calls: list[CallComparison] = field(default_factory=list)
    patch_status: Status | Literal["no patch recorded"] = "no patch recorded"
    patch_diff: str = ""
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def differing(self) -> list[CallComparison]:
        return [c for c in self.calls if c.status == "differs"]

    @property
    def reproduced(self) -> bool:
        """Every observation (and the final patch, if recorded) came out the same."""
        return not self.differing and self.patch_status != "differs"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reproduced"] = self.reproduced
        data["counts"] = {s: sum(c.status == s for c in self.calls)
                          for s in ("same", "volatile", "differs")}
        return data


class ReplayError(RuntimeError):
    """The episode cannot be replayed; the message says why and what to do."""


def replay_trajectory(
    trajectory: TrajectoryFile,
    sandbox: SandboxConfig | None = None,
    on_call: Callable[[CallComparison], None] | None = None,
) -> ReplayReport:
    """Re-run every recorded tool call, in order, in a fresh worktree at the base commit and a
    fresh sandbox (the recorded sandbox settings unless `sandbox` is given)."""
    header = trajectory.header
    if header is None:
        raise ReplayError(f"{trajectory.path} has no session_started header")
    repo = Path(header.repo)
    if not repo.is_dir():
        raise ReplayError(f"the episode's repository {repo} is gone; replay needs it at the "
                          f"base commit {header.base_commit[:12]}")
    config = sandbox or SandboxConfig.model_validate(header.sandbox or {})
    report = ReplayReport(header.session_id, header.base_commit, config.image)
    toolbox = recorded_toolbox(header.tools, report.notes)
    started = time.monotonic()
    workspace = Workspace.create(repo, f"replay-{secrets.token_hex(4)}", base=header.base_commit)
    box = None
    try:
        box = make_sandbox(config, workspace.path)
        ctx = ToolContext(workspace=workspace.path, sandbox=box)
        _rerun(trajectory, toolbox, ctx, workspace, report, on_call)
        finished = next((e for e in reversed(trajectory.events) if isinstance(e, Finished)), None)
        if finished is not None:
            patch = workspace.patch()
            report.patch_status = compare(finished.patch, patch)
            if report.patch_status != "same":
                report.patch_diff = short_diff(finished.patch, patch)
    finally:
        if box is not None:
            box.close()
        workspace.remove(delete_branch=True)
    report.duration_s = round(time.monotonic() - started, 3)
    return report


def recorded_toolbox(schemas: list[dict[str, Any]], notes: list[str]) -> ToolBox:
    """The tools the episode was offered, rebuilt from its recorded schemas' names; a note
    says where today's tools differ (a tool gone or renamed, schemas changed)."""
    recorded = [str(t.get("function", {}).get("name")) for t in schemas]
    recorded = [name for name in recorded if MCP_SEPARATOR not in name]  # outside servers
    try:
        toolbox = ToolBox(select_tools(",".join(recorded)))
    except ValueError as exc:
        notes.append(f"the recorded tools cannot all be rebuilt ({exc}); replaying with "
                     "today's default tools")
        return ToolBox(default_tools())
    if list(toolbox.tools) != recorded:
        notes.append(f"the tool set changed since recording: recorded {recorded}, "
                     f"now {list(toolbox.tools)}")
    elif toolbox.schemas() != schemas:
        notes.append("the tools' schemas changed since recording (same names)")
    return toolbox


def _rerun(trajectory: TrajectoryFile, toolbox: ToolBox, ctx: ToolContext, workspace: Workspace,
           report: ReplayReport, on_call: Callable[[CallComparison], None] | None) -> None:
    """Walk the events as the session produced them: run each started call, compare it with
    its result, and checkpoint between steps as the session did (git output depends on it)."""
    redact = Redactor()  # the recording was redacted; compare like with like
    pending: dict[str, ToolCallStarted] = {}
    ran_since_checkpoint: int | None = None
    for event in trajectory.events:
        if isinstance(event, AssistantMessage) and ran_since_checkpoint is not None:
            workspace.checkpoint(f"apprentice: checkpoint after step {ran_since_checkpoint}")
            ran_since_checkpoint = None
        if isinstance(event, ToolCallStarted):
            pending[event.tool_call_id] = event
        elif isinstance(event, ToolResult) and event.tool_call_id in pending:
            started = pending.pop(event.tool_call_id)
            if event.data.get("declined"):  # the user refused it: it never ran
                continue
            if "mcp_server" in event.data:  # an outside server's state is not the sandbox's
                report.notes.append(f"step {event.step}: {event.name} is an MCP server's tool; "
                                    "not replayed")
                continue
            link = event.data.get("subagent")
            if isinstance(link, dict):  # its calls are in its own trajectory: replay those
                _rerun_subagent(trajectory, event, link, ctx, workspace, report, on_call)
                ran_since_checkpoint = event.step
                continue
            if event.name == SUBAGENT_TOOL:  # refused by the session's settings: nothing ran
                report.notes.append(f"step {event.step}: a task call that started no "
                                    "subagent; not replayed")
                continue
            observation = _run(toolbox, started, ctx)
            hook_note = event.data.get(POST_HOOK_NOTE)
            if hook_note:  # what a post_tool_use hook added is not the tool's own output
                observation.output += f"\n[post_tool_use hook: {hook_note}]"
            ran_since_checkpoint = event.step
            observation.output = redact(observation.output)
            status = compare(event.output, observation.output)
            if status != "differs" and event.is_error != observation.is_error:
                status = "differs"
            comparison = CallComparison(
                step=event.step, tool_call_id=event.tool_call_id, name=event.name,
                arguments=started.arguments, status=status, recorded=event.output,
                replayed=observation.output, recorded_error=event.is_error,
                replayed_error=observation.is_error,
                diff=short_diff(event.output, observation.output) if status != "same" else "")
            report.calls.append(comparison)
            if on_call is not None:
                on_call(comparison)
    for started in pending.values():
        report.notes.append(f"step {started.step}: {started.name} has no recorded result "
                            "(the episode was cut off there); not compared")


def _rerun_subagent(trajectory: TrajectoryFile, event: ToolResult, link: dict[str, Any],
                    ctx: ToolContext, workspace: Workspace, report: ReplayReport,
                    on_call: Callable[[CallComparison], None] | None) -> None:
    """A `task` call: the subagent's own calls, from its nested trajectory, in a fresh tool
    context on the same workspace (as it ran); its comparisons join the report."""
    path = trajectory.path.with_name(Path(str(link.get("trajectory"))).name)
    child = read_trajectory(path) if path.is_file() else None
    if child is None or child.header is None:
        report.notes.append(f"step {event.step}: the subagent's trajectory {path.name} is "
                            "missing; its calls are not replayed")
        return
    report.notes.append(f"step {event.step}: the calls of subagent {child.header.session_id} "
                        "are replayed from its trajectory")
    _rerun(child, recorded_toolbox(child.header.tools, report.notes),
           ToolContext(workspace=ctx.workspace, sandbox=ctx.sandbox), workspace, report,
           on_call)


def _run(toolbox: ToolBox, call: ToolCallStarted, ctx: ToolContext) -> Observation:
    """Run one call exactly as the session does, unexpected tool failures included."""
    try:
        return toolbox.call(call.name, call.arguments, ctx)
    except Exception as exc:
        return Observation(f"Error: the {call.name} tool failed unexpectedly: "
                           f"{type(exc).__name__}: {exc}", True)
