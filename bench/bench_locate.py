"""How well `locate` (spectrum-based fault localisation) finds a synthesized task's bug.

    python bench/bench_locate.py SUITE [SUITE ...] [--save OUT.json]

For every task of the suites (synthesized ones: they name the changed `path` and `function`),
a clone of its repository at `base_commit` runs `locate` on the first FAIL_TO_PASS test, and
the rank of the changed function among the suspects is recorded. Runs in a local sandbox (the
libraries are pure Python and the host has pytest); episodes run the same probe in Docker.

Measured (2 CPU cores; rank of the changed function, 1 = first):

| suite | tasks | rank 1 | top 3 | top 5 | not listed | mean s/task |
|---|---|---|---|---|---|---|
| train-suite (5 libraries, 16 tasks each) | 80 | 0.66 | 0.80 | 0.88 | 10 | 2.3 |
| toolz-suite (held-out library) | 13 | 0.54 | 0.69 | 0.77 | 3 | 1.9 |

The failing test runs last: run first, it was charged with code that runs once (toolz's lazy
module `__getattr__` ranked first in 9 of 13 toolz tasks), and rank 1 was 0.31 on toolz, 0.65
on train. The misses are bugs in code the failing test does not run while it runs (an import
hook, a registry filled at import) and in functions nearly every test of the file runs.

The suites: `agent finetune synthesize SDIST --split train --max-tasks 16 --seed 3` for the
five, and `agent finetune synthesize toolz-1.2.0 --max-tasks 13 --eval-only --seed 1`.
Per-task ranks and suspects: `bench/results/locate/ranks.json`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finetune.suite import load_suite
from tools.base import ToolContext, ToolError
from tools.locate import Locate, LocateArgs
from tools.sandbox.base import SandboxConfig
from tools.sandbox.local_sandbox import LocalSandbox


def rank_of(suspects: list[dict], path: str, function: str) -> int | None:
    """1-based rank of the suspect that is `function` of `path`, or None."""
    for number, suspect in enumerate(suspects, 1):
        name = suspect["function"]
        if suspect["path"] == path and (name == function or name.endswith("." + function)
                                        or function.endswith("." + name)):
            return number
    return None


def locate_task(suite_dir: Path, task) -> dict:
    extra = task.model_extra or {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(suite_dir / task.repo_path), str(work)],
                       check=True)
        subprocess.run(["git", "-C", str(work), "checkout", "-q", task.base_commit], check=True)
        sandbox = LocalSandbox(SandboxConfig(), work)
        sandbox.start()
        started = time.monotonic()
        try:
            observation = Locate().run(LocateArgs(test=task.FAIL_TO_PASS[0]),
                                       ToolContext(workspace=work, sandbox=sandbox))
            suspects, error = observation.data.get("suspects", []), ""
        except ToolError as exc:
            suspects, error = [], str(exc)[:300]
        finally:
            sandbox.close()
        seconds = time.monotonic() - started
    return {"instance_id": task.instance_id, "kind": extra.get("kind"),
            "rank": rank_of(suspects, str(extra.get("path")), str(extra.get("function"))),
            "suspects": [[s["path"], s["def_line"], s["function"]] for s in suspects],
            "seconds": round(seconds, 2), "error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="+", type=Path)
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    for suite_dir in args.suites:
        suite = load_suite(suite_dir)
        rows = [locate_task(suite_dir, task) for task in suite.tasks]
        results[suite_dir.name] = rows
        ranks = [row["rank"] for row in rows]
        n = len(rows)

        def share(limit: int, ranks: list = ranks, n: int = n) -> str:
            return f"{sum(r is not None and r <= limit for r in ranks) / n:.2f}"

        missing = sum(r is None for r in ranks)
        mean_s = sum(row["seconds"] for row in rows) / n
        print(f"| {suite_dir.name} | {n} | {share(1)} | {share(3)} | {share(5)} | {missing} | "
              f"{mean_s:.1f} |", flush=True)
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
