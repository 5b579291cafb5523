"""One episode runtime: what an episode runs on, opened in one place and torn down once.

Every place that runs an episode (`agent solve`, the TUI, `agent eval`, GRPO rollouts) opens
it the same way:

    with open_episode(task, EpisodeConfig(...), listeners=[printer]) as episode:
        result = episode.session.run()
        verdict = episode.verify(result.patch)

The episode owns the session's worktree and branch, its sandbox (taken from a warm
`SandboxPool` when one is given; in the image the task's `setup` builds, or the repository's
.apprentice.toml, built once and cached), the trajectory recorder, the index updater and the
`Session`.
Leaving the block closes them in order, whatever happened inside: the recorder and index
first (so the trajectory is complete), then the sandbox, then the worktree.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.episode_config import EpisodeConfig
from agent.episode_extensions import EpisodeExtensions
from agent.llm import LLMClient
from agent.models import default_tool_set
from agent.session import Approver, Listener, Session
from agent.subagents import bind_subagents, without_subagents
from agent.subagents import load_config as load_subagents_config
from agent.tasks import Task
from tools.base import Tool, ToolBox, ToolContext
from tools.control import select_tools
from tools.locations import data_dir
from tools.repo_map import release_repo_map
from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.sandbox.pool import SandboxPool
from tools.sandbox.repo_image import image_for_repository
from tools.session_setup import open_session
from tools.workspace import Workspace
from trajectories.events import (
    AssistantMessage,
    Event,
    Finished,
    SessionStarted,
    Verified,
)
from trajectories.recorder import TrajectoryRecorder
from trajectories.store import IndexUpdater, TrajectoryStore
from trajectories.verify import VerifyResult, verify_patch

__all__ = ["Episode", "EpisodeConfig", "SandboxConfig", "new_session_id", "open_episode",
           "session_tools", "task_sandbox"]

logger = logging.getLogger(__name__)
Note = Callable[[str], None]
"""Told what opening an episode does that takes long (building a setup image)."""


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def session_tools(spec: str | None, model: str) -> list[Tool]:
    """The tools a session offers: `spec` (a `--tools` value), else the model's default set."""
    return select_tools(spec or default_tool_set(model))


