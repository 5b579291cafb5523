"""An attempt of `agent solve --samples` as a job another machine can run (`--executor ray`).

The user's repository travels as a git bundle of the base commit; the worker clones it and
runs the attempt there (its branch stays in that clone: the patch and the trajectory come
back, which is all the selector and the user read).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from agent.episode import Episode, EpisodeConfig
from agent.solve import SolveResult, solve
from agent.tasks import Task
from tools.sandbox.pool import SandboxPool

GIT_TIMEOUT_S = 300
BRANCH = "apprentice-base"


def bundle_commit(repo: Path, commit: str) -> bytes:
    """`commit` of `repo` (and its history) as git bundle bytes."""
    with tempfile.TemporaryDirectory(prefix="apprentice-bundle-") as tmp:
        target = Path(tmp) / "repo.bundle"
        for args in (["branch", "-f", BRANCH, commit],
                     ["bundle", "create", str(target), BRANCH], ["branch", "-D", BRANCH]):
            proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                  text=True, timeout=GIT_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(f"could not bundle {repo} at {commit} for the Ray workers: "
                                   f"git {args[0]}: {proc.stderr.strip()}")
        return target.read_bytes()


def run_bundled_attempt(bundle: bytes, task: Task, config: EpisodeConfig, *, output_dir: Path,
                        pool: SandboxPool | None,
                        on_open: Callable[[Episode], None]) -> SolveResult:
    """One attempt on a clone of `bundle` at the task's base commit."""
    with tempfile.TemporaryDirectory(prefix="apprentice-attempt-") as tmp:
        source, repo = Path(tmp) / "repo.bundle", Path(tmp) / "repo"
        source.write_bytes(bundle)
        subprocess.run(["git", "clone", "--quiet", "-b", BRANCH, str(source), str(repo)],
                       check=True, capture_output=True, timeout=GIT_TIMEOUT_S)
        local = task.model_copy(update={"repo": str(repo)})
        return solve(local, config.model_copy(update={"output_dir": output_dir}), pool=pool,
                     on_open=on_open)
