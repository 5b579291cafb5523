"""Task synthesis: bugs planted in real repositories by program transformation, kept only when the
repository's own tests notice them in the sandbox, written as a suite (`finetune.suite`).

    synthesize(SynthesisOptions(repos=[Path("toolz-1.2.0")], out=Path("suites/toolz")))

Per repository: make it a git repository, list candidate bugs in its library files
(`finetune.mutations`), run its tests at the original commit (twice: flaky or failing tests
never become FAIL_TO_PASS), then validate candidates in parallel sandboxes
(`finetune.synthesis_validate`). Each kept candidate becomes a task with a problem statement
written from the failure (`finetune.statements`), the gold patch and an oracle script
(`finetune.synthesis_oracle`). Splits hold out whole repositories or files, so near-duplicates
(same function and kind) never straddle them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

import libcst as cst
from pydantic import BaseModel, Field, field_validator

from agent.executor import EpisodeExecutor, open_executor
from agent.executor_config import ExecutorConfig
from finetune.mutations import KINDS, Site, apply_site, find_sites
from finetune.suite import SuiteTask, write_suite
from finetune.synthesis_jobs import (
    LOCAL_WORKERS,
    Candidate,
    Judged,
    ValidationSource,
    baseline_job,
    batch_job,
    validation_source,
)
from finetune.synthesis_repo import (
    Repository,
    RepositoryError,
    TestSelector,
    prepare_repository,
    source_files,
)
from finetune.synthesis_tasks import build_task
from finetune.synthesis_validate import REJECTIONS, Baseline
from tools.sandbox import SandboxConfig, image_for_repository

DEFAULT_TEST_COMMAND = "python3 -m pytest -q -p no:cacheprovider"
RESERVED = re.compile(r"more[-_.]?itertools", re.I)
"""Sources kept for evaluation only: never synthesized into training tasks."""
REPORT_FILE = "synthesis.json"

Log = Callable[[str], None]


class SynthesisError(ValueError):
    """Synthesis cannot start or a repository cannot be used; the message says what to do."""


class SynthesisOptions(BaseModel):
    """What `agent finetune synthesize` does."""

    repos: list[Path] = Field(min_length=1, description="Git repositories or unpacked sdists.")
    out: Path = Field(description="Suite directory to write.")
    max_tasks: int | None = Field(None, ge=1, description="At most N tasks per repository.")
    per_file: int | None = Field(None, ge=1, description="At most K tasks per source file.")
    max_candidates: int | None = Field(None, ge=1, description="Validate at most N "
                                       "candidates per repository.")
    seed: int = Field(0, description="Orders candidates and picks phrasings and splits.")
    test_command: str | None = Field(None, description="pytest command (default: "
                                     f"`{DEFAULT_TEST_COMMAND}`, with PYTHONPATH=src for a "
                                     "src layout); must accept more arguments.")
    split_by: str = Field("repo", description="`repo` holds whole repositories out, `file` "
                          "holds out files.")
    test_share: float = Field(0.2, ge=0, le=1, description="Share of tasks held out (test).")
    split: str | None = Field(None, description="Put every task in this split (`test` for an "
                              "evaluation-only suite).")
    kinds: list[str] | None = Field(None, description="Kinds of bug (default: all).")
    workers: int = Field(2, ge=1, description="Sandboxes validating at once.")
    timeout: float | None = Field(None, gt=0, description="Seconds per test run (default: 5x "
                                  "the original run, at least 10).")
    recovery_share: float = Field(0.3, ge=0, le=1, description="Share of oracle scripts that "
                                  "recover from a mistake.")
    force: bool = Field(False, description="Replace an existing output suite.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="Where the "
                                     "validation runs: threads here, or a Ray cluster.")
    batch: int = Field(4, ge=1, description="Candidates per Ray job (one sandbox each); the "
                       "local executor's sandboxes outlive their jobs and take one at a time.")

    @field_validator("split_by")
    @classmethod
    def _split_by(cls, value: str) -> str:
        if value not in ("repo", "file"):
            raise ValueError(f"--split-by must be `repo` or `file`, not {value!r}")
        return value

    @field_validator("split")
    @classmethod
    def _split(cls, value: str | None) -> str | None:
        if value not in (None, "train", "test"):
            raise ValueError(f"--split must be `train` or `test`, not {value!r}")
        return value

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str] | None) -> list[str] | None:
        unknown = [k for k in value or [] if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
        return value


def default_test_command(repo: Repository) -> str:
    if any(f.startswith("src/") and f.endswith(".py") for f in repo.files):
        return f"PYTHONPATH=src {DEFAULT_TEST_COMMAND}"
    return DEFAULT_TEST_COMMAND


def is_reserved(source: Path) -> bool:
    """Evaluation-only sources (more-itertools): by name or by the package they hold."""
    return bool(RESERVED.search(Path(source).resolve().name)) or (
        Path(source) / "more_itertools").is_dir()


def _ordered(sites: list[Site], rng: random.Random) -> deque[Site]:
    """Shuffled within each file, then taken from the files in turn (a cap spreads them)."""
    by_file: dict[str, list[Site]] = {}
    for site in sites:
        by_file.setdefault(site.path, []).append(site)
    queues = []
    for path in sorted(by_file):
        rng.shuffle(by_file[path])
        queues.append(deque(by_file[path]))
    order: deque[Site] = deque()
    while queues:
        for queue in list(queues):
            order.append(queue.popleft())
            if not queue:
                queues.remove(queue)
    return order


class RepositoryRun:
    """Synthesis on one repository: the candidates, the workers and the counts."""

    def __init__(self, repo: Repository, options: SynthesisOptions, log: Log) -> None:
        self.repo, self.options, self.log = repo, options, log
        self.counts: Counter[str] = Counter()
        self.kept_kinds: Counter[str] = Counter()
        self.tasks: list[SuiteTask] = []
        self.lock, self.export_lock = threading.Lock(), threading.Lock()
        self.keys_done: set[tuple[str, str, str]] = set()
        self.keys_busy: set[tuple[str, str, str]] = set()
        self.per_file: Counter[str] = Counter()
        self.processes: set[int] = set()
        """The processes that validated candidates (Ray workers, or this one): the report
        counts those other than this one."""
        self.rng = random.Random(f"{options.seed}:{repo.name}")

    def candidates(self) -> deque[Site]:
        sites: list[Site] = []
        for path in source_files(self.repo):
            try:
                sites += find_sites(self.repo.read(path), path, self.options.kinds)
            except (cst.ParserSyntaxError, RecursionError, UnicodeDecodeError):
                self.counts["unparsable_files"] += 1
        self.counts["sites"] = len(sites)
        return _ordered(sites, self.rng)

    def _full(self) -> bool:
        limit = self.options.max_tasks
        tried = self.counts["tried"]
        return ((limit is not None and len(self.tasks) >= limit)
                or (self.options.max_candidates is not None
                    and tried >= self.options.max_candidates))

    def _next(self, queue: deque[Site]) -> Site | None:
        with self.lock:
            deferred = 0
            while queue and not self._full() and deferred <= len(queue):
                site = queue.popleft()
                cap = self.options.per_file
                if site.key in self.keys_done or (cap and self.per_file[site.path] >= cap):
                    continue
                if site.key in self.keys_busy:  # another worker is on its near-duplicate
                    queue.append(site)
                    deferred += 1
                    continue
                self.keys_busy.add(site.key)
                self.counts["tried"] += 1
                return site
            return None

    def _batch(self, queue: deque[Site], size: int,
               selector: TestSelector) -> list[tuple[Site, Candidate]]:
        """Up to `size` candidates to validate; those that need no sandbox recorded here."""
        batch: list[tuple[Site, Candidate]] = []
        while len(batch) < size and (site := self._next(queue)) is not None:
            try:
                original = self.repo.read(site.path)
                buggy = apply_site(site)
                if buggy == original:
                    self._record(site, "no_change", None)
                    continue
                compile(buggy, site.path, "exec")
            except SyntaxError:
                self._record(site, "invalid", None)
                continue
            except Exception as exc:  # counted and logged; one candidate never stops the run
                self._failed(site, f"{type(exc).__name__}: {exc}")
                continue
            batch.append((site, Candidate(len(batch), site.path, original, buggy,
                                          selector.for_module(site.path))))
        return batch

    def _judged(self, batch: list[tuple[Site, Candidate]], judged: list[Judged],
                test_command: str) -> None:
        """Record a validated batch: each kept candidate becomes a task."""
        for (site, candidate), result in zip(batch, judged, strict=True):
            if result.verdict is None:
                self._failed(site, result.error or "no verdict")
                continue
            self.processes.add(result.pid)
            reason, task = result.verdict.reason, None
            if reason == "kept":
                try:
                    task = build_task(self.repo, site, candidate.original, candidate.buggy,
                                      result.verdict, test_command, self.options, self.rng,
                                      self.export_lock)
                except Exception as exc:
                    self._failed(site, f"{type(exc).__name__}: {exc}")
                    continue
            self._record(site, reason, task)

    def _failed(self, site: Site, reason: str) -> None:
        self.log(f"{self.repo.name}: candidate {site.kind} in {site.path}:{site.line} "
                 f"failed: {reason}")
        self._record(site, "error", None)

    def _record(self, site: Site, reason: str, task: SuiteTask | None) -> None:
        with self.lock:
            self.keys_busy.discard(site.key)
            if task is not None and (self.options.max_tasks is None
                                     or len(self.tasks) < self.options.max_tasks):
                self.tasks.append(task)
                self.keys_done.add(site.key)
                self.per_file[site.path] += 1
                self.kept_kinds[site.kind] += 1
                reason = "kept"
            elif reason == "kept":
                reason = "over_limit"
            self.counts[reason] += 1
            if self.counts["tried"] % 25 == 0:
                self.log(f"{self.repo.name}: {self.counts['tried']} tried, "
                         f"{len(self.tasks)} kept")

    def run(self, work_dir: Path) -> dict[str, Any]:
        """Validate candidates through the executor (`options.executor`): the baseline on one
        worker, then batches, `workers` at a time (a Ray cluster schedules by resources)."""
        started = time.monotonic()
        queue = self.candidates()
        command = self.options.test_command or default_test_command(self.repo)
        config = image_for_repository(self.repo.path, self.repo.base, self.options.sandbox,
                                      log=self.log)  # built here first: its errors come early
        remote = self.options.executor.kind != "local"
        source = validation_source(self.repo.name, self.repo.path, self.repo.base, command,
                                   self.options.sandbox, work_dir, portable=remote)
        slots, size = max(1, self.options.workers), self.options.batch if remote else 1
        jobs_dir = work_dir / f"{self.repo.name}.jobs"
        try:
            with open_executor(self.options.executor, slots) as executor:
                baseline = executor.submit(baseline_job(
                    source, max(600.0, self.options.timeout or 0), jobs_dir)).future.result()
                timeout = self.options.timeout or max(10.0, 5 * baseline.baseline.duration_s)
                self.log(f"{self.repo.name}: {len(baseline.baseline.passing)} tests pass at "
                         f"the original commit ({len(baseline.baseline.excluded)} excluded, "
                         f"{baseline.baseline.duration_s:.1f}s a run); {len(queue)} candidates")
                validating = time.monotonic()
                self._validate(executor, source, baseline.baseline, queue, timeout,
                               slots, size, jobs_dir)
                minutes = (time.monotonic() - validating) / 60
        finally:
            LOCAL_WORKERS.close(source)
        return {
            "repo": self.repo.name, "source": str(self.repo.source), "base": self.repo.base,
            "test_command": command, "image": config.image,
            "executor": self.options.executor.kind,
            "remote_processes": len((self.processes | {baseline.pid}) - {os.getpid()}),
            "tests_passing": len(baseline.baseline.passing),
            "tests_excluded": len(baseline.baseline.excluded),
            "test_run_s": round(baseline.baseline.duration_s, 2),
            "time_limit_s": round(timeout, 1),
            "counts": dict(self.counts), "kept": len(self.tasks),
            "kinds": dict(sorted(self.kept_kinds.items())),
            "candidates_per_minute": round(self.counts["tried"] / max(minutes, 1e-9), 1),
            "duration_s": round(time.monotonic() - started, 1),
        }

    def _validate(self, executor: EpisodeExecutor, source: ValidationSource,
                  baseline: Baseline, queue: deque[Site], timeout: float, slots: int,
                  size: int, jobs_dir: Path) -> None:
        """Keep `slots` batches running until the queue is spent or the limits are met."""
        selector = TestSelector(self.repo)
        running: dict[Future[list[Judged]], list[tuple[Site, Candidate]]] = {}
        try:
            while True:
                while len(running) < slots and (batch := self._batch(queue, size, selector)):
                    job = batch_job(source, baseline, [c for _, c in batch], timeout,
                                    jobs_dir)
                    running[executor.submit(job).future] = batch
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    batch = running.pop(future)
                    try:
                        judged = future.result()
                    except Exception as exc:  # the job was lost: its candidates are errors
                        judged = [Judged(c.index, error=f"{type(exc).__name__}: {exc}")
                                  for _, c in batch]
                    self._judged(batch, judged, source.test_command)
        finally:
            for future in running:
                future.cancel()


def assign_splits(tasks: list[SuiteTask], options: SynthesisOptions) -> None:
    """Hold out whole groups (repositories or files) until `test_share` of the tasks."""
    if options.split is not None:
        for task in tasks:
            task.split = options.split
        return
    groups: dict[str, list[SuiteTask]] = {}
    for task in tasks:
        extra = task.model_extra or {}
        key = str(extra["repo_name"]) if options.split_by == "repo" else \
            f"{extra['repo_name']}:{extra['path']}"
        groups.setdefault(key, []).append(task)
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{options.seed}:{k}".encode())
                   .hexdigest())
    wanted, held = options.test_share * len(tasks), 0
    for key in order:
        members = groups[key]
        split = "test" if options.test_share > 0 and len(groups) > 1 and (
            held == 0 or held + len(members) <= wanted) and key != order[-1] else "train"
        if split == "test":
            held += len(members)
        for task in members:
            task.split = split


def _repository_run(source: Path, work: Path, options: SynthesisOptions,
                    log: Log) -> RepositoryRun:
    repo = prepare_repository(source, work)
    if not any(f.endswith(".py") for f in source_files(repo)):
        raise SynthesisError(f"{source} has no Python source files to plant bugs in")
    if not TestSelector(repo).tests:
        raise SynthesisError(f"{source} has no tests (test_*.py or *_test.py files): "
                             "synthesis keeps only bugs its tests notice")
    return RepositoryRun(repo, options, log)


def synthesize(options: SynthesisOptions, log: Log = print) -> dict[str, Any]:
    """Write the suite; return the report (also written to OUT/synthesis.json)."""
    out = Path(options.out)
    if out.exists() and any(out.iterdir()):
        if not options.force:
            raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
        shutil.rmtree(out)
    reserved = [str(r) for r in options.repos if is_reserved(r)]
    if reserved and options.split != "test":
        raise SynthesisError(f"{', '.join(reserved)} is reserved for evaluation: never "
                             "synthesize training tasks from it (use --split test for an "
                             "evaluation-only suite)")
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    started = time.monotonic()
    tasks: list[SuiteTask] = []
    repos: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    try:
        for source in options.repos:
            try:
                run = _repository_run(source, work, options, log)
                summary = run.run(work)
            except (SynthesisError, RepositoryError) as exc:
                if len(options.repos) == 1:
                    raise SynthesisError(str(exc)) from None
                log(f"skipped {source}: {exc}")  # one bad repository spoils not the others
                skipped[str(source)] = str(exc)
                continue
            repos.append(summary)
            tasks += sorted(run.tasks, key=lambda t: t.instance_id)
            log(f"{run.repo.name}: kept {summary['kept']} of {summary['counts'].get('tried', 0)} "
                f"candidates ({summary['candidates_per_minute']}/min)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if skipped and not repos:
        raise SynthesisError("no repository could be used: " + "; ".join(skipped.values()))
    assign_splits(tasks, options)
    report = {
        "tasks": len(tasks), "splits": dict(Counter(t.split for t in tasks)),
        "duration_s": round(time.monotonic() - started, 1), "repos": repos,
        "skipped": skipped,
        "options": json.loads(options.model_dump_json(exclude={"sandbox"})),
    }
    meta = {"name": out.name, "generator": "finetune.synthesis", "seed": options.seed,
            "split_by": options.split_by, "kinds": options.kinds or list(KINDS),
            "description": "Bugs planted in real repositories, kept when their tests notice."}
    write_suite(out, tasks, meta)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["REJECTIONS", "SynthesisError", "SynthesisOptions", "synthesize"]
