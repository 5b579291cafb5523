"""Oracle scripts for synthesized tasks: the tool calls (core tool set) of a policy that knows
the fix, with varied exploration and a share of episodes that recover from a mistake.

Styles: `grep_first` (grep the function, view it, fix, test, finish), `test_first` (view the
failing test first), `run_first` (run the failing test, see it fail, then fix) and `wrong_edit`
(a wrong first edit, a failing run, then the right fix).

The oracle only greps for a name it could have read: when the statement does not name the
function, `grep_first` and `wrong_edit` view the failing test first (which calls it), so the
model never learns to grep for a name it was not shown.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass
from typing import Any

from trajectories.verify import test_invocation

STYLES = ("grep_first", "test_first", "run_first", "wrong_edit")
VIEW_LINES = 30
"""How many lines from the function's `def` the oracle views (more when the fix lies further
down: the view always shows the changed lines and a few after them)."""


@dataclass
class Edit:
    """A str_replace that turns one source into another: `old` occurs once in the source."""

    old: str
    new: str
    line: int
    """1-based first line of `old` in the source."""


def unique_edit(before: str, after: str) -> Edit:
    """The smallest block of whole lines (grown with context until unique) that changes."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    changes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    if not changes:
        raise ValueError("the two sources are the same")
    start_a, end_a = changes[0][1], changes[-1][2]
    start_b, end_b = changes[0][3], changes[-1][4]
    while True:
        old, new = "".join(a[start_a:end_a]), "".join(b[start_b:end_b])
        if old and before.count(old) == 1:
            return Edit(old, new, start_a + 1)
        if start_a == 0 and end_a == len(a):
            raise ValueError("no unique block of lines holds the change")
        if start_a > 0:
            start_a, start_b = start_a - 1, start_b - 1
        if end_a < len(a):
            end_a, end_b = end_a + 1, end_b + 1


def def_line(source: str, function: str, near: int) -> int:
    """Line of `def <last part of function>` at or above line `near` (1 if none)."""
    name = function.split(".")[-1]
    pattern = re.compile(rf"^\s*(async\s+)?def {re.escape(name)}\b")
    lines = source.splitlines()
    for number in range(min(near, len(lines)), 0, -1):
        if pattern.match(lines[number - 1]):
            return number
    return 1


def _view(path: str, line: int, through: int = 0) -> dict[str, Any]:
    end = max(line + VIEW_LINES, through + 3)
    return {"name": "view", "arguments": {"path": path, "view_range": [line, end]}}


def oracle_script(path: str, buggy: str, original: str, function: str, test_id: str,
                  test_source: str, test_command: str, style: str,
                  wrong: str | None = None, named: bool = True) -> list[dict[str, Any]]:
    """The oracle's tool calls for one task in `style` (`wrong_edit` needs `wrong`: the buggy
    file with a different, wrong change at the same place). `named`: the statement names the
    function; when it does not, the failing test is viewed before the grep."""
    fix = unique_edit(buggy, original)
    start = def_line(buggy, function, fix.line)
    name = function.split(".")[-1]
    run = {"name": "bash", "arguments": {"command": test_invocation(test_command, [test_id],
                                                                     [])}}
    grep = {"name": "grep", "arguments": {"pattern": rf"def {name}\(", "include": "*.py"}}
    summary = f"Fixed {name} in {path}; {test_id} passes now."
    fix_end = fix.line + max(1, fix.old.count("\n")) - 1
    steps: list[dict[str, Any]] = [grep, _view(path, start, fix_end)]
    if style == "test_first" or (not named and style in ("grep_first", "wrong_edit")):
        test_file, _, test_name = test_id.partition("::")
        bare = test_name.split("::")[-1].split("[")[0]
        line = def_line(test_source, bare, len(test_source.splitlines()))
        steps = [_view(test_file, line), *steps]
    elif style == "run_first":
        steps = [run, *steps]
    if style == "wrong_edit" and wrong is not None:
        mistake = unique_edit(buggy, wrong)
        repair = unique_edit(wrong, original)
        return [*steps,
                {"name": "str_replace", "arguments": {"path": path, "old_str": mistake.old,
                                                      "new_str": mistake.new}},
                run,
                {"name": "str_replace", "arguments": {"path": path, "old_str": repair.old,
                                                      "new_str": repair.new}},
                run, {"name": "finish", "arguments": {"summary": summary}}]
    return [*steps,
            {"name": "str_replace", "arguments": {"path": path, "old_str": fix.old,
                                                  "new_str": fix.new}},
            run, {"name": "finish", "arguments": {"summary": summary}}]


def locate_first(calls: list[dict[str, Any]], test_id: str, path: str,
                 first_suspect: tuple[str, int] | None = None,
                 view: bool = True) -> list[dict[str, Any]]:
    """An oracle's calls with its search (grep, the test viewed or run) replaced by `locate` on
    the failing test: from the first view of `path` (the changed file) on, they are kept.
    `first_suspect` (path, def line): a function `locate` ranks above the changed one, viewed
    first, as a policy that trusts the ranking would. `view` False: that view is left out too
    (`locate` showed the changed function's source)."""
    start = next((i for i, call in enumerate(calls)
                  if call["name"] == "view" and call["arguments"].get("path") == path), None)
    if start is None:
        raise ValueError(f"the oracle never views {path}")
    steps: list[dict[str, Any]] = [{"name": "locate", "arguments": {"test": test_id}}]
    if first_suspect is not None:
        steps.append(_view(first_suspect[0], first_suspect[1]))
    return [*steps, *calls[start + (0 if view else 1):]]


def choose_style(rng: random.Random, recovery_share: float) -> str:
    """A style: recovering ones (`run_first`, `wrong_edit`) with probability recovery_share."""
    if rng.random() < recovery_share:
        return rng.choice(["run_first", "wrong_edit"])
    return rng.choice(["grep_first", "test_first"])
