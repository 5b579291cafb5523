"""`locate`: spectrum-based fault localisation for a failing test.

The tests of the failing test's file run once in the sandbox with line tracing
(`tools/locate_probe.py`); a line of the repository's code scores by Ochiai: run by the failing
tests and by few passing ones means suspicious. Functions are ranked by their best line, and
the model reads `path:def_line name` (what to view) with that line. For small mutations of a
library (the synthesized tasks), the changed function is usually among the first few.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.files import LINES, READ
from tools.sandbox.base import WORKSPACE, CommandResult, Sandbox
from tools.search import tests_named, workspace_files
from tools.workspace_fs import WorkspaceFS

PROBE = Path(__file__).with_name("locate_probe.py")
MARKER = "APPRENTICE-LOCATE "
DEFAULT_TIMEOUT_S = 120.0
TRACE_BUDGET_S = 60.0
"""After this many seconds of traced tests, the probe runs no more of them."""
SHOWN = 5
SOURCE_LINES = 40
"""The first suspect's source is shown (from its def, at most this many lines), so the model
can edit it without a view first."""


class LocateArgs(BaseModel):
    test: str = Field(description="A failing test's pytest id, e.g. 'tests/test_x.py::test_y'.",
                      min_length=1, max_length=1_000)


USAGE_ERROR = 4
"""pytest's exit code for options it does not know."""


def _probe(sandbox: Sandbox, root: str, target: str, *options: str
           ) -> tuple[CommandResult, dict | None]:
    """Run the probe on `target` in the sandbox: its output and its report."""
    command = (f"(cd {shlex.quote(root)} && python3 - {shlex.quote(target)} "
               f"{TRACE_BUDGET_S:g} {' '.join(options)} <<'APPRENTICE_LOCATE_EOF'\n"
               f"{PROBE.read_text()}\nAPPRENTICE_LOCATE_EOF\n)")
    result = sandbox.run(command, timeout=DEFAULT_TIMEOUT_S)
    return result, parse_probe(result.output)


def parse_probe(output: str) -> dict | None:
    """The probe's report from its output, or None when it printed none or one of the wrong
    shape (the output is the sandbox's: the repository's tests may print anything)."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            try:
                report = json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                return None
            return report if _well_formed(report) else None
    return None


def _well_formed(report: object) -> bool:
    if not isinstance(report, dict) or not isinstance(report.get("suspects"), list):
        return False
    if not all(isinstance(report.get(key), int) for key in ("failed", "passed")):
        return False
    keys: dict[str, type | tuple[type, ...]] = {"path": str, "def_line": int, "function": str,
                                                 "line": int, "score": (int, float)}
    return all(isinstance(s, dict) and all(isinstance(s.get(k), t) for k, t in keys.items())
               for s in report["suspects"])


class Locate(Tool):
    """Find the code a failing test most likely fails in: runs the tests of its file with line
    tracing and lists functions by suspicion (run by the failing test, by few passing ones)."""

    # Not read_only: the tests it runs are the repository's code, which may write files.

    name = "locate"
    Args = LocateArgs
    test_arguments = ("test",)

    def run(self, args: LocateArgs, ctx: ToolContext) -> Observation:
        if ctx.sandbox is None:
            raise ToolError("no sandbox is running, so tests cannot run.")
        target = args.test.strip().removeprefix("./")
        if "::" not in target and not target.endswith(".py"):
            target = _by_name(ctx.workspace, target) or target
        test_file = target.split("::")[0]
        if not test_file.endswith(".py") or WorkspaceFS(ctx.workspace).kind(test_file) != "file":
            raise ToolError(f"{test_file} is not a test file of the workspace; give the failing "
                            f"test's pytest id (file::name).{_same_name(ctx.workspace, test_file)}")
        root = str(ctx.sandbox.host_workspace) if _is_local(ctx) else WORKSPACE
        result, report = _probe(ctx.sandbox, root, target)
        if report is not None and report.get("outcome") is None \
                and report.get("exit_code") == USAGE_ERROR:
            # The project's addopts name a plugin the sandbox lacks (`--cov=...` without
            # pytest-cov): trace the tests without them.
            result, report = _probe(ctx.sandbox, root, target, "--no-addopts")
        if report is None:
            tail = "\n".join(result.output.splitlines()[-15:])
            raise ToolError(f"the tests of {test_file} did not run under tracing "
                            f"(exit code {result.exit_code}):\n{tail}")
        return describe(report, target, ctx.workspace)


def _by_name(workspace: Path, name: str) -> str | None:
    """`file::[Class::]name` of the one test function called `name`, or None."""
    found = tests_named(workspace, name)
    return found[0] if len(found) == 1 else None


def _same_name(workspace: Path, test_file: str) -> str:
    """A hint naming the workspace's files called like `test_file`, if any."""
    name = Path(test_file).name
    try:
        files = [f for f in workspace_files(workspace) if Path(f).name == name][:5]
    except OSError:
        return ""
    return f" Files named {name}: {', '.join(files)}." if files else ""


