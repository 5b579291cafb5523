"""Where the selector runs tests: trees staged on the host, copied into a fresh sandbox.

A tree is the repository at the base commit with some diffs applied (a candidate's source
change, another attempt's tests), built with git in a folder no sandbox ever sees
(`stage_tree`). A `TestSandbox` is one started sandbox; `run` empties its workspace, copies a
staged tree in and runs a command there. The host only deletes and copies files in the folder
the sandbox has written to, and never runs git there (see `tools.host_git` for why).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.sandbox.pool import SandboxPool
from trajectories.pytest_outcomes import parse_report
from trajectories.test_runners import PYTEST, runner_for_command
from trajectories.verify import apply_diff, export_tree

REPORT_ARGS = "-rA --tb=no -p no:cacheprovider --continue-on-collection-errors"
"""Added to a pytest command so its report names every test's outcome, briefly."""
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?)\b")


def is_pytest(test_command: str) -> bool:
    return "pytest" in test_command and runner_for_command(test_command) is PYTEST


def visible_command(test_command: str) -> str:
    """The task's own test command, with a per-test report where it is pytest."""
    return f"{test_command} {REPORT_ARGS}" if is_pytest(test_command) else test_command


def reproduction_command(test_command: str, test_files: list[str]) -> str | None:
    """The task's test command run on `test_files` only (as verify runs listed tests), or None
    where the runner cannot select files (it is not pytest)."""
    if not is_pytest(test_command) or not test_files:
        return None
    return PYTEST.invocation(f"{test_command} {REPORT_ARGS}", test_files)


@dataclass
class TestRun:
    """What one command said: its exit code, and per test where pytest reported them."""

    command: str
    exit_code: int | None
    timed_out: bool = False
    outcomes: dict[str, str] | None = None
    """Node id -> passed, failed, error ...; None when the output names no test."""
    passed_count: int | None = None
    """Tests passed, from pytest's last line; None where it printed none."""
    complete: bool = True
    """False when the output was cut, so a test missing from `outcomes` may still have run."""
    error: str | None = None
    """Why it could not run (a diff that does not apply)."""

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None


def read_run(command: str, output: str, exit_code: int | None, timed_out: bool,
             truncated: bool) -> TestRun:
    report = parse_report(output)
    counts: dict[str, int] = {}
    tail = [line for line in output.strip().splitlines()[-3:] if " in " in line]
    for number, word in _COUNTS.findall(tail[-1] if tail else ""):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return TestRun(command, exit_code, timed_out, report.outcomes or None,
                   counts.get("passed", 0) if counts else None, not truncated)


def stage_tree(repo: Path, commit: str, diffs: list[str], dest: Path) -> str | None:
    """`dest` := the files of `commit` (a fresh git repository) with `diffs` applied in order;
    the reason when one does not apply, else None."""
    dest.mkdir(parents=True)
    export_tree(repo, commit, dest)
    for diff in diffs:
        if not diff.strip():
            continue
        reason = apply_diff(dest, diff)
        if reason is not None:
            return reason
    return None


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class TestSandbox:
    """One fresh sandbox (from `pool` when its configuration is `config`) that runs commands on
    staged trees, one after another. Close it (or use `with`) to remove it."""

    def __init__(self, config: SandboxConfig, pool: SandboxPool | None = None):
        self._own_folder: Path | None = None
        if pool is not None and pool.config == config:
            self.sandbox, self.folder = pool.acquire()
        else:
            self._own_folder = Path(tempfile.mkdtemp(prefix="apprentice-select-"))
            self.folder = self._own_folder
            try:
                self.sandbox = make_sandbox(config, self.folder)
            except BaseException:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise
        self._box: Sandbox | None = self.sandbox

    def run(self, tree: Path, command: str, timeout: float) -> TestRun:
        """Replace the workspace with a copy of `tree`, then run `command` in it (in a
        subshell, so a `cd` or `export` in it does not reach the next command)."""
        if self._box is None:
            raise RuntimeError("the test sandbox is closed")
        try:
            _empty(self.folder)
            shutil.copytree(tree, self.folder, symlinks=True, dirs_exist_ok=True)
        except OSError as exc:  # a file the last run left that the host may not remove
            return TestRun(command, None, error=f"could not reset the workspace: {exc}")
        result = self._box.run(f"(\n{command}\n)", timeout=timeout)
        return read_run(command, result.output, result.exit_code, result.timed_out,
                        bool(result.truncated_chars))

    def close(self) -> None:
        """Remove the sandbox and its folder; safe to call twice."""
        box, self._box = self._box, None
        if box is not None:
            try:
                box.close()
            finally:
                shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TestSandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
