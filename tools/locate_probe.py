"""Run inside the sandbox by the `locate` tool (standalone: the standard library and pytest).

    python3 - TEST_ID [DEADLINE_S] < locate_probe.py

Runs every test of TEST_ID's file in-process with line tracing of the repository's own code
(test files and installed packages left out), the given test last (code that runs once, such
as a lazy import or a cache filled on first use, is then not charged to it), scores each traced
line by Ochiai, `failed(line) / sqrt(failed_total * (failed(line) + passed(line)))`, ranks
functions by their best line and prints one line `APPRENTICE-LOCATE <json>` with the counts and
the first suspects. The host side (`tools/locate.py`) formats it.
"""

import json
import math
import os
import sys
import threading
import time

import pytest

MARKER = "APPRENTICE-LOCATE "
TEST_DIRS = {"tests", "test", "testing"}
KEPT = 10
TARGET_EXTRA_S = 30.0
"""Seconds the given test is traced past the deadline (it runs last)."""


def is_library(path, root):
    """Source of the repository itself: under the root, not a test, not an installed package."""
    if not path.startswith(root + os.sep) or "site-packages" in path:
        return False
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    name = parts[-1]
    if name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py"):
        return False
    return not TEST_DIRS.intersection(parts[:-1]) and name.endswith(".py")


class Recorder:
    """A pytest plugin: traces each test's calls into the repository's code."""

    def __init__(self, target, deadline_s):
        self.root = os.path.realpath(os.getcwd())
        self.target = target
        self.deadline = time.monotonic() + deadline_s
        self.library = {}
        self.functions = {}
        self.lines = {}
        self.outcomes = {}
        self.current = None
        self.running = None
        self.stopped = False
        self.events = 0
        self.untraced = False
        """True once the running test outlasted the deadline (the target: `TARGET_EXTRA_S`
        more): its tracing stops, as slow as it makes a test of many lines. Another test's
        result is then left out; the target's lines so far are kept."""
        self.left_out = set()

    def _trace(self, frame, event, arg):
        code = frame.f_code
        wanted = self.library.get(code.co_filename)
        if wanted is None:
            wanted = self.library[code.co_filename] = is_library(
                os.path.realpath(code.co_filename), self.root)
        if not wanted or self.current is None or self._past_deadline():
            return None
        if code.co_name.startswith("<") and frame.f_back is not None \
                and frame.f_back.f_code.co_filename == code.co_filename:
            code = frame.f_back.f_code  # a comprehension or lambda: its enclosing function
        key = (code.co_filename, code.co_firstlineno)
        if key not in self.functions:
            self.functions[key] = getattr(code, "co_qualname", code.co_name)
        current = self.current

        def local(frame, event, arg):
            if self._past_deadline():
                return None
            if event == "line":
                current.add((key, frame.f_lineno))
            return local

        return local

    def _past_deadline(self):
        """Whether to stop tracing the running test; the clock is read every 4096 events."""
        if self.untraced:
            return True
        self.events += 1
        if self.events % 4096 == 0:
            extra = TARGET_EXTRA_S if self.running == self.target else 0.0
            if time.monotonic() > self.deadline + extra:
                self.untraced = self.stopped = True
        return self.untraced

    def pytest_collection_modifyitems(self, items):
        items.sort(key=lambda item: item.nodeid == self.target)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current, self.running, self.untraced = set(), item.nodeid, False
        sys.settrace(self._trace)
        threading.settrace(self._trace)
        try:
            yield
        finally:
            sys.settrace(None)
            threading.settrace(None)
            if self.untraced and item.nodeid != self.target:
                self.left_out.add(item.nodeid)
            else:
                for line in self.current:
                    self.lines.setdefault(line, []).append(item.nodeid)
            self.current = self.running = None

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.outcomes[report.nodeid] = "failed"
        elif report.when == "call" or report.skipped:
            self.outcomes.setdefault(report.nodeid, "skipped" if report.skipped else "passed")

    def report(self, exit_code):
        for test in self.left_out:
            self.outcomes.pop(test, None)
        failed_total = sum(o == "failed" for o in self.outcomes.values())
        passed_total = sum(o == "passed" for o in self.outcomes.values())
        best = {}
        for (key, line), ran in self.lines.items():
            outcomes = [self.outcomes.get(test) for test in ran]
            failed, passed = outcomes.count("failed"), outcomes.count("passed")
            if not failed:
                continue
            score = failed / math.sqrt(failed_total * (failed + passed))
            held = best.get(key)
            if held is None or (score, -line) > (held[0], -held[1]):
                best[key] = (score, line, failed, passed)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][3], kv[0]))
        suspects = [{"path": os.path.relpath(os.path.realpath(filename), self.root),
                     "def_line": first, "function": self.functions[(filename, first)],
                     "line": line, "score": round(score, 4), "failed": failed,
                     "passed": passed}
                    for (filename, first), (score, line, failed, passed) in ranked[:KEPT]]
        return {"target": self.target, "outcome": self.outcomes.get(self.target),
                "exit_code": int(exit_code), "stopped": self.stopped,
                "failed": failed_total, "passed": passed_total, "suspects": suspects,
                "failed_tests": sorted(t for t, o in self.outcomes.items() if o == "failed")[:5]}


class Deadline:
    """Out of time: the other tests are passed over, never the given one."""

    def __init__(self, recorder):
        self.recorder = recorder

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if time.monotonic() > self.recorder.deadline and item.nodeid != self.recorder.target:
            self.recorder.stopped = True
            return True
        return None


def main():
    target = sys.argv[1]
    deadline_s = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    recorder = Recorder(target, deadline_s)
    for folder in ("src", "."):  # a src layout imports without being installed
        if os.path.isdir(folder):
            sys.path.insert(0, os.path.abspath(folder))
    test_file = target.split("::")[0]
    args = [test_file, "-q", "-p", "no:cacheprovider", "--no-header", "-rN", "--tb=no"]
    if sys.argv[3:] == ["--no-addopts"]:  # first in the list, or pytest may still read them
        args = ["-o", "addopts=", *args]
    exit_code = pytest.main(args, plugins=[Deadline(recorder), recorder])
    sys.stdout.write("\n" + MARKER + json.dumps(recorder.report(exit_code)) + "\n")


if __name__ == "__main__":
    main()
