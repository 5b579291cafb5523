"""How well `locate` (spectrum-based fault localisation) finds a synthesized task's bug.

    python bench/bench_locate.py SUITE [SUITE ...] [--save OUT.json]

For every task of the suites (synthesized ones: they name the changed `path` and `function`),
`locate` runs on the first FAIL_TO_PASS test in a fresh sandbox at `base_commit`
(`finetune.locate_oracles.locate_suite`, what `agent finetune locate-oracles` runs), and the
rank of the changed function among the suspects is recorded. The figures below were measured
in a local sandbox; in Docker a call takes about 0.5 s plus the container's start.

Measured (2 CPU cores; rank of the changed function, 1 = first):

| suite | tasks | rank 1 | top 3 | top 5 | not listed | mean s/task |
|---|---|---|---|---|---|---|
| train-suite (5 libraries, 16 tasks each) | 80 | 0.66 | 0.80 | 0.88 | 10 | 2.3 |
| toolz-suite (held-out library) | 13 | 0.54 | 0.69 | 0.77 | 3 | 1.9 |

The failing test runs last: run first, it was charged with code that runs once (toolz's lazy
module `__getattr__` ranked first in 9 of 13 toolz tasks), and rank 1 was 0.31 on toolz, 0.65
on train. The misses are bugs in code the failing test does not run while it runs (an import
hook, a registry filled at import) and in functions nearly every test of the file runs.

Tried and dropped: breaking ties (common when the file has one test, so every function it runs
scores 1.0) by how directly the failing test calls a function (fewest frames of the
repository's code in between) instead of by path and line. It moved 5 toolz and 11 train ranks,
half up and half down: rank 1 stayed 7/13 and 53/80, top 5 went from 70 to 69 of 80. The bug is
as often in the helper as in the function the test calls.

The suites: `agent finetune synthesize SDIST --split train --max-tasks 16 --seed 3` for the
five, and `agent finetune synthesize toolz-1.2.0 --max-tasks 13 --eval-only --seed 1`.
Per-task ranks and suspects: `bench/results/locate/ranks.json`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from finetune.locate_oracles import locate_suite
from finetune.suite import load_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suites", nargs="+", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {}
    for suite_dir in args.suites:
        runs = locate_suite(load_suite(suite_dir), workers=args.workers)
        results[suite_dir.name] = [asdict(run) for run in runs]
        ranks = [run.rank for run in runs]
        n = max(1, len(runs))

        def share(limit: int, ranks: list = ranks, n: int = n) -> str:
            return f"{sum(r is not None and r <= limit for r in ranks) / n:.2f}"

        missing = sum(r is None for r in ranks)
        mean_s = sum(run.seconds for run in runs) / n
        print(f"| {suite_dir.name} | {len(runs)} | {share(1)} | {share(3)} | {share(5)} | "
              f"{missing} | {mean_s:.1f} |", flush=True)
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