def _is_local(ctx: ToolContext) -> bool:
    from tools.sandbox.local_sandbox import LocalSandbox

    return isinstance(ctx.sandbox, LocalSandbox)


def function_source(workspace: Path, path: str, def_line: int) -> tuple[int, list[str]]:
    """(last line, lines) of the function at `def_line` of `path` (decorators and signature
    included) up to its end or `SOURCE_LINES` lines; no lines when it cannot be read."""
    try:
        lines = WorkspaceFS(workspace).read_text(path, limit=2_000_000).splitlines()
    except (OSError, UnicodeDecodeError, ToolError):
        return def_line, []
    if not 1 <= def_line <= len(lines):
        return def_line, []
    first = lines[def_line - 1]
    indent = len(first) - len(first.lstrip())
    body = def_line
    while body < len(lines) and not lines[body - 1].lstrip().startswith(("def ", "async def ",
                                                                          "class ")):
        body += 1  # past decorators
    last = body
    for number in range(body + 1, min(len(lines), def_line + SOURCE_LINES - 1) + 1):
        line = lines[number - 1]
        if line.strip() and len(line) - len(line.lstrip()) <= indent \
                and not line.lstrip().startswith((")", "]", "}")):
            break
        last = number
    while last > def_line and not lines[last - 1].strip():
        last -= 1
    return last, lines[def_line - 1:last]


def describe(report: dict, target: str, workspace: Path | None = None) -> Observation:
    """What the model reads: where the failing test most likely fails."""
    outcome = report.get("outcome")
    if outcome is None:
        failing = report.get("failed_tests") or []
        hint = f" Its failing tests: {', '.join(failing)}." if failing else \
            f" No test of {target.split('::')[0]} failed."
        raise ToolError(f"no test {target} ran; give the id pytest prints.{hint}")
    failed, passed = report["failed"], report["passed"]
    ran = f"Ran {failed + passed} tests of {target.split('::')[0]}: {failed} failed, " \
          f"{passed} passed"
    if report.get("stopped"):
        ran += " (stopped early: out of time)"
    suspects = report["suspects"][:SHOWN]
    if outcome != "failed":
        return Observation(f"{ran}. {target} {outcome}: nothing to locate.",
                           data={"suspects": []})
    if not suspects:
        return Observation(f"{ran}. The failing test ran no code of the repository outside "
                           "the tests.", data={"suspects": []})
    rows = [f"{s['path']}:{s['def_line']} {s['function']} (score {s['score']:.2f}, "
            f"line {s['line']})" for s in suspects]
    head = f"{ran}. Most suspicious functions (path:def_line name):"
    data: dict = {"suspects": suspects}
    text = "\n".join([head, *rows])
    top = suspects[0]
    last, lines = function_source(workspace, top["path"], top["def_line"]) if workspace \
        else (0, [])
    if lines:
        numbered = "\n".join(f"{n:6d}\t{line}" for n, line in enumerate(lines, top["def_line"]))
        text += f"\n\n{top['path']}, lines {top['def_line']}-{last}:\n{numbered}"
        data |= {READ: top["path"], LINES: [top["def_line"], last]}
    return Observation(text, data=data)
