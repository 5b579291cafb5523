"""Synthesis validation as `agent.executor` jobs: the baseline, then batches of candidate bugs.

A job carries plain data a Ray worker can run: the repository (its path where the runner shares
this filesystem, else its git bundle's bytes), the test command, the sandbox, and per candidate
the file's original and buggy text. It clones the repository, starts a sandbox on the node's own
Docker engine (the repository's setup image built there if needed) and returns the verdicts.

On the local executor the sandboxes outlive their jobs: each thread takes an idle worker of
the repository (`WorkerCache`) and gives it back, so a candidate costs its test runs only, as
before the seam. On Ray each batch gets a worker of its own, closed when the batch is done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.episode import Episode
from agent.executor import EpisodeJob
from finetune.episode_jobs import BUNDLE_NAME, bundle_bytes
from finetune.synthesis_validate import Baseline, SynthesisWorker, Verdict
from tools.sandbox import SandboxConfig, image_for_repository
from tools.sandbox.pool import SandboxPool


@dataclass(frozen=True)
class ValidationSource:
    """What a worker needs: the repository (`path` or `bundle` bytes) at BASE_BRANCH, its
    name, base commit and test command, and the sandbox before the repository's setup."""

    name: str
    base: str
    test_command: str
    sandbox: SandboxConfig
    path: str | None = None
    bundle: bytes | None = None
    scratch: str | None = None
    """Where local workers clone (the synthesis work folder); remote ones use their temp."""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.name, self.base, self.test_command, self.sandbox.model_dump_json())


@dataclass(frozen=True)
class Candidate:
    """One candidate bug: `buggy` in place of `original` at `path`, judged first by the tests
    in `selection` (those that import the file; None: every test)."""

    index: int
    path: str
    original: str
    buggy: str
    selection: list[str] | None


@dataclass
class Judged:
    """A candidate's verdict, or why it could not be judged."""

    index: int
    verdict: Verdict | None = None
    error: str | None = None
    pid: int = field(default_factory=os.getpid)
    """The process that judged it (a Ray worker's, or this one)."""


@dataclass
class BaselineResult:
    baseline: Baseline
    image: str
    pid: int = field(default_factory=os.getpid)


def validation_source(name: str, repo_path: Path, base: str, test_command: str,
                      sandbox: SandboxConfig, scratch: Path, portable: bool) -> ValidationSource:
    """The source of `repo_path`'s jobs (`portable`: its bundle, for workers elsewhere)."""
    if portable:
        return ValidationSource(name, base, test_command, sandbox,
                                bundle=bundle_bytes(repo_path))
    return ValidationSource(name, base, test_command, sandbox, path=str(repo_path),
                            scratch=str(scratch))


class WorkerCache:
    """Idle workers per source, in this process (the local executor's threads share them)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, str, str], list[SynthesisWorker]] = {}
        self._made: dict[tuple[str, str, str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, source: ValidationSource) -> SynthesisWorker:
        with self._lock:
            idle = self._idle.setdefault(source.key, [])
            if idle:
                return idle.pop()
            number = self._made.get(source.key, 0)
            self._made[source.key] = number + 1
        return _new_worker(source, number)

    def give_back(self, source: ValidationSource, worker: SynthesisWorker) -> None:
        with self._lock:
            self._idle.setdefault(source.key, []).append(worker)

    def close(self, source: ValidationSource) -> None:
        """Close the source's idle workers (call when no job of it runs)."""
        with self._lock:
            workers = self._idle.pop(source.key, [])
            self._made.pop(source.key, None)
        for worker in workers:
            worker.close()


LOCAL_WORKERS = WorkerCache()


def _new_worker(source: ValidationSource, number: int) -> SynthesisWorker:
    if source.path is not None and source.scratch is not None:
        folder = Path(source.scratch) / f"{source.name}.worker{number}"
        origin = Path(source.path)
    else:
        root = Path(tempfile.mkdtemp(prefix=f"apprentice-synthesis-{source.name}-"))
        origin = root / BUNDLE_NAME
        origin.write_bytes(source.bundle or b"")
        folder = root / "clone"
    return SynthesisWorker(source.name, origin, folder, source.test_command,
                           lambda clone: image_for_repository(clone, source.base, source.sandbox,
                                                              log=lambda _: None))


@dataclass
class _Lease:
    """A worker for one job: from the cache (local) or made and closed here (remote)."""

    source: ValidationSource
    worker: SynthesisWorker = field(init=False)

    def __enter__(self) -> SynthesisWorker:
        if self.source.scratch is not None:
            self.worker = LOCAL_WORKERS.take(self.source)
        else:
            self.worker = _new_worker(self.source, 0)
        return self.worker

    def __exit__(self, *exc: object) -> None:
        if self.source.scratch is not None:
            LOCAL_WORKERS.give_back(self.source, self.worker)
        else:  # a remote worker's clone and bundle are in a temporary root of its own
            root = self.worker.folder.parent
            self.worker.close()
            shutil.rmtree(root, ignore_errors=True)


def run_baseline(source: ValidationSource, timeout: float, *, output_dir: Path,
                 pool: SandboxPool | None,
                 on_open: Callable[[Episode], None]) -> BaselineResult:
    """The job: the tests at the original commit (`SynthesisWorker.baseline`)."""
    with _Lease(source) as worker:
        return BaselineResult(worker.baseline(timeout), worker.sandbox_config.image)


def run_batch(source: ValidationSource, baseline: Baseline, candidates: list[Candidate],
              timeout: float, *, output_dir: Path, pool: SandboxPool | None,
              on_open: Callable[[Episode], None]) -> list[Judged]:
    """The job: each candidate written, judged by the tests, put back (one worker)."""
    judged = []
    with _Lease(source) as worker:
        for candidate in candidates:
            try:
                judged.append(Judged(candidate.index, worker.validate(
                    candidate.path, candidate.original, candidate.buggy, baseline,
                    candidate.selection, timeout)))
            except Exception as exc:  # one candidate never stops the batch
                judged.append(Judged(candidate.index, error=f"{type(exc).__name__}: {exc}"))
    return judged


def baseline_job(source: ValidationSource, timeout: float,
                 output_dir: Path) -> EpisodeJob[BaselineResult]:
    return EpisodeJob(run_baseline, (source, timeout), output_dir, sandbox=source.sandbox)


def batch_job(source: ValidationSource, baseline: Baseline, candidates: list[Candidate],
              timeout: float, output_dir: Path) -> EpisodeJob[list[Judged]]:
    return EpisodeJob(run_batch, (source, baseline, candidates, timeout), output_dir,
                      sandbox=source.sandbox)


__all__ = ["LOCAL_WORKERS", "BaselineResult", "Candidate", "Judged",
           "ValidationSource", "baseline_job", "batch_job", "validation_source"]
