"""Validating candidate bugs in the real sandbox: one long-lived container per worker, holding a
clone of the repository; per candidate, write the buggy file, run the tests that import it, run
every test if some fail, put the file back.

The clone is mounted into the sandbox, where the repository's own tests run and may plant links
or swap files; the host reads the report and writes the candidate's file only through
`WorkspaceFS`, so nothing it reads or writes is ever outside the clone.

A candidate is kept when at least one test that passed (twice) at the original commit fails with
the bug (FAIL_TO_PASS), the others still pass (PASS_TO_PASS), and with the original file every
listed test passes when run as the reward runs them (FAIL_TO_PASS first); otherwise it is
rejected with one of REJECTIONS.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from finetune.pytest_outcomes import REPORT_ARGS, TestReport, parse_report
from finetune.synthesis_repo import BASE_BRANCH, RepositoryError
from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.workspace_fs import FileAccessError, WorkspaceFS
from trajectories.verify import test_invocation

REJECTIONS = {
    "survived": "no test fails with the bug",
    "collection": "the bug breaks test collection (a test module no longer imports)",
    "timeout": "a test run took longer than the time limit",
    "error": "pytest itself failed (internal error, usage error, crash)",
    "gold_fails": "with the fix, the listed tests do not all pass in the order verify runs "
                  "them (order-dependent tests)",
}
SCRATCH = ".apprentice-synthesis"
"""Folder in the worker's clone (git-ignored there) where pytest's report is written."""
MAX_REPORT_BYTES = 64_000_000
"""Largest pytest report read back from the sandbox."""
_NOT_FOUND = re.compile(r"^ERROR: not found: (.+?)\s*$", re.M)
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")


@dataclass
class TestRun:
    """One run of the tests in a worker's sandbox."""

    report: TestReport
    exit_code: int | None
    timed_out: bool
    duration_s: float
    output: str


@dataclass
class Baseline:
    """The tests at the original commit: those that passed twice, and how long a run takes."""

    passing: list[str]
    collection_errors: list[str]
    excluded: list[str]
    """Tests that failed, errored or flaked at the original commit (never FAIL_TO_PASS)."""
    duration_s: float


@dataclass
class Verdict:
    """What became of one candidate."""

    reason: str
    """`kept` or one of REJECTIONS."""
    fail_to_pass: list[str] = field(default_factory=list)
    pass_to_pass: list[str] = field(default_factory=list)
    report: TestReport | None = None
    runs: int = 0


