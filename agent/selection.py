"""Pick one of several attempts at a task by running them, seeing only what the agent sees.

The selector is given a `VisibleTask` (the repository at the base commit, the issue and its
test command) and the candidates' patches. It never gets the task's FAIL_TO_PASS or
PASS_TO_PASS lists, its `test_patch` or any reward: `VisibleTask.of` copies none of them.
Its signals, in the order they decide (an earlier one outranks every later one):

1. `kept`: 2 for a patch that changes code, applies and breaks no visible test that passed at
   the base commit; 1 for one that breaks such a test; 0 for an empty patch (or one that only
   touches comments, docstrings or tests), one that does not apply, or a lost attempt.
2. `visible_tests`: the tests that pass when the task's test command runs on the candidate's
   source change (its own test files left out) in a fresh sandbox.
3. `reproduction_tests`: the test files the attempts wrote, kept where they fail at the base
   commit, each run against every candidate: how many it passes. A candidate's own tests count
   too, so writing a test that its fix passes is never a handicap against a candidate that
   passes it without having written one.
4. `vote`: how many candidates made the same change in normal form (`agent.patches`).
5. `judge` (when asked): a model call that picks between the changes still tied at the top.

What is still tied goes to the earliest attempt.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.judge import Verdict
from agent.patches import change_id, split_patch
from agent.selection_runs import (
    TestRun,
    TestSandbox,
    reproduction_command,
    stage_tree,
    visible_command,
)
from agent.tasks import Task
from tools.sandbox import SandboxConfig
from tools.sandbox.pool import SandboxPool

SIGNALS = ("kept", "visible_tests", "reproduction_tests", "vote", "judge")
Judge = Callable[[str, list[str]], Verdict]
"""(problem statement, patches) -> which one (`agent.judge.PatchJudge`)."""
WHOLE_COMMAND = "(the test command)"
"""What `broken` names when the test command passed at the base commit and fails now, where
the runner reports no single tests."""


def selector_signals(vote: bool = True, judge: bool = False) -> tuple[str, ...]:
    """The signals a selector uses: the tests always, then the vote and the judge if asked."""
    return tuple(s for s in SIGNALS if (s != "vote" or vote) and (s != "judge" or judge))


@dataclass(frozen=True)
class VisibleTask:
    """What the selector may know of a task: what the agent was shown, nothing the reward
    reads."""

    repo: Path
    base_commit: str
    problem_statement: str
    test_command: str
    sandbox: SandboxConfig
    """The sandbox the attempts ran in (the task's setup image, if it has one)."""

    @classmethod
    def of(cls, task: Task, base_commit: str, sandbox: SandboxConfig) -> VisibleTask:
        return cls(Path(task.repo), base_commit, task.problem_statement, task.test_command,
                   sandbox)


@dataclass(frozen=True)
class Candidate:
    """One attempt's patch, or why the attempt is no candidate (`lost`: it crashed, it was
    interrupted, it timed out)."""

    attempt: int
    patch: str
    lost: str | None = None


@dataclass
class Signals:
    """What the selector found out about one candidate."""

    attempt: int
    lost: str | None = None
    empty: bool = False
    apply_error: str | None = None
    change_id: str | None = None
    wrote_tests: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    visible_passed: int | None = None
    visible_exit_code: int | None = None
    reproduction_passed: int = 0
    reproduction_of: int = 0
    votes: int = 0
    judge: int | None = None

    @property
    def contender(self) -> bool:
        """A patch that changes code and applies, from an attempt that was not lost."""
        return not (self.lost or self.empty or self.apply_error)

    def score(self, signal: str) -> int:
        if signal == "kept":
            return 0 if not self.contender else 1 if self.broken else 2
        if signal == "visible_tests":
            return -1 if self.visible_passed is None else self.visible_passed
        if signal == "reproduction_tests":
            return self.reproduction_passed
        if signal == "vote":
            return self.votes
        if signal == "judge":
            return self.judge or 0
        raise ValueError(f"unknown signal {signal!r}; the signals are {', '.join(SIGNALS)}")

    def record(self) -> dict[str, Any]:
        """Every signal's score, then what it was computed from."""
        scores: dict[str, Any] = {s: self.score(s) for s in SIGNALS}
        scores["details"] = {
            "empty": self.empty, "apply_error": self.apply_error, "change_id": self.change_id,
            "wrote_tests": self.wrote_tests, "broken": self.broken[:20],
            "visible_exit_code": self.visible_exit_code,
            "reproduction": f"{self.reproduction_passed}/{self.reproduction_of}",
            "judge_asked": self.judge is not None}
        return scores


def rank(signals: Sequence[Signals], used: Sequence[str]) -> list[int]:
    """Attempts best first under the signals `used`; lost attempts last; ties: earliest."""
    return [s.attempt for s in sorted(signals, key=lambda s: (
        s.lost is not None, [-s.score(u) for u in used], s.attempt))]


@dataclass
class SelectionOutcome:
    """The selector's verdict and everything it is based on."""

    signals: list[Signals]
    used: tuple[str, ...]
    ranking: list[int]
    selected: int | None
    commands: list[str]
    notes: list[str]
    duration_s: float

    def pick(self, used: Sequence[str]) -> int | None:
        """The attempt another selector (fewer signals) would have picked from the same runs."""
        order = rank(self.signals, used)
        by_attempt = {s.attempt: s for s in self.signals}
        return next((a for a in order if by_attempt[a].lost is None), None)


@dataclass
class _TestSet:
    """Tests one or more attempts wrote (the same diff counts once)."""

    diff: str
    files: list[str]
    authors: list[int]


class _Runs:
    """The sandbox runs of one selection, and the record of what ran."""

    def __init__(self, task: VisibleTask, pool: SandboxPool | None, timeout: float, tmp: Path):
        self.task, self.pool, self.timeout, self.tmp = task, pool, timeout, tmp
        self.commands: list[str] = []
        self._lock = threading.Lock()
        self._trees = 0

    def _tree(self, diffs: list[str]) -> tuple[Path, str | None]:
        with self._lock:
            self._trees += 1
            dest = self.tmp / f"tree-{self._trees}"
        return dest, stage_tree(self.task.repo, self.task.base_commit, diffs, dest)

    def _note(self, what: str, command: str) -> None:
        with self._lock:
            self.commands.append(f"{what}: {command}")

    def on(self, what: str, source: str, test_sets: list[_TestSet]) -> tuple[TestRun,
                                                                              list[TestRun]]:
        """In one fresh sandbox: the visible tests on `source`, then each of `test_sets` on
        `source` plus that set."""
        command = visible_command(self.task.test_command)
        with TestSandbox(self.task.sandbox, self.pool) as box:
            tree, error = self._tree([source])
            self._note(what, command)
            visible = TestRun(command, None, error=error) if error else \
                box.run(tree, command, self.timeout)
            results = []
            for tests in test_sets:
                repro = reproduction_command(self.task.test_command, tests.files) or ""
                tree, error = self._tree([source, tests.diff])
                self._note(f"{what} + tests of attempt {tests.authors[0]}", repro)
                results.append(TestRun(repro, None, error=error) if error else
                               box.run(tree, repro, self.timeout))
        return visible, results


def _broken(base: TestRun, run: TestRun) -> list[str]:
    """Visible tests that passed at the base commit and do not pass on the candidate."""
    if base.outcomes is not None:
        after = run.outcomes or {}
        passed_before = [t for t, o in base.outcomes.items() if o == "passed"]
        if run.complete and run.error is None:
            return sorted(t for t in passed_before if after.get(t) != "passed")
        return sorted(t for t in passed_before if after.get(t) in ("failed", "error"))
    return [WHOLE_COMMAND] if base.passed and not run.passed else []


def _visible_passed(run: TestRun) -> int:
    if run.error is not None:
        return 0
    if run.passed_count is not None:
        return run.passed_count
    if run.outcomes is not None:
        return sum(o == "passed" for o in run.outcomes.values())
    return int(run.passed)


def _read_patches(task: VisibleTask, candidates: list[Candidate]) -> tuple[
        list[Signals], dict[int, str], list[_TestSet]]:
    """Each candidate's signals so far (empty, applies, change), source part, and the test
    sets the attempts wrote."""
    signals: list[Signals] = []
    sources: dict[int, str] = {}
    sets: dict[str, _TestSet] = {}
    for candidate in candidates:
        found = Signals(candidate.attempt, lost=candidate.lost)
        signals.append(found)
        if candidate.lost:
            continue
        split = split_patch(candidate.patch)
        sources[candidate.attempt] = split.source
        if split.tests.strip():
            found.wrote_tests = list(split.test_files)
            sets.setdefault(split.tests, _TestSet(split.tests, list(split.test_files), []))
            sets[split.tests].authors.append(candidate.attempt)
        try:
            found.change_id = change_id(task.repo, task.base_commit, split.source)
        except ValueError as exc:
            found.apply_error = str(exc)
        found.empty = found.change_id is None and found.apply_error is None
    return signals, sources, list(sets.values())


def _measure(runs: _Runs, signals: list[Signals], sources: dict[int, str],
             test_sets: list[_TestSet], workers: int, notes: list[str]) -> None:
    """Run the visible and reproduction tests, at the base commit and on each contender."""
    if test_sets and reproduction_command(runs.task.test_command, ["x"]) is None:
        notes.append("reproduction tests not run: the test command is not pytest, whose "
                     "files can be selected")
        test_sets = []
    base, at_base = runs.on("base commit", "", test_sets)
    reproducing = [t for t, r in zip(test_sets, at_base, strict=True)
                   if not r.passed and r.error is None]
    for tests, run in zip(test_sets, at_base, strict=True):
        if tests not in reproducing:
            notes.append(f"tests of attempt {', '.join(map(str, tests.authors))} left out: "
                         + (run.error or "they pass at the base commit"))
    contenders = [s for s in signals if s.contender]
    distinct = list(dict.fromkeys(sources[s.attempt] for s in contenders))
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="select") as pool:
        measured = dict(zip(distinct, pool.map(
            lambda source: runs.on(f"attempt {_first(contenders, sources, source)}", source,
                                   reproducing), distinct), strict=True))
    for found in contenders:
        visible, repro = measured[sources[found.attempt]]
        found.broken = _broken(base, visible)
        found.visible_passed, found.visible_exit_code = _visible_passed(visible), \
            visible.exit_code
        found.reproduction_passed = sum(r.passed for r in repro)
        found.reproduction_of = len(repro)


