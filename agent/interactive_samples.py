"""One request of an interactive session as several attempts (the TUI's `/samples N`).

The request runs as `agent solve --samples N` runs an issue (`agent.samples.run_samples`): N
fresh episodes, each in its own worktree and sandbox, starting from the session's files as they
are (its last checkpoint), with the request as their task and without the conversation so far.
The selected attempt's patch is then applied to the session's worktree and checkpointed, so the
conversation goes on from it (one `/undo` takes it back); the model hears of it in a note.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.episode import Episode, EpisodeConfig
from agent.patches import file_diffs
from agent.samples import SamplesResult, run_samples
from agent.samples_config import SAMPLED_TEMPERATURE, SamplesConfig
from agent.session import Listener
from agent.tasks import Task
from tools.workspace import WorkspaceError

REQUEST_SHOWN = 200
"""Characters of the request quoted back to the model in the note."""


class SamplesUnavailable(RuntimeError):
    """The session cannot run a request as several attempts; the message says what to do."""


@dataclass
class SampledRequest:
    """What `/samples N` did: the attempts and the selection, and what reached the session."""

    request: str
    group: SamplesResult
    base_commit: str
    """The session's checkpoint every attempt started from."""
    patch: str = ""
    """The change applied to the session ('' when none was)."""
    files: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    """Commits made on the session's branch: changes not yet checkpointed, then the change."""
    not_applied: str | None = None
    """Why no change was applied, or None."""

    @property
    def applied(self) -> bool:
        return self.not_applied is None

    def note(self) -> str:
        """What the model is told before the user's next message."""
        request = self.request if len(self.request) <= REQUEST_SHOWN \
            else self.request[:REQUEST_SHOWN] + "…"
        group = self.group
        head = (f"[The user ran the request \"{request}\" as {len(group.attempts)} separate "
                f"attempts (group {group.group_id}), outside this conversation; ")
        chosen = group.selected
        if not self.applied or chosen is None:
            return head + f"no attempt's change was applied: {self.not_applied}.]"
        summary = chosen.result.summary if chosen.result else None
        return head + (f"attempt {chosen.attempt} was selected by running the tests and its "
                       f"change is now in the files ({', '.join(self.files)})"
                       + (f"; its summary: {summary}" if summary else "") + ".]")


def attempts_config(config: EpisodeConfig, episode: Episode) -> EpisodeConfig:
    """The attempts' settings: the session's, with its current model at the sampling
    temperature (unless it has one), not streamed, each with its own id and output folder."""
    llm = episode.session.llm.config
    llm = llm.model_copy(update={"temperature": llm.temperature or SAMPLED_TEMPERATURE,
                                 "stream": False})
    return config.model_copy(update={"llm": llm, "session_id": None, "output_dir": None,
                                     "group": None, "keep_worktree": False})


def run_sampled_request(episode: Episode, request: str, samples: SamplesConfig,
                        listeners: list[Listener] | None = None,
                        attempt_listeners: Callable[[int], list[Listener]] | None = None,
                        stop: threading.Event | None = None) -> SampledRequest:
    """Run `request` as `samples.samples` attempts from the session's files and apply the
    selected patch to them (module docstring). No turn may run meanwhile. After `stop` is
    set (the user interrupted), nothing is applied."""
    session, workspace = episode.session, episode.workspace
    if not session.task.test_command:
        raise SamplesUnavailable(
            "several attempts need the repository's test command to pick one, and none was "
            "found (pytest tests, package.json's test script, Cargo.toml or go.mod)")
    checkpoints = [c for c in [workspace.checkpoint(
        "apprentice: changes before several attempts")] if c]
    base = workspace.head()
    task = Task(instance_id=session.task.instance_id, repo=str(workspace.repo_path),
                base_commit=base, problem_statement=request,
                test_command=session.task.test_command, image=session.task.image,
                setup=session.task.setup)
    group = run_samples(task, attempts_config(episode.config, episode), samples,
                        listeners=listeners, attempt_listeners=attempt_listeners, stop=stop)
    found = SampledRequest(request, group, base, checkpoints=checkpoints)
    chosen = group.selected
    if group.interrupted or (stop is not None and stop.is_set()):  # maybe while selecting
        found.not_applied = "the user interrupted the attempts"
    elif chosen is None or chosen.result is None:
        found.not_applied = "every attempt was lost"
    elif not chosen.result.patch.strip():
        found.not_applied = f"the selected attempt {chosen.attempt} changed no file"
    if found.not_applied:
        return found
    assert chosen is not None and chosen.result is not None
    try:
        workspace.apply(chosen.result.patch)
        commit = workspace.checkpoint(
            f"apprentice: attempt {chosen.attempt} of {group.group_id}, selected")
    except WorkspaceError as exc:
        found.not_applied = str(exc)
        return found
    found.patch = chosen.result.patch
    found.files = [part.path for part in file_diffs(found.patch)]
    found.checkpoints += [commit] if commit else []
    return found
