"""The headless runner behind `agent solve`: set up, run one episode, verify, report."""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from agent.context import ContextConfig
from agent.llm import LLMClient, LLMConfig
from agent.models import default_tool_set
from agent.session import Session
from agent.tasks import Task
from tools.base import Tool, ToolBox, ToolContext
from tools.control import select_tools
from tools.locations import data_dir
from tools.sandbox import SandboxConfig
from tools.session_setup import open_session
from trajectories.events import (
    AssistantMessage,
    ErrorEvent,
    Event,
    Finished,
    ToolResult,
    Verified,
)
from trajectories.recorder import TrajectoryRecorder
from trajectories.redact import Redactor
from trajectories.store import IndexUpdater, TrajectoryStore
from trajectories.verify import verify_patch


def session_tools(spec: str | None, model: str) -> list[Tool]:
    """The tools a session offers: `spec` (a `--tools` value), else the model's default set."""
    return select_tools(spec or default_tool_set(model))


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class SolveOptions:
    """Everything `agent solve` takes, with its defaults."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    max_steps: int = 30
    output_dir: Path | None = None
    keep_worktree: bool = False
    context: ContextConfig = field(default_factory=ContextConfig)
    tools: str | None = None
    """Tool set or comma-separated tool names; default: the model's (`default_tool_set`)."""


@dataclass
class SolveResult:
    """The JSON `agent solve --json` prints."""

    session_id: str
    model: str
    branch: str
    base_commit: str
    patch: str
    patch_path: str
    trajectory_path: str
    reward: int
    test_output: str
    steps: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    exit_status: str
    summary: str | None
    error: str | None
    test_command: str
    duration_s: float
    verify_duration_s: float

    def redacted(self, redactor: Redactor | None = None) -> SolveResult:
        """A copy fit to print: secrets in the patch, summary, error and test output removed."""
        redact = redactor or Redactor()
        return replace(self, patch=redact(self.patch), test_output=redact(self.test_output),
                       summary=redact(self.summary) if self.summary else self.summary,
                       error=redact(self.error) if self.error else self.error)

    def to_json(self) -> str:
        """The result as JSON, secrets redacted."""
        return json.dumps(asdict(self.redacted()), indent=2)


class ProgressPrinter:
    """Prints a line per step to stderr from the event stream, secrets redacted."""

    def __init__(self, stream: TextIO = sys.stderr, redactor: Redactor | None = None):
        self.stream = stream
        self.redact = redactor or Redactor()

    def __call__(self, event: Event) -> None:
        line = None
        if isinstance(event, AssistantMessage):
            calls = ", ".join(c["function"]["name"] for c in event.tool_calls) or "no tool call"
            line = (f"step {event.step}: model -> {calls} ({event.completion_tokens} tokens, "
                    f"{event.latency_s:.1f}s)")
        elif isinstance(event, ToolResult):
            first = event.output.strip().splitlines()[0] if event.output.strip() else ""
            mark = "!" if event.is_error else " "
            line = f"  {mark} {event.name}: {first[:100]}"
        elif isinstance(event, ErrorEvent):
            line = f"  error: {event.message}"
        elif isinstance(event, Finished):
            line = f"episode ended: {event.exit_status} after {event.steps} steps"
        elif isinstance(event, Verified):
            line = f"verified: reward {event.reward} ({event.test_command})"
        if line:
            print(self.redact(line), file=self.stream, flush=True)


def solve(task: Task, options: SolveOptions, listeners: list[Any] | None = None) -> SolveResult:
    """Run one episode on `task` in a fresh worktree and sandbox, then verify its patch."""
    started = time.monotonic()
    tools = session_tools(options.tools, options.llm.model)
    session_id = new_session_id()
    out_dir = Path(options.output_dir or data_dir() / "runs" / session_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    trajectory_path = out_dir / f"{session_id}.jsonl"
    sandbox_config = options.sandbox.model_copy(
        update={"image": task.image} if task.image else {})
    opened = open_session(Path(task.repo), session_id, sandbox_config,
                          base=task.base_commit or "HEAD")
    workspace, sandbox, sandbox_config = opened.workspace, opened.sandbox, opened.config
    task = task.model_copy(update={"base_commit": workspace.base_commit})
    recorder = TrajectoryRecorder(trajectory_path)
    store = TrajectoryStore()
    listeners = [recorder, IndexUpdater(store, trajectory_path), *(listeners or [])]
    try:
        session = Session(
            session_id, task, LLMClient(options.llm), ToolBox(tools),
            ToolContext(workspace=workspace.path, sandbox=sandbox), workspace,
            max_steps=options.max_steps, listeners=listeners,
            sandbox_settings=sandbox_config.model_dump(), context=options.context,
        )
        outcome = session.run()
    except BaseException:
        recorder.close()
        store.close()
        raise
    finally:
        sandbox.close()
        if not options.keep_worktree:
            workspace.remove()
    patch_path = out_dir / f"{session_id}.patch"
    patch_path.write_text(recorder.redact(outcome.patch))
    verify_started = time.monotonic()
    verdict = verify_patch(Path(task.repo), workspace.base_commit, outcome.patch,
                           task.test_command, task.FAIL_TO_PASS, task.PASS_TO_PASS,
                           sandbox_config, test_patch=task.test_patch)
    verified = Verified(session_id=session_id, step=outcome.steps, reward=verdict.reward,
                        test_command=verdict.test_command, test_output=verdict.test_output,
                        exit_code=verdict.exit_code, image=verdict.image,
                        duration_s=round(verdict.duration_s, 3))
    for listener in listeners:
        listener(verified)
    recorder.close()
    store.close()
    return SolveResult(
        session_id=session_id, model=options.llm.model, branch=workspace.branch,
        base_commit=workspace.base_commit, patch=outcome.patch, patch_path=str(patch_path),
        trajectory_path=str(trajectory_path), reward=verdict.reward,
        test_output=verdict.test_output, steps=outcome.steps,
        prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
        cost_usd=outcome.cost_usd, exit_status=outcome.exit_status, summary=outcome.summary,
        error=outcome.error, test_command=verdict.test_command,
        duration_s=round(time.monotonic() - started, 3),
        verify_duration_s=round(time.monotonic() - verify_started, 3),
    )
