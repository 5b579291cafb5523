"""What an interactive session runs on: its worktree, sandbox, model client, recorder and index.

The TUI builds a `SessionHost` off the UI thread, sends it the user's messages and closes it; the
agent loop itself is `agent.session.Session`, the same one `agent solve` runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.context import ContextConfig
from agent.llm import LLMClient, LLMConfig
from agent.session import Approver, Listener, Session
from agent.solve import new_session_id, session_tools
from agent.tasks import Task, suggest_test_command
from tools.base import ToolBox, ToolContext
from tools.locations import data_dir
from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.sandbox.repo_image import image_for_repository
from tools.session_setup import open_session
from tools.workspace import Workspace, open_repository
from trajectories.events import (
    AssistantMessage,
    Event,
    Finished,
    SessionStarted,
    Verified,
    parse_event,
)
from trajectories.reader import read_trajectory
from trajectories.recorder import TrajectoryRecorder
from trajectories.store import IndexUpdater, TrajectoryStore

CLOSE_WAIT_S = 15.0
"""Seconds `close` waits for an interrupted turn to stop before tearing down anyway."""


class ResumeError(RuntimeError):
    """A recorded session cannot be continued; the message says why."""


@dataclass
class HostOptions:
    """How the TUI opens a session (the flags of `agent tui`)."""

    repo: Path = Path(".")
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(stream=True))
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    max_steps: int = 30
    """Model calls allowed per user message."""
    session_id: str | None = None
    """A fixed id for a new session (tests and snapshots); default: a fresh one."""
    context: ContextConfig | None = None
    """How the context is measured and compacted; default: `ContextConfig()`."""
    tools: str | None = None
    """Tool set or comma-separated tool names; default: the model's (`default_tool_set`)."""


class SessionHost:
    """One interactive session and everything it runs on; every method may block."""

    def __init__(self, session: Session, workspace: Workspace, sandbox: Sandbox,
                 recorder: TrajectoryRecorder, store: TrajectoryStore, resumed: bool):
        self.session = session
        self.workspace = workspace
        self.sandbox = sandbox
        self.recorder = recorder
        self.store = store
        self.turns = 1 if resumed else 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def trajectory_path(self) -> Path:
        return self.recorder.path

    @classmethod
    def open_new(cls, options: HostOptions, listeners: list[Listener],
                 approve: Approver | None = None) -> SessionHost:
        """A fresh session on a new branch from the repository's HEAD."""
        session_id = options.session_id or new_session_id()
        repo = open_repository(options.repo)
        root = Path(repo.working_tree_dir or options.repo)
        opened = open_session(root, session_id, options.sandbox)  # as `agent solve` does
        test_command = suggest_test_command(root) or ""
        task = Task(instance_id=f"tui-{session_id}", repo=str(root), problem_statement="",
                    base_commit=opened.workspace.base_commit, test_command=test_command)
        path = data_dir() / "runs" / session_id / f"{session_id}.jsonl"
        return cls._assemble(options, task, opened.workspace, opened.sandbox, opened.config,
                             path, listeners, approve, [])

    @classmethod
    def resume(cls, options: HostOptions, path: Path, events: list[Event],
               listeners: list[Listener], approve: Approver | None = None) -> SessionHost:
        """Continue the recorded session `events` (read from `path`) on its branch."""
        header = events[0] if events and isinstance(events[0], SessionStarted) else None
        if header is None:
            raise ResumeError(f"{path} has no session header; it cannot be resumed.")
        workspace = Workspace.reopen(Path(header.repo), header.session_id, header.base_commit,
                                     header.branch)
        config = image_for_repository(workspace.repo_path, workspace.base_commit, options.sandbox)
        try:
            sandbox = make_sandbox(config, workspace.path)
        except BaseException:
            workspace.remove()
            raise
        task = Task.model_validate(header.task)
        return cls._assemble(options, task, workspace, sandbox, config, path, listeners, approve,
                             events)

    @classmethod
    def _assemble(cls, options: HostOptions, task: Task, workspace: Workspace, sandbox: Sandbox,
                  sandbox_config: SandboxConfig, path: Path, listeners: list[Listener],
                  approve: Approver | None, events: list[Event]) -> SessionHost:
        recorder = TrajectoryRecorder(path)
        store = TrajectoryStore()
        index = IndexUpdater(store, path)
        index.events = [e for e in events
                        if isinstance(e, SessionStarted | Finished | Verified | AssistantMessage)]
        tools = session_tools(options.tools, options.llm.model)
        session = Session(
            workspace.session_id, task, LLMClient(options.llm), ToolBox(tools),
            ToolContext(workspace=workspace.path, sandbox=sandbox), workspace,
            max_steps=options.max_steps, listeners=[recorder, index, *listeners],
            sandbox_settings=sandbox_config.model_dump(), approve=approve,
            context=options.context,
        )
        if events:
            session.restore(events)
        return cls(session, workspace, sandbox, recorder, store, resumed=bool(events))

    def send(self, text: str) -> str:
        """Run one user turn to its end; returns how it ended (see `Session.send`)."""
        with self._lock:
            if self._closed:
                return "closed"
            if self.turns == 0:  # the first message is the task a replay or a verifier sees
                self.session.task = self.session.task.model_copy(
                    update={"problem_statement": text})
            self.turns += 1
            return self.session.send(text)

    def interrupt(self) -> None:
        self.session.interrupt()

    def set_model(self, model: str) -> None:
        """Use another model from the next call on."""
        config = self.session.llm.config.model_copy(update={"model": model})
        self.session.set_llm(LLMClient(config))

    def locked(self, work: Callable[[], object]) -> object:
        """Run `work` while no turn is running (undo, diff, compaction)."""
        with self._lock:
            return work()

    def close(self) -> None:
        """Stop any turn, record the end, remove the container and worktree (the branch stays,
        so the session can be resumed). Safe to call twice."""
        if self._closed:
            return
        self.session.interrupt()
        acquired = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            self._closed = True
            if self.turns:
                with contextlib.suppress(Exception):
                    self.session.end("quit")
        finally:
            if acquired:
                self._lock.release()
            self.recorder.close()
            self.store.close()
            self.sandbox.close()
            self.workspace.remove(delete_branch=not self.turns)
            if not self.turns:  # nothing happened: leave no empty trajectory behind
                self.trajectory_path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.trajectory_path.parent.rmdir()


def load_recording(session_id: str) -> tuple[Path, list[Event]]:
    """The trajectory file of a recorded session and its events."""
    path = find_trajectory(session_id)
    return path, read_trajectory(path).events


def recorded_model(session_id: str) -> str | None:
    """The model a recorded session was started with, if it can be read."""
    try:
        path = find_trajectory(session_id)
        with path.open(encoding="utf-8") as handle:
            header = parse_event(handle.readline())
    except (ResumeError, OSError, ValueError):
        return None
    return header.model if isinstance(header, SessionStarted) else None


def find_trajectory(session_id: str) -> Path:
    """The trajectory file of a session, by id or id prefix (index first, then the runs dir)."""
    store = TrajectoryStore()
    try:
        row = store.get(session_id)
    finally:
        store.close()
    if row and row.get("path") and Path(row["path"]).is_file():
        return Path(row["path"])
    matches = sorted((data_dir() / "runs").glob(f"{session_id}*/{session_id}*.jsonl"))
    if not matches:
        raise ResumeError(f"no recorded session {session_id!r}; `agent trajectories list` "
                          "shows the sessions there are.")
    return matches[-1]

