"""What an interactive session runs on: its worktree, sandbox, model client, recorder and index.

The TUI builds a `SessionHost` off the UI thread, sends it the user's messages and closes it; the
agent loop itself is `agent.session.Session`, the same one `agent solve` runs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

from agent.episode import Episode, EpisodeConfig, new_session_id
from agent.interactive_samples import SampledRequest, SamplesUnavailable, run_sampled_request
from agent.llm import LLMClient
from agent.samples_config import SamplesConfig
from agent.session import Approver, Listener
from agent.tasks import Task, suggest_test_command
from tools.locations import data_dir
from tools.workspace import Rewound, WorkspaceError, open_repository
from trajectories.events import (
    Checkpoint,
    Event,
    McpServerStatus,
    SessionStarted,
    TurnStatus,
    parse_event,
)
from trajectories.reader import read_trajectory
from trajectories.store import TrajectoryStore

__all__ = ["ResumeError", "Rewound", "SampledRequest", "SamplesUnavailable", "SessionHost",
           "WorkspaceError", "load_recording", "recent_sessions", "recorded_model"]

CLOSE_WAIT_S = 15.0
"""Seconds `close` waits for an interrupted turn to stop before tearing down anyway."""


class ResumeError(RuntimeError):
    """A recorded session cannot be continued; the message says why."""


class SessionHost:
    """One interactive session: an `agent.episode.Episode` driven turn by turn; every method
    may block."""

    def __init__(self, episode: Episode, resumed: bool):
        self.episode = episode
        self.session = episode.session
        self.workspace = episode.workspace
        self.turns = 1 if resumed else 0
        self._lock = threading.Lock()
        self._closed = False
        self._stop_attempts: threading.Event | None = None

    @property
    def trajectory_path(self) -> Path:
        return self.episode.trajectory_path

    @property
    def mcp_servers(self) -> list[McpServerStatus]:
        """The MCP servers' states at the start (also events, after the first message's
        header)."""
        return self.episode.extensions.statuses

    @classmethod
    def open_new(cls, repo: Path, config: EpisodeConfig, listeners: list[Listener],
                 approve: Approver | None = None) -> SessionHost:
        """A fresh session on a new branch from the repository's HEAD."""
        root = Path(open_repository(repo).working_tree_dir or repo)
        session_id = config.session_id or new_session_id()
        task = Task(instance_id=f"tui-{session_id}", repo=str(root), problem_statement="",
                    test_command=suggest_test_command(root) or "")
        config = config.model_copy(update={"session_id": session_id})
        return cls(Episode.open(task, config, listeners, approve), resumed=False)

    @classmethod
    def resume(cls, config: EpisodeConfig, path: Path, events: list[Event],
               listeners: list[Listener], approve: Approver | None = None) -> SessionHost:
        """Continue the recorded session `events` (read from `path`) on its branch."""
        if not events or not isinstance(events[0], SessionStarted):
            raise ResumeError(f"{path} has no session header; it cannot be resumed.")
        return cls(Episode.resume(path, events, config, listeners, approve), resumed=True)

    def send(self, text: str) -> TurnStatus:
        """Run one user turn to its end; returns how it ended (see `Session.send`)."""
        with self._lock:
            if self._closed:
                return "closed"
            if self.turns == 0:  # the first message is the task a replay or a verifier sees
                self.session.task = self.session.task.model_copy(
                    update={"problem_statement": text})
            self.turns += 1
            return self.session.send(text)

    def send_samples(self, text: str, samples: SamplesConfig,
                     listeners: list[Listener] | None = None,
                     attempt_listeners: Callable[[int], list[Listener]] | None = None
                     ) -> SampledRequest:
        """Run one request as several attempts and apply the selected one's change to the
        session's files (`agent.interactive_samples`); `interrupt` stops the attempts. The
        session's trajectory records the checkpoints; the model is told with the next message
        (`SampledRequest.note`)."""
        with self._lock:
            if self._closed:
                raise SamplesUnavailable("the session is closed")
            self._stop_attempts = threading.Event()
            try:
                done = run_sampled_request(self.episode, text, samples, listeners,
                                           attempt_listeners, self._stop_attempts)
            finally:
                self._stop_attempts = None
            if done.checkpoints:
                if self.turns == 0:  # the request is the task a replay or a verifier sees
                    self.session.task = self.session.task.model_copy(
                        update={"problem_statement": text})
                    self.turns = 1
                self.session.start()
                for commit in done.checkpoints:
                    self.session.emit(Checkpoint(session_id=self.session.id,
                                                 step=self.session.step, commit=commit))
            return done

    def interrupt(self) -> None:
        self.session.interrupt()
        stop = self._stop_attempts
        if stop is not None:
            stop.set()

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
        self.interrupt()
        acquired = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            self._closed = True
            if self.turns:
                with contextlib.suppress(Exception):
                    self.session.end("quit")
        finally:
            if acquired:
                self._lock.release()
            self.episode.close(remove_workspace=True, delete_branch=not self.turns)
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



def recent_sessions(limit: int = 50, exclude: str | None = None) -> list[dict]:
    """The most recent recorded sessions (index rows), newest first, without `exclude`."""
    store = TrajectoryStore()
    try:
        return [row for row in store.list(limit=limit) if row["id"] != exclude]
    finally:
        store.close()
