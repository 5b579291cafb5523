"""The executor seam: everything that runs many episodes submits them here.

An `EpisodeJob` names a module-level function that runs one whole episode (worktree, sandbox,
model, recorder, verify) and writes its files into the `output_dir` it is given, returning the
`SolveResult`; or another unit of sandbox work of the same shape (synthesis validates a batch
of candidate bugs in one sandbox and returns their verdicts), whose result comes back as it is.
`submit` returns a `RunningEpisode` (a future and a way to interrupt it). Two executors
satisfy `EpisodeExecutor`:

- `LocalExecutor` (the default): threads of this process, sandboxes from one warm pool, the
  episode writing straight into its output folder, as `agent eval` always ran;
- `agent.ray_executor.RayExecutor` (`--executor ray`): one Ray task per episode on a cluster,
  its files sent back and written here, atomically, then indexed as if run here.

The job's function gets `pool` (a warm `SandboxPool` or None) and `on_open` (called with the
open `Episode`); it must pass both on to `agent.solve.solve`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from agent.episode import Episode
from agent.executor_config import ExecutorConfig, ExecutorKind
from tools.sandbox import SandboxConfig
from tools.sandbox.pool import SandboxPool

__all__ = ["EpisodeExecutor", "EpisodeJob", "ExecutorConfig", "LocalExecutor", "RunningEpisode",
           "open_executor"]


Result = TypeVar("Result")
EpisodeFunction = Callable[..., Any]
"""`run(*args, output_dir=Path, pool=SandboxPool | None, on_open=Callable[[Episode], None])`:
one episode into `output_dir` (see the module), its `SolveResult` returned. For Ray, a
module-level function whose arguments and result are plain data (they are pickled)."""


@dataclass
class EpisodeJob(Generic[Result]):
    """One episode to run: `run(*args, output_dir=..., pool=..., on_open=...)`."""

    run: Callable[..., Result]
    args: tuple[Any, ...]
    output_dir: Path
    """Where the trajectory and patch end up (on the driver)."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """The episode's sandbox, for its resources."""
    time_limit_s: float | None = None
    """Interrupt the episode after this long (it still records and verifies)."""


class Interrupts:
    """An episode's interruption before and after it opens, and its time limit."""

    def __init__(self, time_limit_s: float | None = None):
        self.time_limit_s = time_limit_s
        self.timed_out = False
        self._episode: Episode | None = None
        self._wanted = False
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def opened(self, episode: Episode) -> None:
        """The `on_open` callback: remember the episode, start the clock."""
        with self._lock:
            self._episode = episode
            wanted = self._wanted
        if wanted:
            episode.session.interrupt()
        if self.time_limit_s is not None:
            self._timer = threading.Timer(self.time_limit_s, self._time_out)
            self._timer.daemon = True
            self._timer.start()

    def _time_out(self) -> None:
        self.timed_out = True
        self.interrupt()

    def interrupt(self) -> None:
        with self._lock:
            self._wanted = True
            episode = self._episode
        if episode is not None:
            episode.session.interrupt()

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


@dataclass
class RunningEpisode(Generic[Result]):
    """A submitted episode: its future result, and how to stop it."""

    future: Future[Result]
    interrupt: Callable[[], None]
    timed_out: Callable[[], bool] = lambda: False


class EpisodeExecutor(Protocol):
    """Runs submitted episodes, several at once (the local threads, or a Ray cluster)."""

    kind: ExecutorKind

    def submit(self, job: EpisodeJob[Result]) -> RunningEpisode[Result]: ...

    def close(self) -> None: ...

    def __enter__(self) -> EpisodeExecutor: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class LocalExecutor:
    """Episodes on `workers` threads of this process, sandboxes from `pool` when given."""

    kind: ExecutorKind = "local"

    def __init__(self, workers: int, pool: SandboxPool | None = None):
        self.pool = pool
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="episode")

    def submit(self, job: EpisodeJob[Result]) -> RunningEpisode[Result]:
        interrupts = Interrupts(job.time_limit_s)

        def run() -> Result:
            try:
                return job.run(*job.args, output_dir=job.output_dir, pool=self.pool,
                               on_open=interrupts.opened)
            finally:
                interrupts.done()

        return RunningEpisode(self._threads.submit(run), interrupts.interrupt,
                              lambda: interrupts.timed_out)

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_executor(config: ExecutorConfig, workers: int,
                  pool: SandboxPool | None = None) -> EpisodeExecutor:
    """The executor `config` names: local threads (`workers` of them, sandboxes from `pool`),
    or a Ray cluster (joined, or started here), which schedules by resources instead."""
    if config.kind == "ray":
        from agent.ray_executor import RayExecutor

        return RayExecutor(config)
    return LocalExecutor(workers, pool)
