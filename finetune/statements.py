"""Problem statements written from what a user sees: the failing test, its assertion or
exception, a short traceback excerpt. Never from the fix: frames of the changed file and any
line of the changed code are left out.

Three phrasings: a bug report, a failing CI log, and "X returns Y, expected Z" (when the
assertion says so).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_FRAME = re.compile(r"^(\S.*?):(\d+): in (\S+)$")
_ASSERT = re.compile(r"^E\s+(?:AssertionError: )?assert (.+?) == (.+)$")
_WHERE = re.compile(r"^E\s+\+\s+where (.+?) = (.+)$")
_ERROR = re.compile(r"^E\s+(\w+(?:Error|Exception|Exit|Interrupt|Warning)\b.*)$")
MAX_EXCERPT_LINES = 24
MAX_VALUE_CHARS = 160


@dataclass
class Failure:
    """One failing test as pytest reported it."""

    node_id: str
    message: str
    """pytest's one-line reason (`AssertionError: assert 1 == 2`)."""
    section: str
    """Its `--tb=short` traceback."""


def excerpt(section: str, hidden_path: str, hidden_lines: list[str]) -> str:
    """The traceback without frames in `hidden_path` and without any of `hidden_lines`."""
    hidden = {line.strip() for line in hidden_lines if line.strip()}
    kept: list[str] = []
    skipping = False
    for line in section.splitlines():
        frame = _FRAME.match(line)
        if frame:
            skipping = frame.group(1).endswith(hidden_path)
        if line.startswith("E "):
            skipping = False
        if skipping or line.strip() in hidden:
            continue
        kept.append(line)
    if len(kept) > MAX_EXCERPT_LINES:  # the end holds the error; keep the first frame too
        kept = kept[:4] + ["..."] + kept[-(MAX_EXCERPT_LINES - 5):]
    return "\n".join(kept).strip("\n")


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def observed(section: str) -> str | None:
    """"`call` returns `got`, expected `want`" (or "raises ...") when the traceback says so."""
    lines = section.splitlines()
    for index, line in enumerate(lines):
        found = _ASSERT.match(line)
        if found:
            got, want = found.groups()
            for later in lines[index + 1:]:
                where = _WHERE.match(later)
                if where and where.group(1) == got:
                    return (f"`{_short(where.group(2))}` returns `{_short(got)}`, expected "
                            f"`{_short(want)}`")
            return f"the result is `{_short(got)}`, expected `{_short(want)}`"
    for line in reversed(lines):
        error = _ERROR.match(line)
        if error:
            return f"it raises `{_short(error.group(1))}`"
    return None


def _others(failures: list[Failure]) -> str:
    if len(failures) == 1:
        return ""
    names = ", ".join(f"`{f.node_id}`" for f in failures[1:4])
    more = f" and {len(failures) - 4} more" if len(failures) > 4 else ""
    return f"\n\nOther tests fail too: {names}{more}."


def write_statement(failures: list[Failure], test_command: str, hidden_path: str,
                    hidden_lines: list[str], rng: random.Random) -> tuple[str, str]:
    """(statement, phrasing) for a task whose first failing test is `failures[0]`."""
    first = failures[0]
    trace = excerpt(first.section, hidden_path, hidden_lines) or first.message
    test_file, _, test_name = first.node_id.partition("::")
    seen = observed(trace)
    phrasings = ["bug_report", "ci_log"] + (["returns_expected"] if seen else [])
    phrasing = rng.choice(phrasings)
    if phrasing == "bug_report":
        text = (f"`{test_name}` in `{test_file}` fails:\n\n```\n{trace}\n```\n\n"
                "It should pass. Please find the bug in the library code and fix it; do not "
                "change the tests.")
    elif phrasing == "ci_log":
        text = (f"CI is red. The log of `{test_command}` ends with:\n\n```\n{trace}\n"
                f"FAILED {first.node_id} - {_short(first.message)}\n```\n\n"
                "Fix the code so that the test suite passes again.")
    else:
        text = (f"In `{first.node_id}`, {seen}.\n\nTraceback excerpt:\n\n```\n{trace}\n```\n\n"
                "Fix the library so that this test passes (the test is right).")
    return text + _others(failures), phrasing