class Episode:
    """An open episode: its session and everything the session runs on (see the module)."""

    def __init__(self, task: Task, config: EpisodeConfig, workspace: Workspace,
                 sandbox: Sandbox, sandbox_config: SandboxConfig, trajectory_path: Path,
                 listeners: list[Listener], approve: Approver | None,
                 recorded: list[Event] | None = None):
        self.task = task
        self.config = config
        self.workspace = workspace
        self.sandbox = sandbox
        self.sandbox_config = sandbox_config
        self.trajectory_path = trajectory_path
        self.recorder = TrajectoryRecorder(trajectory_path)
        self.store = TrajectoryStore()
        index = IndexUpdater(self.store, trajectory_path)
        index.events = [e for e in recorded or []
                        if isinstance(e, SessionStarted | Finished | Verified | AssistantMessage)]
        self.listeners: list[Listener] = [self.recorder, index, *listeners]
        subagents, problems = load_subagents_config(workspace.repo_path, workspace.base_commit)
        tools = without_subagents(session_tools(config.tools, config.llm.model), subagents)
        self.extensions = EpisodeExtensions.open(  # MCP servers and hooks (.apprentice.toml)
            workspace.repo_path, workspace.base_commit, workspace.path, sandbox,
            {tool.name for tool in tools})
        try:
            self.session = Session(
                workspace.session_id, task, LLMClient(config.llm),
                ToolBox(tools + self.extensions.tools),
                ToolContext(workspace=workspace.path, sandbox=sandbox), workspace,
                max_steps=config.max_steps, listeners=self.listeners,
                sandbox_settings=sandbox_config.model_dump(), approve=approve,
                context=config.context, repeat_guard=config.repeat_guard,
                group=config.group.model_dump() if config.group else None,
                hooks=self.extensions.hooks, notices=self.extensions.notices + problems,
            )
            bind_subagents(self.session, subagents, trajectory_path, listeners)
            if recorded:
                self.session.restore(recorded)
        except BaseException:
            self.extensions.close()
            raise
        self._sandbox_open = True
        self._closed = False

    @property
    def id(self) -> str:
        return self.workspace.session_id

    @property
    def out_dir(self) -> Path:
        return self.trajectory_path.parent

    @classmethod
    def open(cls, task: Task, config: EpisodeConfig, listeners: list[Listener] | None = None,
             approve: Approver | None = None, pool: SandboxPool | None = None,
             note: Note | None = None) -> Episode:
        """A new episode on `task`: a worktree at its base commit, a started sandbox on it, in
        the task's image with its `setup` applied (`note` hears of a setup being built)."""
        session_id = config.session_id or new_session_id()
        out_dir = Path(config.output_dir or data_dir() / "runs" / session_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        opened = open_session(Path(task.repo), session_id, task_sandbox(task, config),
                              base=task.base_commit or "HEAD", pool=pool, setup=task.setup,
                              log=note or logger.info)
        task = task.model_copy(update={"base_commit": opened.workspace.base_commit})
        try:
            return cls(task, config, opened.workspace, opened.sandbox, opened.config,
                       out_dir / f"{session_id}.jsonl", list(listeners or []), approve)
        except BaseException:
            opened.close(delete_branch=True)
            raise

    @classmethod
    def resume(cls, path: Path, events: list[Event], config: EpisodeConfig,
               listeners: list[Listener] | None = None,
               approve: Approver | None = None, note: Note | None = None) -> Episode:
        """Continue the recorded session `events` (read from `path`) on its branch, in the
        sandbox image its task runs in."""
        header = events[0] if events and isinstance(events[0], SessionStarted) else None
        if header is None:
            raise ValueError(f"{path} has no session header; it cannot be resumed.")
        task = Task.model_validate(header.task)
        workspace = Workspace.reopen(Path(header.repo), header.session_id, header.base_commit,
                                     header.branch)
        try:
            sandbox_config = image_for_repository(workspace.repo_path, workspace.base_commit,
                                                  task_sandbox(task, config),
                                                  note or logger.info, setup=task.setup)
        except BaseException:
            workspace.remove()
            raise
        try:
            sandbox = make_sandbox(sandbox_config, workspace.path)
        except BaseException:
            workspace.remove()
            raise
        try:
            return cls(task, config, workspace, sandbox, sandbox_config, Path(path),
                       list(listeners or []), approve, events)
        except BaseException:
            sandbox.close()
            workspace.remove()
            raise

    def emit(self, event: Event) -> None:
        """Send an event that is not the session's own (the verdict) to every listener."""
        for listener in self.listeners:
            listener(event)

    def release_sandbox(self) -> None:
        """Remove the container now (before verifying, say); safe to call twice."""
        if self._sandbox_open:
            self._sandbox_open = False
            self.extensions.close()  # in-sandbox MCP servers first
            self.sandbox.close()

    def verify(self, patch: str) -> VerifyResult:
        """Judge `patch` in a fresh sandbox (this one is released first) and record the
        verdict as a `verified` event."""
        self.release_sandbox()
        task = self.task
        verdict = verify_patch(Path(task.repo), self.workspace.base_commit, patch,
                               task.test_command, task.FAIL_TO_PASS, task.PASS_TO_PASS,
                               self.sandbox_config, test_patch=task.test_patch)
        self.emit(Verified(session_id=self.id, step=self.session.step, reward=verdict.reward,
                           test_command=verdict.test_command, test_output=verdict.test_output,
                           exit_code=verdict.exit_code, image=verdict.image,
                           duration_s=round(verdict.duration_s, 3)))
        return verdict

    def close(self, remove_workspace: bool | None = None, delete_branch: bool = False) -> None:
        """Close the recorder and index, remove the sandbox, then the worktree (unless
        `keep_worktree`; the branch stays unless `delete_branch`). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        remove = not self.config.keep_worktree if remove_workspace is None else remove_workspace
        try:
            self.recorder.close()
            self.store.close()
        finally:
            with contextlib.suppress(Exception):
                self.release_sandbox()
            release_repo_map(self.workspace.path)
            if remove or delete_branch:
                self.workspace.remove(delete_branch=delete_branch)


def task_sandbox(task: Task, config: EpisodeConfig) -> SandboxConfig:
    """The episode's sandbox settings with the task's own image, if it names one."""
    return config.sandbox.model_copy(update={"image": task.image} if task.image else {})


@contextmanager
def open_episode(task: Task, config: EpisodeConfig, listeners: list[Listener] | None = None,
                 approve: Approver | None = None, pool: SandboxPool | None = None,
                 note: Note | None = None) -> Iterator[Episode]:
    """`Episode.open`, closed once at the end of the block whatever happens in it."""
    episode = Episode.open(task, config, listeners, approve, pool, note)
    try:
        yield episode
    finally:
        episode.close()
