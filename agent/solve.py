"""The headless runner behind `agent solve`: set up, run one episode, verify, report."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

from agent.episode import Episode, EpisodeConfig, Note, open_episode
from agent.session import Listener
from agent.tasks import Task
from tools.sandbox.pool import SandboxPool
from trajectories.events import (
    AssistantMessage,
    ErrorEvent,
    Event,
    ExitStatus,
    Finished,
    Selection,
    ToolResult,
    Usage,
    Verified,
)
from trajectories.redact import Redactor


@dataclass
class SolveResult:
    """The JSON `agent solve --json` prints (`usage` as its four fields, flat)."""

    session_id: str
    model: str
    branch: str
    base_commit: str
    patch: str
    patch_path: str
    trajectory_path: str
    reward: int
    test_output: str
    usage: Usage
    exit_status: ExitStatus
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
        """The result as JSON, secrets redacted; `usage`'s fields in its place, flat."""
        flat: dict[str, Any] = {}
        for key, value in asdict(self.redacted()).items():
            flat.update(value if key == "usage" else {key: value})
        return json.dumps(flat, indent=2)


class ProgressPrinter:
    """Prints a line per step to stderr from the event stream, secrets redacted; a subagent's
    lines are marked with its id."""

    subagent_events = True

    def __init__(self, stream: TextIO = sys.stderr, redactor: Redactor | None = None,
                 prefix: str = ""):
        self.stream = stream
        self.redact = redactor or Redactor()
        self.prefix = prefix
        """Put before every line (`[attempt 2] `, when several attempts print at once)."""
        self._session: str | None = None

    def __call__(self, event: Event) -> None:
        self._session = self._session or event.session_id
        prefix = self.prefix
        if event.session_id != self._session:
            prefix += f"[{event.session_id.removeprefix(self._session + '.')}] "
        line = None
        if isinstance(event, AssistantMessage):
            calls = ", ".join(c.name for c in event.tool_calls) or "no tool call"
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
        elif isinstance(event, Selection):
            line = selection_line(event)
        if line:
            print(self.redact(prefix + line), file=self.stream, flush=True)


def selection_line(event: Selection) -> str:
    """`selected attempt 2 of 4 (kept 2, visible_tests 4, ...)`, or why none was."""
    ran = f"{len(event.candidates)} of {event.samples} attempts ran"
    chosen = next((c for c in event.candidates if c.get("attempt") == event.selected), None)
    if chosen is None:
        return f"selected no attempt: every one was lost ({ran})"
    scores = ", ".join(f"{name} {chosen['signals'].get(name)}" for name in event.signals)
    return f"selected attempt {event.selected} ({scores}); {ran}"


def solve(task: Task, config: EpisodeConfig, listeners: list[Listener] | None = None,
          pool: SandboxPool | None = None, note: Note | None = None,
          on_open: Callable[[Episode], None] | None = None) -> SolveResult:
    """Run one episode on `task` in a fresh worktree and sandbox (from `pool` when given),
    then verify its patch in another fresh sandbox; `note` hears of a setup image built,
    `on_open` gets the episode before it runs (to interrupt it from another thread)."""
    started = time.monotonic()
    with open_episode(task, config, listeners, pool=pool, note=note) as episode:
        if on_open is not None:
            on_open(episode)
        outcome = episode.session.run()
        patch_path = episode.out_dir / f"{episode.id}.patch"
        patch_path.write_text(episode.recorder.redact(outcome.patch))
        verify_started = time.monotonic()
        verdict = episode.verify(outcome.patch)
    workspace = episode.workspace
    return SolveResult(
        session_id=episode.id, model=config.llm.model, branch=workspace.branch,
        base_commit=workspace.base_commit, patch=outcome.patch, patch_path=str(patch_path),
        trajectory_path=str(episode.trajectory_path), reward=verdict.reward,
        test_output=verdict.test_output, usage=outcome.usage,
        exit_status=outcome.exit_status, summary=outcome.summary,
        error=outcome.error, test_command=verdict.test_command,
        duration_s=round(time.monotonic() - started, 3),
        verify_duration_s=round(time.monotonic() - verify_started, 3),
    )
