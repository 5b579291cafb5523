"""Episodes on a Ray cluster (`--executor ray`): one Ray task per episode.

The task (`run_remote_episode`, on any node) runs the job's function as the local executor
would, in an apprentice home of its own (a temporary folder: its worktrees, its index), with
the node's own Docker engine (or its `DOCKER_HOST`) for the sandboxes. It sends back the
`SolveResult` and the bytes of every file the episode wrote (trajectory, patch, subagents'
trajectories); the driver writes them into the job's `output_dir` (each file under a temporary
name, then renamed into place) and indexes the trajectories in its own store, as if it had run
the episode. A worker that dies loses its episode; Ray runs it again `max_retries` times, then
the future raises `EpisodeLost`. Nothing is written on the driver before a task has returned.
A killed worker's task folder is swept by the node's next task, and by the driver on every
node when it closes after a lost episode (`agent.ray_scratch`).

Every node needs apprentice installed (`pip install 'apprentice[ray]'`), the sandbox image
(`agent sandbox build`) and the model: an API, or an OpenAI-compatible server it can reach.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.executor import (
    EpisodeFunction,
    EpisodeJob,
    ExecutorConfig,
    ExecutorKind,
    Interrupts,
    Result,
    RunningEpisode,
)
from agent.ray_scratch import new_scratch, sweep_orphans
from agent.solve import SolveResult
from trajectories.store import TrajectoryStore

LOCAL_NODE_IP = "127.0.0.1"
"""The address of a cluster started here (no --ray-address): nothing listens elsewhere."""


class EpisodeLost(RuntimeError):
    """An episode's worker died on every try, or the episode was cancelled."""


@dataclass
class RemoteEpisode:
    """What a Ray task sends back: the result, the files under its output folder, and where
    it ran."""

    result: Any
    """The job's result: an episode's `SolveResult`, or what another job returns."""
    files: dict[str, bytes]
    output_dir: str
    node: str
    pid: int
    seconds: float
    """How long the episode's function ran on the worker (the rest is scheduling, transfer
    and landing)."""
    timed_out: bool = False


def run_remote_episode(run: EpisodeFunction, args: tuple[Any, ...],
                       time_limit_s: float | None) -> RemoteEpisode:
    """The Ray task: one episode in a fresh apprentice home, its files read back whole; its
    temporary folders inside its own (`agent.ray_scratch`), after sweeping those of killed
    workers."""
    sweep_orphans()
    scratch = new_scratch()
    previous = os.environ.get("APPRENTICE_HOME")
    os.environ["APPRENTICE_HOME"] = str(scratch / "home")  # a worker runs one task at a time
    previous_tmp = tempfile.tempdir
    tempfile.tempdir = str(scratch / "tmp")
    (scratch / "tmp").mkdir()
    out = scratch / "out"
    interrupts = Interrupts(time_limit_s)
    started = time.monotonic()
    try:
        result = run(*args, output_dir=out, pool=None, on_open=interrupts.opened)
        files = {str(p.relative_to(out)): p.read_bytes()
                 for p in sorted(out.rglob("*")) if p.is_file()}
        return RemoteEpisode(result, files, str(out), socket.gethostname(), os.getpid(),
                             time.monotonic() - started, interrupts.timed_out)
    finally:
        interrupts.done()
        tempfile.tempdir = previous_tmp
        if previous is None:
            os.environ.pop("APPRENTICE_HOME", None)
        else:
            os.environ["APPRENTICE_HOME"] = previous
        shutil.rmtree(scratch, ignore_errors=True)


