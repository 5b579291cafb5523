"""Repairs chosen by running them: `locate`'s suspects, the model's surprise, the failing test.

    python bench/bench_surprise_repair.py --suite SUITE [--model smollm2-135m] [--budget 30] \\
        [--functions 3] [--save OUT.json]

Every adapter so far writes the wrong held-out repair as a tool call, yet read as a plain
language model the base often prefers the fixed line (`bench_base_choice.py`). This bench asks
how far that preference goes with no tool call at all, the way an automated program repair tool
would use it. For each task:

1. the failing test is the first pytest id the issue names (as a user would read it);
2. the real `locate` tool runs it in the Docker sandbox and ranks functions (Ochiai); a
   module's top-level code is passed over;
3. `agent.surprise_repair.candidate_edits` proposes one-line edits of the first `--functions`
   suspects (the model's likeliest token where the code's is not: put in place, put before,
   deleted, or the rest of the line written from it), scored by the window's log-likelihood;
4. candidates are tried best first, at most `--budget`, by running that test in the sandbox;
   the first that passes is kept, and the task's reward is `verify_patch` on a fresh sandbox
   with all its FAIL_TO_PASS and PASS_TO_PASS tests (the reward every episode gets).

Also recorded: where the task's own fix (byte for byte) ranks among the candidates, a lower
bound on what the candidates hold.

Measured 2026-12-08 on 2 CPU cores, the untuned base scoring (files in
`bench/results/surprise-repair/`; toolz is `agent finetune synthesize toolz-1.2.0 --max-tasks 13
--eval-only --seed 1`, more-itertools `... more_itertools-11.2.1 --max-tasks 8
--max-candidates 32 --eval-only --seed 0`):

| suite, candidates tried | reward 1 | the task's own fix | s per task |
|---|---|---|---|
| toolz (13), those that make the code likelier (`--min-gain 0`) | 4 | 3 | 35 |
| toolz, every one, best first across suspects, `<module>` kept (first version) | 6 | 3 | 48 |
| more-itertools (8), `--min-gain 0` | 1 | 1 | 102 |
| toolz, scored by the shipped model (`--model apprentice-135m`) | 3 | 2 | 49 |

The two extra passes of the first version are not fixes (`return None` for `return False`, a
hard-coded `return "1.0.0"`), both edits that make the code less likely; it also read no test
from two issues (`name` in `file`, since read).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent.local_model import load_local_model  # noqa: E402
from agent.patches import patched_files  # noqa: E402
from agent.surprise_repair import (  # noqa: E402
    LineEdit,
    SurpriseOptions,
    candidate_edits,
    interleaved,
)
from agent.tool_grammar import NAMED_TEST, PYTEST_ID  # noqa: E402
from finetune.suite import SuiteTask, checkout_task, load_suite  # noqa: E402
from tools.base import ToolContext, ToolError  # noqa: E402
from tools.locate import Locate, LocateArgs, function_source  # noqa: E402
from tools.sandbox import SandboxConfig, make_sandbox  # noqa: E402
from tools.workspace_fs import WorkspaceFS  # noqa: E402
from trajectories.verify import test_invocation, verify_patch  # noqa: E402

MODULE = "<module>"
"""`locate`'s name for a module's top-level code: a whole file, too long to read as one
function, and seldom where the tests fail (imports run when any test does)."""
TRACEBACK_LINE = re.compile(r"^([\w./-]*test[\w./-]*\.py):\d+: in (test\w*)$", re.MULTILINE)


def named_test(task: SuiteTask) -> str | None:
    """The first failing test the issue names: a pytest id, `name` in `file`, or the test
    frame of its traceback."""
    text = task.problem_statement
    if found := PYTEST_ID.search(text):
        return found.group(1)
    if found := NAMED_TEST.search(text):
        return f"{found.group(2)}::{found.group(1)}"
    if found := TRACEBACK_LINE.search(text):
        return f"{found.group(1)}::{found.group(2)}"
    return None


def repair(task: SuiteTask, suite: Any, local: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One task: locate, propose, try; its record."""
    started = time.monotonic()
    record: dict[str, Any] = {"task": task.instance_id, "kind": (task.model_extra or {}).get(
        "kind"), "reward": 0, "tried": 0}
    test = named_test(task)
    if test is None:
        return record | {"error": "the issue names no test"}
    with tempfile.TemporaryDirectory(prefix="surprise-") as scratch:
        # The task's fix and the reward come from a checkout the sandbox never sees; the
        # workspace's files are read and written without following links, as the tools do.
        pristine = checkout_task(suite, task, Path(scratch) / "pristine").repo
        fixes = {path: after for path, (_, after) in
                 patched_files(Path(pristine), task.base_commit, task.patch).items()}
        workspace = Path(scratch) / "workspace"
        checkout_task(suite, task, workspace)
        files = WorkspaceFS(workspace)
        sandbox = make_sandbox(SandboxConfig(), workspace)
        try:
            try:
                located = Locate().run(LocateArgs(test=test),
                                       ToolContext(workspace=workspace, sandbox=sandbox))
            except ToolError as exc:
                return record | {"error": f"locate: {exc}"}
            suspects = [s for s in located.data.get("suspects", [])
                        if s["function"] != MODULE][:args.functions]
            record["suspects"] = [f"{s['path']}:{s['function']}" for s in suspects]
            per_function: list[list[LineEdit]] = []
            sources: dict[str, str] = {}
            proposing = time.monotonic()
            for suspect in suspects:
                path = suspect["path"]
                last, lines = function_source(workspace, path, suspect["def_line"])
                if lines and path not in sources:
                    sources[path] = files.read_text(path)
                per_function.append(candidate_edits(
                    local.model, local.tokenizer, sources[path], suspect["def_line"], last,
                    SurpriseOptions(limit=args.budget)) if lines else [])
            candidates = [(suspects[index]["path"], edit)
                          for index, edit in interleaved(per_function, args.min_gain)]
            record["propose_s"] = round(time.monotonic() - proposing, 1)
            record["candidates"] = len(candidates)
            record["proposed"] = sum(len(edits) for edits in per_function)
            record["fix_rank"] = next(
                (rank for rank, (path, edit) in enumerate(candidates)
                 if edit.apply(sources[path]) == fixes.get(path)), None)
            command = test_invocation(task.test_command, [test], [])
            for path, edit in candidates[:args.budget]:
                original = files.read_text(path)
                edited = edit.apply(original)
                files.write_text(path, edited)
                record["tried"] += 1
                result = sandbox.run(command, timeout=120)
                if result.exit_code == 0:
                    patch = "".join(difflib.unified_diff(
                        original.splitlines(keepends=True), edited.splitlines(keepends=True),
                        f"a/{path}", f"b/{path}"))
                    record["exact"] = edited == fixes.get(path)
                    record["chosen"] = {"path": path, "line": edit.line, "old": edit.old,
                                        "new": edit.new, "how": edit.how,
                                        "gain": round(edit.gain, 2)}
                    break
                files.write_text(path, original)
        except OSError as exc:  # a file the tests replaced by a link, or removed
            return record | {"error": f"workspace: {exc}"}
        finally:
            sandbox.close()
        if "chosen" in record:
            verdict = verify_patch(Path(pristine), task.base_commit, patch, task.test_command,
                                   task.FAIL_TO_PASS, task.PASS_TO_PASS)
            record["reward"] = verdict.reward
    return record | {"seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--split", default=None)
    parser.add_argument("--model", default="smollm2-135m",
                        help="a local model name (`agent models list`) or folder")
    parser.add_argument("--budget", type=int, default=30, help="test runs per task")
    parser.add_argument("--functions", type=int, default=3, help="suspects edited")
    parser.add_argument("--min-gain", type=float, default=0.0,
                        help="try only edits that make the code at least this much likelier "
                             "(nats; -inf: all)")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    suite = load_suite(args.suite)
    local = load_local_model(args.model)
    records = []
    for task in suite.split(args.split):
        record = repair(task, suite, local, args)
        records.append(record)
        chosen = record.get("chosen")
        print(f"{record['task']}: reward {record['reward']}, tried {record['tried']} of "
              f"{record.get('candidates', 0)}, fix rank {record.get('fix_rank')}, "
              f"{record.get('seconds')} s" + (f"; {chosen['old'].strip()!r} -> "
                                              f"{chosen['new'].strip()!r}" if chosen else "")
              + (f"; {record['error']}" if "error" in record else ""), flush=True)
    passed = sum(r["reward"] for r in records)
    exact = sum(bool(r.get("exact")) and r["reward"] for r in records)
    summary = {"suite": str(args.suite), "model": args.model, "budget": args.budget,
               "functions": args.functions, "min_gain": args.min_gain, "tasks": len(records),
               "passed": passed, "exact": exact,
               "pass_rate": round(passed / max(1, len(records)), 3),
               "seconds": round(sum(r.get("seconds", 0) for r in records), 1),
               "records": records}
    print(f"\n{passed} of {len(records)} tasks repaired (reward 1; {exact} with the task's own "
          f"fix), "
          f"{summary['seconds']} s in all")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