def _first(contenders: list[Signals], sources: dict[int, str], source: str) -> int:
    return next(s.attempt for s in contenders if sources[s.attempt] == source)


def _ask_judge(judge: Judge, task: VisibleTask, signals: list[Signals],
               sources: dict[int, str], used: tuple[str, ...], notes: list[str]) -> None:
    """Let the judge pick between the changes tied at the top under the other signals."""
    before = tuple(u for u in used if u != "judge")
    contenders = [s for s in signals if s.contender]
    if not contenders:
        return
    top = max([s.score(u) for u in before] for s in contenders)
    tied = [s for s in contenders if [s.score(u) for u in before] == top]
    changes = list(dict.fromkeys(s.change_id for s in tied))
    if len(changes) < 2:
        notes.append("judge not asked: no tie between different changes")
        return
    shown_by = [next(s.attempt for s in tied if s.change_id == c) for c in changes]
    shown = [sources[attempt] for attempt in shown_by]
    verdict = judge(task.problem_statement, shown)
    for found in tied:
        found.judge = int(verdict.choice is not None and found.change_id ==
                          changes[verdict.choice])
    if verdict.error:
        notes.append(verdict.error)
    else:
        notes.append(f"judge picked the change of attempt {shown_by[verdict.choice or 0]} "
                     f"of {len(changes)} tied")


