"""Several attempts at one task (`agent solve --samples N`), and the one picked by running them.

Each attempt is a whole `agent.solve` episode: its own worktree, sandbox (from one warm pool),
trajectory, whose header names the group (`SessionStarted.group`), and verified reward. The
attempts run `workers` at a time; `agent.selection` then picks one from what the agent may see,
and a `selection` event records every candidate's signals (in `<group dir>/selection.jsonl`,
and to the listeners). The rewards are never shown to the selector; they are reported next to
its choice, so the gap between the selected patch and the best of N stays visible.

An attempt that crashes, ends in an error or runs past its time limit is a candidate that
lost, not a failed run. With `stop_when_agree` K, once K attempts made the same change (in
normal form) no more start and the running ones are interrupted; setting `stop` (the user
interrupting) does the same, and the interrupted attempts lose.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.attempt_jobs import bundle_commit, run_bundled_attempt
from agent.episode import Episode, EpisodeConfig, Note, new_session_id, task_sandbox
from agent.episode_config import AttemptGroup
from agent.executor import EpisodeExecutor, EpisodeJob
from agent.judge import PatchJudge
from agent.patches import change_id, split_patch
from agent.samples_config import SamplesConfig
from agent.selection import Candidate, Judge, SelectionOutcome, VisibleTask, select_patch
from agent.session import Listener
from agent.solve import SolveResult, solve
from agent.tasks import Task
from tools.locations import data_dir
from tools.sandbox.pool import SandboxPool
from tools.sandbox.repo_image import image_for_repository
from tools.workspace import open_repository, resolve_commit
from trajectories.events import Selection
from trajectories.recorder import TrajectoryRecorder
from trajectories.redact import Redactor

logger = logging.getLogger(__name__)
SELECTION_FILE = "selection.jsonl"
AGREED = "stopped: enough attempts agreed"
USER_STOPPED = "interrupted by the user"
STOP_POLL_S = 0.2
"""How often a run with a `stop` event looks at it."""
AttemptRunner = Callable[[Task, EpisodeConfig, Callable[[Episode], None]], SolveResult]
"""Runs one attempt (`config.group.attempt` says which) as `agent.solve.solve` does, calling
the callback with the episode once it is open. The default is `solve` itself."""


@dataclass
class Attempt:
    """One attempt: its result, or why it is a candidate that lost."""

    attempt: int
    session_id: str
    result: SolveResult | None = None
    lost: str | None = None
    duration_s: float = 0.0


@dataclass
class SamplesResult:
    """The attempts, the selector's verdict, and the selected attempt's result."""

    group_id: str
    samples: int
    attempts: list[Attempt]
    selection: SelectionOutcome
    selection_path: Path
    duration_s: float
    stopped_early: bool = False
    interrupted: bool = False
    """`stop` was set: attempts still running were interrupted, none started after."""
    attempts_by_id: dict[int, Attempt] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.attempts_by_id = {a.attempt: a for a in self.attempts}

    @property
    def selected(self) -> Attempt | None:
        chosen = self.selection.selected
        return None if chosen is None else self.attempts_by_id[chosen]

    @property
    def rewards(self) -> list[int]:
        """Each attempt's reward (0 for a lost attempt that has none), in attempt order."""
        return [(a.result.reward if a.result else 0) for a in self.attempts]

    def candidates(self, redactor: Redactor | None = None) -> list[dict[str, Any]]:
        """Each attempt as the result JSON lists it: trajectory, patch, signals, reward."""
        redact = redactor or Redactor()
        signals = {s.attempt: s.record() for s in self.selection.signals}
        ranks = {a: n for n, a in enumerate(self.selection.ranking, start=1)}
        rows = []
        for a in self.attempts:
            result = a.result
            rows.append({
                "attempt": a.attempt, "session_id": a.session_id,
                "trajectory_path": result.trajectory_path if result else None,
                "patch": redact(result.patch) if result else "",
                "exit_status": result.exit_status if result else "error",
                "reward": result.reward if result else None, "lost": a.lost,
                "signals": signals.get(a.attempt, {}), "rank": ranks.get(a.attempt),
                "duration_s": a.duration_s})
        return rows

    def to_json(self) -> str:
        """The selected attempt's `agent solve --json` keys, then the group's: `group_id`,
        `samples`, `ran`, `selected`, `candidates`, `selection_path`, `selection_notes`."""
        chosen = self.selected
        flat: dict[str, Any] = json.loads(chosen.result.to_json()) \
            if chosen and chosen.result else {}
        flat.update(group_id=self.group_id, samples=self.samples, ran=len(self.attempts),
                    stopped_early=self.stopped_early, selected=self.selection.selected,
                    selected_by=list(self.selection.used), candidates=self.candidates(),
                    selection_path=str(self.selection_path),
                    selection_notes=self.selection.notes,
                    group_duration_s=round(self.duration_s, 3))
        return json.dumps(flat, indent=2)


