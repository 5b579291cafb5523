"""Can a synthesized bug's fix be read off what the agent is shown?

A fix is *in view* when every name, number and string it writes occurs in the buggy function,
in the task's statement, or among Python's keywords and builtins: `if not predicate(k)` ->
`if predicate(k)`, or `pass` -> `return d2` where the function assigns `d2`. A removed
`return itertools.chain([el], seq)` is not: nothing the agent reads says `chain`. Synthesis
records it per task (`fix_in_view`), so training data can favour fixes a model can learn to
read off the code and evaluations can report both kinds apart.

    python -m finetune.fix_in_view SUITE_DIR    # mark a suite synthesized before the field
"""

from __future__ import annotations

import ast
import builtins
import json
import keyword
import re
import sys
import tempfile
from pathlib import Path

from agent.patches import patched_files
from finetune.suite import SuiteError, checkout_task, load_suite
from finetune.synthesis_oracle import unique_edit

WRITTEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?|'[^'\n]*'|\"[^\"\n]*\"")
ALWAYS_KNOWN = frozenset(keyword.kwlist) | frozenset(dir(builtins))


def enclosing_function(source: str, line: int) -> str:
    """The source of the innermost function holding `line` (the whole file outside any, or
    when the file does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    holding = [node for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
               and node.lineno <= line <= (node.end_lineno or node.lineno)]
    if not holding:
        return source
    best = max(holding, key=lambda node: node.lineno)  # the innermost starts last
    return ast.get_source_segment(source, best) or source


def unseen_tokens(buggy: str, fixed: str, statement: str) -> list[str]:
    """What the fix of `buggy` into `fixed` writes that the buggy function, the statement and
    Python itself do not show, in order of appearance."""
    edit = unique_edit(buggy, fixed)
    shown = set(WRITTEN.findall(enclosing_function(buggy, edit.line))) | \
        set(WRITTEN.findall(statement)) | ALWAYS_KNOWN
    return [token for token in WRITTEN.findall(edit.new) if token not in shown]


def fix_in_view(buggy: str, fixed: str, statement: str) -> bool:
    return not unseen_tokens(buggy, fixed, statement)


def mark_suite(suite_dir: Path) -> tuple[int, int]:
    """Add `fix_in_view` to every task of a synthesized suite that lacks it (checked out as an
    episode would be; `agent.patches.patched_files` gives the file before and after the gold
    patch). Returns (tasks in view, tasks).
    The suite's digest changes with its `tasks.jsonl`."""
    suite = load_suite(suite_dir)
    marks: dict[str, bool] = {}
    for task in suite.tasks:
        extra = task.model_extra or {}
        if "fix_in_view" in extra or not extra.get("path") or not task.patch:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            checkout_task(suite, task, repo)
            try:
                files = patched_files(repo, task.base_commit, task.patch)
            except ValueError as exc:
                raise SuiteError(f"task {task.instance_id}: its gold patch does not apply: "
                                 f"{exc}") from exc
        buggy, fixed = files.get(extra["path"], (None, None))
        if buggy is None or fixed is None:
            raise SuiteError(f"task {task.instance_id}: its gold patch does not edit "
                             f"{extra['path']} in place")
        marks[task.instance_id] = fix_in_view(buggy, fixed, task.problem_statement)
    path = suite_dir / "tasks.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        if row.get("instance_id") in marks:
            row["fix_in_view"] = marks[row["instance_id"]]
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
    partial.replace(path)  # a killed run leaves the suite as it was
    return sum(bool(row.get("fix_in_view")) for row in rows), len(rows)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        marked, total = mark_suite(Path(name))
        print(f"{name}: the fix is in view in {marked} of {total} tasks")