class SynthesisWorker:
    """A sandbox with its own clone of the repository, reused for many candidates."""

    def __init__(self, name: str, origin: Path, folder: Path, test_command: str,
                 sandbox_for: Callable[[Path], SandboxConfig]) -> None:
        """Clone `origin` (a repository or a git bundle, at BASE_BRANCH) into `folder`, and
        start the sandbox `sandbox_for(folder)` names on it."""
        self.name, self.folder, self.test_command = name, folder, test_command
        self.files = WorkspaceFS(folder)
        if folder.exists():
            shutil.rmtree(folder)
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", "-b", BASE_BRANCH,
                        str(origin), str(folder)], check=True, capture_output=True,
                       timeout=600)
        (folder / SCRATCH).mkdir()
        with (folder / ".git" / "info" / "exclude").open("a") as handle:
            handle.write(f"\n{SCRATCH}/\n")
        self.sandbox_config = sandbox_for(folder)
        self.sandbox: Sandbox = make_sandbox(self.sandbox_config, folder)

    def run_tests(self, selection: list[str], timeout: float) -> TestRun:
        """Run the test command on `selection` (files or node ids; empty: all tests)."""
        out = f"{SCRATCH}/out.txt"
        command = test_invocation(f"{self.test_command} {REPORT_ARGS}", selection, [])
        started = time.monotonic()
        result = self.sandbox.run(f"{command} > {out} 2>&1", timeout=timeout)
        duration = time.monotonic() - started
        try:
            output = self.files.read_bytes(out, MAX_REPORT_BYTES).decode(errors="replace")
        except (FileNotFoundError, FileAccessError):  # missing, or made a link out of the clone
            output = result.output
        return TestRun(parse_report(output), result.exit_code, result.timed_out, duration,
                       output)

    def baseline(self, timeout: float) -> Baseline:
        """Run every test, then the passing ones by id; keep those that passed both times."""
        first = self.run_tests([], timeout)
        passing = first.report.with_outcome("passed")
        if not passing:
            raise RepositoryError(_no_tests_reason(self.name, self.test_command, first))
        excluded = sorted(set(first.report.outcomes) - set(passing))
        for _ in range(3):
            again = self.run_tests(passing, timeout)
            missing = set(_NOT_FOUND.findall(again.output))
            stable = [t for t in passing if t not in missing
                      and again.report.outcomes.get(t) == "passed"]
            excluded += sorted(set(passing) - set(stable))
            if stable == passing and again.exit_code == 0:
                return Baseline(passing, first.report.collection_errors, sorted(excluded),
                                again.duration_s)
            passing = stable
            if not passing:
                break
        raise RepositoryError(f"{self.name}: the tests do not pass reliably at the "
                              f"original commit when run by node id "
                              f"({self.test_command}); last output:\n"
                              f"{again.output[-1500:]}")

    def validate(self, path: str, original: str, buggy: str, baseline: Baseline,
                 selection: list[str] | None, timeout: float) -> Verdict:
        """Write the buggy file, judge it by the tests, put the original back."""
        owner = self.files.owner()
        self.files.write_text(path, buggy, owner)
        try:
            verdict = self._judge(baseline, selection, timeout)
        finally:
            self.files.write_text(path, original, owner)
        if verdict.reason == "kept":  # the gold patch, judged as verify will: lists in order
            gold = self.run_tests([*verdict.fail_to_pass, *verdict.pass_to_pass], timeout)
            verdict.runs += 1
            if gold.timed_out or gold.exit_code != 0:
                verdict.reason = "gold_fails"
        return verdict

    def _judge(self, baseline: Baseline, selection: list[str] | None,
               timeout: float) -> Verdict:
        passing = set(baseline.passing)
        run = self.run_tests(selection or [], timeout)
        runs = 1
        if run.timed_out:
            return Verdict("timeout", runs=runs)
        if set(run.report.collection_errors) - set(baseline.collection_errors):
            return Verdict("collection", runs=runs)
        failing = [t for t in run.report.with_outcome("failed", "error") if t in passing]
        if not failing:
            return Verdict("survived" if run.exit_code in (0, 1, 5) else "error", runs=runs)
        if selection is not None:  # the tests that import the file noticed: now run them all
            run = self.run_tests(baseline.passing, timeout)
            runs += 1
            if run.timed_out:
                return Verdict("timeout", runs=runs)
            if run.report.collection_errors:
                return Verdict("collection", runs=runs)
            failing = [t for t in run.report.with_outcome("failed", "error")
                       if t in passing]
        still = [t for t in baseline.passing if run.report.outcomes.get(t) == "passed"]
        return Verdict("kept", sorted(failing), still, run.report, runs)

    def close(self) -> None:
        self.sandbox.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _no_tests_reason(name: str, command: str, run: TestRun) -> str:
    """Why no test passed at the original commit, and what fixes it."""
    tail = run.output.strip()[-1200:]
    if "No module named pytest" in run.output:
        return (f"{name}: pytest is not installed in the sandbox image; add it to the "
                "image or to the `setup` of the repository's .apprentice.toml")
    missing = sorted(set(_MISSING_MODULE.findall(run.output)))
    if missing:
        return (f"{name}: no test passed in the sandbox ({command}): the tests import "
                f"{', '.join(missing)}, which the sandbox lacks. Install them with a `setup` "
                "in the repository's .apprentice.toml ([sandbox] setup = \"pip install "
                f"{' '.join(missing)}\", run with APPRENTICE_SETUP_NETWORK=1), or give a "
                f"--test-cmd that runs without them. Output:\n{tail}")
    if not run.report.outcomes:
        return (f"{name}: no tests were found or run by `{command}`; the repository needs "
                "pytest tests (tests/test_*.py), or give --test-cmd. Output:\n" + tail)
    return (f"{name}: no test passes at the original commit with `{command}`; fix the "
            "setup (.apprentice.toml) or --test-cmd. Output:\n" + tail)