class _Running:
    """The episodes running now, to interrupt them (time limit, enough agreed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._episodes: dict[int, Callable[[], None]] = {}
        self.timed_out: set[int] = set()
        self.stopped = threading.Event()
        self.reason = AGREED
        """Why `stopped` was set: enough attempts agreed, or the user interrupted."""

    def add(self, attempt: int, interrupt: Callable[[], None],
            limit_s: float | None) -> threading.Timer | None:
        """Hold `interrupt` (stops the attempt) until `remove`; call it after `limit_s`."""
        with self._lock:
            self._episodes[attempt] = interrupt
        if self.stopped.is_set():
            interrupt()
        if limit_s is None:
            return None
        timer = threading.Timer(limit_s, self._time_out, (attempt,))
        timer.daemon = True
        timer.start()
        return timer

    def _time_out(self, attempt: int) -> None:
        with self._lock:
            interrupt = self._episodes.get(attempt)
            if interrupt is not None:
                self.timed_out.add(attempt)
        if interrupt is not None:
            interrupt()

    def remove(self, attempt: int) -> None:
        with self._lock:
            self._episodes.pop(attempt, None)

    def stop_all(self, reason: str = "") -> None:
        if not self.stopped.is_set():
            self.reason = reason or AGREED
        self.stopped.set()
        with self._lock:
            interrupts = list(self._episodes.values())
        for interrupt in interrupts:
            interrupt()


def _lost_reason(result: SolveResult, timed_out: bool, stopped: str | None,
                 limit_s: float | None) -> str | None:
    if result.exit_status == "interrupted":
        if timed_out:
            return f"timed out: still running after {limit_s:g} s"
        return stopped or "interrupted"
    if result.exit_status == "error":
        return f"the episode ended with an error: {result.error or 'no message'}"
    return None


class _Group:
    """One group's attempts as they run, and the agreement between them."""

    def __init__(self, task: Task, config: EpisodeConfig, samples: SamplesConfig,
                 group_id: str, runner: AttemptRunner, remote: EpisodeExecutor | None = None):
        self.task, self.config, self.samples = task, config, samples
        self.group_id, self.runner, self.remote = group_id, runner, remote
        self.bundle = bundle_commit(Path(task.repo), str(task.base_commit)) if remote else b""
        self.running = _Running()
        self.changes: Counter[str] = Counter()

    def attempt_config(self, attempt: int, session_id: str) -> EpisodeConfig:
        out = self.config.output_dir
        return self.config.model_copy(update={
            "session_id": session_id, "output_dir": Path(out) / session_id if out else None,
            "group": AttemptGroup(id=self.group_id, attempt=attempt,
                                  samples=self.samples.samples)})

    def run(self, attempt: int) -> Attempt:
        session_id = f"{new_session_id()}-{attempt}"
        found = Attempt(attempt, session_id)
        started = time.monotonic()
        timers: list[threading.Timer] = []

        def on_open(episode: Episode) -> None:
            timer = self.running.add(attempt, episode.session.interrupt,
                                     self.samples.attempt_timeout_s)
            timers.extend([timer] if timer else [])

        try:
            config = self.attempt_config(attempt, session_id)
            if self.remote is None:
                found.result = self.runner(self.task, config, on_open)
            else:
                found.result = self._run_remote(attempt, config)
        except Exception as exc:  # a crashed attempt is a candidate that lost
            found.lost = self.running.reason if self.remote is not None \
                and self.running.stopped.is_set() else f"crashed: {type(exc).__name__}: {exc}"
            logger.warning("attempt %d of %s %s", attempt, self.group_id, found.lost)
        finally:
            for timer in timers:
                timer.cancel()
            self.running.remove(attempt)
            found.duration_s = round(time.monotonic() - started, 3)
        if found.result is not None:
            running = self.running
            found.lost = _lost_reason(found.result, attempt in running.timed_out,
                                      running.reason if running.stopped.is_set() else None,
                                      self.samples.attempt_timeout_s)
        return found

    def _run_remote(self, attempt: int, config: EpisodeConfig) -> SolveResult:
        """The attempt on the executor (a Ray cluster), its repository sent as a bundle."""
        assert self.remote is not None
        out = Path(config.output_dir or data_dir() / "runs" / str(config.session_id))
        running = self.remote.submit(EpisodeJob(
            run_bundled_attempt, (self.bundle, self.task, config), out,
            sandbox=task_sandbox(self.task, config),
            time_limit_s=self.samples.attempt_timeout_s))
        self.running.add(attempt, running.interrupt, None)
        result = running.future.result()
        if running.timed_out():
            self.running.timed_out.add(attempt)
        return result

    def agreed(self, found: Attempt) -> bool:
        """Count `found`'s change; True once `stop_when_agree` attempts made the same one."""
        enough = self.samples.stop_when_agree
        if enough is None or found.lost or found.result is None:
            return False
        try:
            change = change_id(Path(self.task.repo), str(self.task.base_commit),
                               split_patch(found.result.patch).source)
        except ValueError:
            return False
        if change is None:
            return False
        self.changes[change] += 1
        return self.changes[change] >= enough


