"""How each repository's tests are run, the way the SWE-bench harness runs them.

SWE-bench names tests in its runner's own words: pytest node ids for most repositories,
`test_x (module.Class)` for Django (unittest's description), bare function names for Sympy. A
`TestRunner` knows a repository's test command and how to turn those names into its arguments;
`RUNNERS` is the table, keyed by the instance's `repo` (`django/django`), with pytest as the
default. `runner_for_command` finds the runner back from a test command, so the verifier needs
nothing but the command a task carries.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/", re.MULTILINE)
_UNITTEST_NAME = re.compile(r"^(?P<method>\w+) \((?P<cls>[\w.]+)\)$")


def django_label(test_id: str) -> str | None:
    """`test_x (module.Class)` as the label runtests.py takes, `module.Class.test_x`; None for
    names that are a docstring's first line (unittest prints those instead for some tests)."""
    match = _UNITTEST_NAME.match(test_id.strip())
    return f"{match['cls']}.{match['method']}" if match else None


def _django_arguments(test_ids: list[str]) -> list[str]:
    labels = (django_label(t) for t in test_ids)
    return list(dict.fromkeys(label for label in labels if label))


def _no_arguments(test_ids: list[str]) -> list[str]:
    """Sympy's bin/test selects files, not functions (its -k takes one keyword): the files
    are part of the command (`test_files`), and the test names add nothing to it."""
    return []


def _as_given(test_ids: list[str]) -> list[str]:
    return list(test_ids)


@dataclass(frozen=True)
class TestRunner:
    """One repository's way of running tests."""

    name: str
    command: str
    """The test command, without test selection (SWE-bench's `test_cmd`)."""
    arguments: Callable[[list[str]], list[str]]
    """SWE-bench test ids -> this runner's arguments selecting them."""
    files_in_command: Callable[[list[str]], list[str]] | None = None
    """Test files (of the test patch) -> arguments the command must carry, for runners that
    cannot select single tests by name; None when names select tests precisely."""

    def invocation(self, test_command: str, test_ids: list[str]) -> str:
        """`test_command` selecting `test_ids` (all tests when there are none)."""
        selected = self.arguments(list(dict.fromkeys(test_ids)))
        return " ".join([test_command, *(shlex.quote(a) for a in selected)])

    def task_command(self, test_patch: str = "") -> str:
        """The command a task of this repository runs: `command`, plus the test files of
        `test_patch` where the runner selects by file (as SWE-bench does)."""
        if self.files_in_command is None:
            return self.command
        files = [p for p in dict.fromkeys(_DIFF_FILE.findall(test_patch)) if p.endswith(".py")]
        return " ".join([self.command, *(shlex.quote(a) for a in self.files_in_command(files))])


PYTEST = TestRunner("pytest", "python3 -m pytest -q", _as_given)
RUNNERS: dict[str, TestRunner] = {
    "django/django": TestRunner(
        "django", "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
        _django_arguments),
    "sympy/sympy": TestRunner(
        "sympy",
        "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose",
        _no_arguments, list),
}
"""SWE-bench's repositories whose tests are not run with pytest node ids."""

def runner_for_repo(repo: str | None) -> TestRunner:
    """The runner of a SWE-bench `repo` (`owner/name`; a URL or path ending so works too)."""
    key = "/".join((repo or "").rstrip("/").removesuffix(".git").split("/")[-2:])
    return RUNNERS.get(key, PYTEST)


def runner_for_command(test_command: str) -> TestRunner:
    """The runner whose command `test_command` starts with; pytest's rule (ids as given)
    for any other command."""
    for runner in RUNNERS.values():
        if test_command.strip().startswith(runner.command):
            return runner
    return PYTEST