def select_patch(task: VisibleTask, candidates: list[Candidate], vote: bool = True,
                 judge: Judge | None = None, pool: SandboxPool | None = None,
                 workers: int = 2, timeout: float = 600.0) -> SelectionOutcome:
    """Measure every candidate (module docstring) and pick one: the best-ranked attempt that
    was not lost (None if all were). `workers` sandboxes run at once."""
    started = time.monotonic()
    used = selector_signals(vote, judge is not None)
    notes: list[str] = []
    signals, sources, test_sets = _read_patches(task, candidates)
    votes = Counter(s.change_id for s in signals if s.contender)
    for found in signals:
        found.votes = votes[found.change_id] if found.contender else 0
    commands: list[str] = []
    if any(s.contender for s in signals):
        with tempfile.TemporaryDirectory(prefix="apprentice-selection-") as tmp:
            runs = _Runs(task, pool, timeout, Path(tmp))
            _measure(runs, signals, sources, test_sets, workers, notes)
            commands = runs.commands
    else:
        notes.append("no candidate changes any code: nothing to run")
    if judge is not None:
        _ask_judge(judge, task, signals, sources, used, notes)
    ranking = rank(signals, used)
    outcome = SelectionOutcome(signals, used, ranking, None, commands, notes,
                               round(time.monotonic() - started, 3))
    outcome.selected = outcome.pick(used)
    return outcome