def _run_attempts(group: _Group, stop: threading.Event | None = None
                  ) -> tuple[list[Attempt], bool]:
    """Run the attempts, `parallel` at once, stopping early once enough agree or `stop` is
    set."""
    total, parallel = group.samples.samples, group.samples.parallel
    done: list[Attempt] = []
    pending: dict[Future[Attempt], int] = {}
    started = 0
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="attempt") as executor:
        while started < total or pending:
            while started < total and len(pending) < parallel \
                    and not group.running.stopped.is_set():
                pending[executor.submit(group.run, started)] = started
                started += 1
            if not pending:
                break
            finished, _ = wait(pending, timeout=None if stop is None else STOP_POLL_S,
                               return_when=FIRST_COMPLETED)
            if stop is not None and stop.is_set():
                group.running.stop_all(USER_STOPPED)
            for future in finished:
                del pending[future]
                found = future.result()
                done.append(found)
                if group.agreed(found):
                    group.running.stop_all()
    done.sort(key=lambda a: a.attempt)
    return done, group.running.stopped.is_set()


def run_samples(task: Task, config: EpisodeConfig, samples: SamplesConfig,
                listeners: list[Listener] | None = None,
                attempt_listeners: Callable[[int], list[Listener]] | None = None,
                pool: SandboxPool | None = None, note: Note | None = None,
                runner: AttemptRunner | None = None, judge: Judge | None = None,
                stop: threading.Event | None = None,
                executor: EpisodeExecutor | None = None) -> SamplesResult:
    """Run `samples.samples` attempts at `task` and select one (module docstring).

    `attempt_listeners(i)` are attempt i's listeners; `listeners` hear the `selection` event.
    Sandboxes come from `pool` when its configuration is the task's, else from a pool of our
    own. `runner` replaces `solve` (a scripted policy per attempt); `judge` replaces the model
    judge `samples.judge` asks for. Setting `stop` interrupts the attempts still running (they
    lose) and starts no more; the finished ones are still selected from. With an `executor`
    that is not local (Ray), the attempts run there (`agent.attempt_jobs`; their listeners hear
    nothing while they run, and a stopped one is cancelled, losing its trajectory); the
    selector still runs here."""
    started = time.monotonic()
    group_id = f"group-{new_session_id()}"
    group_dir = Path(config.output_dir or data_dir() / "runs" / group_id)
    base_commit = resolve_commit(open_repository(Path(task.repo)), task.base_commit or "HEAD")
    task = task.model_copy(update={"base_commit": base_commit})
    # The setup image, built once here rather than by every attempt at the same time.
    sandbox = image_for_repository(Path(task.repo), base_commit, task_sandbox(task, config),
                                   note or logger.info, setup=task.setup)
    own_pool = SandboxPool(sandbox, size=samples.parallel) \
        if pool is None or pool.config != sandbox else None
    warm = own_pool or pool

    def default_runner(task: Task, attempt_config: EpisodeConfig,
                       on_open: Callable[[Episode], None]) -> SolveResult:
        attempt = attempt_config.group.attempt if attempt_config.group else 0
        return solve(task, attempt_config, attempt_listeners(attempt) if attempt_listeners
                     else None, pool=warm, note=note, on_open=on_open)

    try:
        remote = executor if executor is not None and executor.kind != "local" else None
        group = _Group(task, config, samples, group_id, runner or default_runner, remote)
        attempts, stopped = _run_attempts(group, stop)
        if judge is None and samples.judge:
            judge = PatchJudge(config.llm)
        outcome = select_patch(
            VisibleTask.of(task, base_commit, sandbox),
            [Candidate(a.attempt, a.result.patch if a.result else "", a.lost) for a in attempts],
            vote=samples.vote, judge=judge, pool=warm, workers=samples.parallel,
            timeout=samples.test_timeout_s)
    finally:
        if own_pool is not None:
            own_pool.close()
    interrupted = stopped and group.running.reason == USER_STOPPED
    result = SamplesResult(group_id, samples.samples, attempts, outcome,
                           group_dir / SELECTION_FILE, time.monotonic() - started,
                           stopped and not interrupted, interrupted)
    _record(result, listeners or [])
    return result


def _record(result: SamplesResult, listeners: list[Listener]) -> None:
    """The `selection` event, written to the group's file and sent to `listeners`."""
    rows = result.candidates()
    event = Selection(
        session_id=result.group_id, signals=list(result.selection.used),
        candidates=[{k: row[k] for k in ("attempt", "session_id", "trajectory_path", "lost",
                                         "signals", "rank")} for row in rows],
        selected=result.selection.selected, samples=result.samples,
        commands=result.selection.commands, notes=result.selection.notes,
        duration_s=result.selection.duration_s)
    recorder = TrajectoryRecorder(result.selection_path)
    try:
        recorder(event)
    finally:
        recorder.close()
    for listener in listeners:
        listener(event)


__all__ = ["Attempt", "AttemptRunner", "SamplesConfig", "SamplesResult", "run_samples"]
