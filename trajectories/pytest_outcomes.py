"""Per-test outcomes from pytest's own report: `-rA` (a summary line per test, with its node id)
and `--tb=short` (a failure section per failing test). Needs nothing but pytest in the sandbox.

    run = parse_report(output)
    run.outcomes["tests/test_x.py::test_y"]  # "passed", "failed", "error", "skipped", ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

REPORT_ARGS = "-rA --tb=short -p no:cacheprovider --continue-on-collection-errors"
"""What is added to the test command so the report has one line per test (and a test module
that cannot be imported does not stop the others)."""

_SUMMARY = re.compile(r"^=+ short test summary info =+$")
_LINE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED) (.+)$")
_SECTION = re.compile(r"^=+ (FAILURES|ERRORS) =+$")
_HEAD = re.compile(r"^_{3,} (.+?) _{3,}$")
_ANY_HEADER = re.compile(r"^=+ .* =+$|^=+$")


@dataclass
class TestReport:
    """What one pytest run said about each test."""

    outcomes: dict[str, str] = field(default_factory=dict)
    """Node id -> passed, failed, error, xfail, xpass (skips are not listed by id)."""
    collection_errors: list[str] = field(default_factory=list)
    """Files that could not be collected (imported)."""
    messages: dict[str, str] = field(default_factory=dict)
    """Node id -> the one-line reason of a failure or error."""
    sections: dict[str, str] = field(default_factory=dict)
    """Head line (`Class.test_x[1]`) -> its `--tb=short` failure text."""

    def with_outcome(self, *outcomes: str) -> list[str]:
        return sorted(n for n, o in self.outcomes.items() if o in outcomes)

    def failure_text(self, node_id: str) -> str:
        """The traceback section of a failed test (empty if pytest printed none)."""
        head = ".".join(node_id.split("::")[1:])
        return self.sections.get(head, "")


def split_node_id(rest: str) -> tuple[str, str]:
    """`nodeid - message` -> (nodeid, message); a ` - ` inside `[...]` belongs to the id."""
    start = 0
    while True:
        at = rest.find(" - ", start)
        if at < 0:
            return rest.strip(), ""
        head = rest[:at]
        if head.count("[") <= head.count("]"):
            return head.strip(), rest[at + 3:].strip()
        start = at + 1


def parse_report(output: str) -> TestReport:
    """Read the summary lines and failure sections of pytest's output."""
    report = TestReport()
    lines = output.splitlines()
    _read_sections(lines, report)
    in_summary = False
    for line in lines:
        if _SUMMARY.match(line):
            in_summary = True
            continue
        if not in_summary:
            continue
        if _ANY_HEADER.match(line):
            in_summary = False
            continue
        found = _LINE.match(line)
        if not found or found.group(1) == "SKIPPED":
            continue
        word, rest = found.groups()
        node_id, message = split_node_id(rest)
        if word == "ERROR" and "::" not in node_id:
            report.collection_errors.append(node_id)
            continue
        outcome = word.lower()
        if report.outcomes.get(node_id) in ("failed", "error"):
            continue  # a test that failed and then errored at teardown stays failed
        report.outcomes[node_id] = outcome
        if message:
            report.messages[node_id] = message
    return report


def _read_sections(lines: list[str], report: TestReport) -> None:
    head: str | None = None
    body: list[str] = []
    in_section = False

    def close() -> None:
        if head is not None and head not in report.sections:
            report.sections[head] = "\n".join(body).strip("\n")

    for line in lines:
        if _SECTION.match(line):
            close()
            head, body, in_section = None, [], True
            continue
        if not in_section:
            continue
        if _ANY_HEADER.match(line):
            close()
            head, body, in_section = None, [], False
            continue
        found = _HEAD.match(line)
        if found:
            close()
            head, body = found.group(1), []
            continue
        body.append(line)
    close()