def land(remote: RemoteEpisode, dest: Path, store: TrajectoryStore | None = None) -> Any:
    """Write a remote episode's files into `dest` (each atomically: a temporary name, then a
    rename), index its trajectories, and return its result (a `SolveResult` with paths under
    `dest`; another job's result as it came)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in remote.files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        written.append(target)
    own = store is None
    store = store or TrajectoryStore()
    try:
        for path in written:
            if path.suffix == ".jsonl":
                store.index_file(path)
    finally:
        if own:
            store.close()

    def moved(path: str) -> str:
        source = Path(path)
        inside = source.is_relative_to(remote.output_dir)
        return str(dest / source.relative_to(remote.output_dir)) if inside else path

    if not isinstance(remote.result, SolveResult):
        return remote.result
    return replace(remote.result, trajectory_path=moved(remote.result.trajectory_path),
                   patch_path=moved(remote.result.patch_path))


def _reason(exc: BaseException) -> BaseException:
    """The episode's own exception where Ray wrapped one; a lost worker as `EpisodeLost`."""
    import ray.exceptions as errors

    if isinstance(exc, errors.TaskCancelledError):
        return EpisodeLost("the episode was cancelled")
    if isinstance(exc, errors.RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause if isinstance(cause, Exception) else exc
    if isinstance(exc, errors.WorkerCrashedError | errors.NodeDiedError |
                  errors.ObjectLostError):
        return EpisodeLost(f"the Ray worker running the episode died on every try: {exc}")
    return exc


def sweep_nodes(timeout_s: float = 60.0) -> list[str]:
    """`sweep_orphans` on every live node of the cluster (a task of no CPU pinned to each);
    the folders removed. A node that does not answer in time is left for its next task."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sweep = ray.remote(num_cpus=0, max_retries=0)(sweep_orphans)
    refs = [sweep.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote() for node in ray.nodes() if node.get("Alive")]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    removed: list[str] = []
    for ref in ready:
        try:
            removed.extend(ray.get(ref))
        except Exception:  # a node that died meanwhile keeps its folders
            continue
    return removed


class RayExecutor:
    """Submits each episode as a Ray task reserving `config.resources` (so a node never runs
    more sandboxes than it has room for) and lands what comes back (module docstring)."""

    kind: ExecutorKind = "ray"

    def __init__(self, config: ExecutorConfig):
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'apprentice[ray]' (on "
                               "the driver and every node)") from None

        self.config = config
        self._started = not ray.is_initialized()
        if self._started:
            if config.ray_address:
                ray.init(address=config.ray_address, log_to_driver=False)
            else:  # a new cluster of this machine (never one a stale `ray start` left)
                ray.init(address="local", _node_ip_address=LOCAL_NODE_IP,
                         include_dashboard=False, log_to_driver=False)
        self._task = ray.remote(run_remote_episode)
        self.last_node: dict[str, str] = {}
        """Output folder -> `node:pid` of the worker that ran it (reports, tests)."""
        self.remote_seconds: dict[str, float] = {}
        """Output folder -> seconds its episode ran on the worker (the bench's overhead)."""
        self.lost = 0
        """Episodes lost since the last sweep of the nodes."""
        self.swept: list[str] = []
        """The folders of killed workers the last sweep removed."""

    def submit(self, job: EpisodeJob[Result]) -> RunningEpisode[Result]:
        import ray

        ref = self._task.options(max_retries=self.config.max_retries,
                                 **self.config.resources(job.sandbox)).remote(
            job.run, job.args, job.time_limit_s)
        done: Future[Result] = Future()
        timed_out = [False]

        def landed(remote: Future[Any]) -> None:
            try:
                found: RemoteEpisode = remote.result()
                timed_out[0] = found.timed_out
                self.last_node[str(job.output_dir)] = f"{found.node}:{found.pid}"
                self.remote_seconds[str(job.output_dir)] = found.seconds
                done.set_result(land(found, Path(job.output_dir)))
            except BaseException as exc:  # the caller's future says what became of it
                reason = _reason(exc)
                self.lost += isinstance(reason, EpisodeLost)
                done.set_exception(reason)

        ref.future().add_done_callback(landed)
        cancel: Callable[[], None] = lambda: ray.cancel(ref)  # noqa: E731
        return RunningEpisode(done, cancel, lambda: timed_out[0])

    def close(self) -> None:
        """After a lost episode, sweep every node of the folders its killed workers left
        (`agent.ray_scratch`); then leave a cluster started here."""
        import ray

        if self.lost and ray.is_initialized():
            self.swept = sweep_nodes()
            self.lost = 0
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
