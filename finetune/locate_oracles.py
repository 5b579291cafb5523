"""Oracles that find the bug with `locate`, as a model without the gold patch would.

A synthesized task's stored oracle greps the changed function by name, a name the statement
often does not give (it names the failing test). Here `locate` runs on each task's failing test
in a fresh sandbox at `base_commit`; where it lists the changed function among its first
`max_rank` suspects, the oracle's search becomes `locate` (`synthesis_oracle.locate_first`),
viewing the first suspect before the right one when that ranks second, and not viewing the
right one when it ranks first and `locate` showed the lines the fix replaces. Other tasks keep their
oracle: a policy cannot be taught to jump to a function the tool did not name.

    agent finetune locate-oracles SUITE --out SUITE-LOCATE   # then: oracle, sft --tools core,locate
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.suite import Suite, SuiteTask, write_suite
from finetune.synthesis_oracle import locate_first
from tools.base import ToolContext, ToolError
from tools.files import LINES
from tools.host_git import isolated_env
from tools.locate import Locate, LocateArgs, function_source
from tools.sandbox import SandboxConfig, make_sandbox
from trajectories.verify import export_tree

MAX_RANK = 5
"""`locate` shows this many suspects."""
REPORT_FILE = "locate.json"


@dataclass
class LocateRun:
    """`locate` on one task's first failing test."""

    instance_id: str
    rank: int | None
    """1-based rank of the changed function among the suspects; None when not listed."""
    suspects: list[list] = field(default_factory=list)
    """[path, def_line, function] of each suspect, most suspicious first."""
    seconds: float = 0.0
    error: str = ""
    shown: list[int] = field(default_factory=list)
    """[first, last] lines of the first suspect's source that `locate` showed."""
    source: str = ""
    """Those lines' text (what an edit can replace without a view)."""


def rank_of(suspects: list[list], path: str, function: str) -> int | None:
    """1-based rank of the suspect that is `function` of `path` (qualified or not), or None."""
    for number, (suspect_path, _, name) in enumerate(suspects, 1):
        if suspect_path == path and (name == function or name.endswith("." + function)
                                     or function.endswith("." + name)):
            return number
    return None


def locate_task(suite: Suite, task: SuiteTask, sandbox: SandboxConfig | None = None
                ) -> LocateRun:
    """Run `locate` on `task`'s first FAIL_TO_PASS test, in a fresh sandbox at base_commit."""
    extra = task.model_extra or {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="apprentice-locate-") as tmp:
        clone, tree = Path(tmp) / "clone", Path(tmp) / "workspace"
        tree.mkdir()
        origin = str(suite.path / task.repo_path)
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", origin, str(clone)],
                       check=True, capture_output=True, timeout=300, env=isolated_env({}))
        export_tree(clone, task.base_commit, tree)
        box = make_sandbox(sandbox or SandboxConfig(), tree)
        try:
            box.start()
            observation = Locate().run(LocateArgs(test=task.FAIL_TO_PASS[0]),
                                       ToolContext(workspace=tree, sandbox=box))
            found, error = observation.data.get("suspects", []), ""
            shown = list(observation.data.get(LINES) or [])
            source = "\n".join(function_source(tree, found[0]["path"], found[0]["def_line"])[1]) \
                if shown else ""
        except ToolError as exc:
            found, error, shown, source = [], str(exc)[:500], [], ""
        finally:
            box.close()
    suspects = [[s["path"], s["def_line"], s["function"]] for s in found]
    return LocateRun(task.instance_id,
                     rank_of(suspects, str(extra.get("path")), str(extra.get("function"))),
                     suspects, round(time.monotonic() - started, 2), error, shown, source)


def _shows_fix(run: LocateRun, task: SuiteTask) -> bool:
    """Whether `locate`'s source of its first suspect holds every text the oracle's edits
    replace (so the oracle needs no view before it)."""
    if run.rank != 1 or not run.source:
        return False
    edits = [c["arguments"].get("old_str", "") for c in task.oracle if c["name"] == "str_replace"]
    return all(text.rstrip("\n") in run.source for text in edits)


def locate_suite(suite: Suite, workers: int = 2, sandbox: SandboxConfig | None = None,
                 on_task: Callable[[LocateRun], None] | None = None) -> list[LocateRun]:
    """`locate_task` on every task that names its changed function (synthesized ones)."""
    tasks = [t for t in suite.tasks if (t.model_extra or {}).get("function") and t.FAIL_TO_PASS]

    def one(task: SuiteTask) -> LocateRun:
        run = locate_task(suite, task, sandbox)
        if on_task is not None:
            on_task(run)
        return run

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, tasks))


def with_locate_oracles(suite: Suite, runs: list[LocateRun], out_dir: Path,
                        max_rank: int = MAX_RANK) -> tuple[Path, int]:
    """Write `suite` into `out_dir` with locate-first oracles where `locate` lists the changed
    function in its first `max_rank`; repositories are linked, not copied. Returns the suite
    folder and how many oracles changed. `locate.json` keeps every run."""
    by_id = {run.instance_id: run for run in runs}
    tasks, changed = [], 0
    for task in suite.tasks:
        run = by_id.get(task.instance_id)
        extra = task.model_extra or {}
        if run is not None and run.rank is not None and run.rank <= max_rank and task.oracle:
            first = tuple(run.suspects[0][:2]) if run.rank == 2 else None
            try:
                oracle = locate_first(task.oracle, task.FAIL_TO_PASS[0], str(extra["path"]),
                                      first, view=not _shows_fix(run, task))  # type: ignore[arg-type]
            except ValueError:
                oracle = None
            if oracle is not None:
                task = task.model_copy(update={"oracle": oracle})
                changed += 1
        tasks.append(task)
    out_dir = Path(out_dir)
    write_suite(out_dir, tasks, {**suite.meta, "name": out_dir.name,
                                 "locate_oracles": {"max_rank": max_rank, "changed": changed}})
    for task in suite.tasks:
        top = Path(task.repo_path).parts[0]
        link = out_dir / top
        if not link.exists() and (suite.path / top).exists():
            link.symlink_to((suite.path / top).resolve())
    (out_dir / REPORT_FILE).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return out_dir, changed
