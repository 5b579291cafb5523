"""A suite task's episode as an `agent.executor.EpisodeJob`: plain data a Ray worker can run.

The job carries the task line, the episode's settings, and its repository: the suite's bundle
path where the runner shares this filesystem (the local executor), else the bundle's bytes
(a plain repository folder is bundled first). The oracle's scripted server is started where
the episode runs, so a remote worker reaches it on its own 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from agent.episode import Episode, EpisodeConfig
from agent.executor import EpisodeJob
from agent.solve import SolveResult, solve
from finetune.oracle import ORACLE_TOOL_SET, ScriptedPolicyServer
from finetune.suite import GIT_TIMEOUT_S, Suite, SuiteError, SuiteTask, checkout_task
from tools.sandbox.pool import SandboxPool

BUNDLE_NAME = "repo.bundle"


@dataclass(frozen=True)
class TaskSource:
    """A suite task and where its repository comes from: `repository` (a bundle or folder
    the runner can read) or `bundle` (its bytes)."""

    task: SuiteTask
    repository: str | None = None
    bundle: bytes | None = None


@lru_cache(maxsize=256)
def _bundle_bytes(path: str, mtime_ns: int) -> bytes:
    """A repository as git bundle bytes (a bundle file as it is; a folder bundled)."""
    source = Path(path)
    if source.is_file():
        return source.read_bytes()
    with tempfile.TemporaryDirectory(prefix="apprentice-bundle-") as tmp:
        target = Path(tmp) / BUNDLE_NAME
        proc = subprocess.run(["git", "-C", path, "bundle", "create", str(target), "--all"],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
        if proc.returncode != 0:
            raise SuiteError(f"could not bundle {path}: {proc.stderr.strip()}")
        return target.read_bytes()


def bundle_bytes(path: Path) -> bytes:
    """The repository at `path` (a bundle or a folder) as git bundle bytes (cached)."""
    return _bundle_bytes(str(path), path.stat().st_mtime_ns)


def task_source(suite: Suite, task: SuiteTask, portable: bool) -> TaskSource:
    """The task with its repository's path, or (`portable`) its bundle's bytes."""
    path = (suite.path / task.repo_path).resolve()
    if not portable or not path.exists():  # a missing repository is reported where it runs
        return TaskSource(task, repository=str(path))
    return TaskSource(task, bundle=bundle_bytes(path))


def run_suite_episode(source: TaskSource, config: EpisodeConfig, oracle: bool, *,
                      output_dir: Path, pool: SandboxPool | None,
                      on_open: Callable[[Episode], None]) -> SolveResult:
    """One recorded, verified episode on a fresh clone of the task's repository; with
    `oracle`, against the task's scripted policy (a server of its own)."""
    task = source.task
    config = config.model_copy(update={"output_dir": output_dir})
    with tempfile.TemporaryDirectory(prefix="apprentice-episode-") as tmp:
        if source.bundle is not None:
            (Path(tmp) / BUNDLE_NAME).write_bytes(source.bundle)
            where = Suite(Path(tmp), [])
            task = task.model_copy(update={"repo_path": BUNDLE_NAME})
        else:
            repository = Path(source.repository or task.repo_path)
            where = Suite(repository.parent, [])
            task = task.model_copy(update={"repo_path": repository.name})
        repo_task = checkout_task(where, task, Path(tmp) / "repo")
        if not oracle:
            return solve(repo_task, config, pool=pool, on_open=on_open)
        if not task.oracle:
            raise SuiteError(f"task {task.instance_id} has no oracle script")
        with ScriptedPolicyServer(task.oracle) as server:
            config = config.model_copy(update={"llm": server.llm_config(),
                                               "tools": config.tools or ORACLE_TOOL_SET})
            return solve(repo_task, config, pool=pool, on_open=on_open)


def suite_job(suite: Suite, task: SuiteTask, config: EpisodeConfig, output_dir: Path,
              oracle: bool = False, portable: bool = False) -> EpisodeJob:
    """The job of one episode on `task` (`portable`: for workers on other machines)."""
    return EpisodeJob(run_suite_episode, (task_source(suite, task, portable), config, oracle),
                      Path(output_dir), sandbox=config.sandbox)
