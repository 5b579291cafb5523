"""Inference-time scaling: N attempts per task and the patch the selector picks by running them.

For each suite and each N: single-attempt pass@1 (the mean reward of the attempts), the
selected patch's pass@1, pass@N (any attempt passed: the selector's upper bound), the share of
the gap between single pass@1 and pass@N the selector closes, the wall time per task, and the
selectors compared on the same runs: the tests only, + the vote, + the judge (with --judge).
Each N is one `agent eval --samples N` run (`finetune.evaluate`), so every attempt is a
recorded trajectory and every selection a `selection.jsonl` under OUT.

    # the tuned local model (long: N x tasks episodes; run it when the CPU is free)
    python bench/bench_samples.py --suite SUITE --split test --samples 4 8 \\
        --model local/apprentice-135m --max-steps 6 --judge --out results.json

    # a check of the machinery in a few minutes: the oracle, made unreliable on purpose
    python bench/bench_samples.py --suite SUITE --limit 3 --samples 4 --noisy-oracle 0.4

`--noisy-oracle P` replaces the model with the task's oracle script that, in each attempt
(drawn from a seed, per task and attempt), fixes the task with probability P, else gives up
(an empty patch) or writes an unrelated file (a patch that fixes nothing); there is no model
to judge with, so `--judge` is ignored there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent.episode import Episode, EpisodeConfig  # noqa: E402
from agent.samples import AttemptRunner  # noqa: E402
from agent.solve import SolveResult, solve  # noqa: E402
from agent.tasks import Task  # noqa: E402
from finetune.evaluate import EvalOptions, attempt_runner, evaluate  # noqa: E402
from finetune.oracle import ORACLE_MODEL, ORACLE_TOOL_SET, ScriptedPolicyServer  # noqa: E402
from finetune.suite import SuiteTask, load_suite  # noqa: E402
from tools.sandbox.pool import SandboxPool  # noqa: E402

GIVE_UP = [{"name": "finish", "arguments": {"summary": "I could not find the bug."}}]
UNRELATED = [{"name": "create", "arguments": {"path": "NOTES.md", "file_text":
                                              "Looked at the issue; nothing changed yet.\n"}},
             {"name": "finish", "arguments": {"summary": "Wrote notes."}}]


def noisy_oracle(p_fix: float, seed: int) -> Callable[[SuiteTask, EvalOptions,
                                                       SandboxPool | None], AttemptRunner]:
    """Runners whose attempts follow the oracle with probability `p_fix`, else give up or
    write an unrelated file (half and half), drawn per (task, attempt)."""
    def runners(task: SuiteTask, options: EvalOptions,
                pool: SandboxPool | None) -> AttemptRunner:
        def run(repo_task: Task, config: EpisodeConfig,
                on_open: Callable[[Episode], None]) -> SolveResult:
            attempt = config.group.attempt if config.group else 0
            draw = random.Random(f"{seed}:{task.instance_id}:{attempt}").random()
            script = (task.oracle or GIVE_UP) if draw < p_fix else \
                GIVE_UP if draw < p_fix + (1 - p_fix) / 2 else UNRELATED
            with ScriptedPolicyServer(script) as server:
                return solve(repo_task, config.model_copy(update={
                    "llm": server.llm_config(), "tools": config.tools or ORACLE_TOOL_SET}),
                    pool=pool, on_open=on_open)
        return run
    return runners


def measure(suite_dir: Path, samples: int, args: argparse.Namespace,
            out: Path | None) -> dict[str, Any]:
    """One `agent eval --samples N` run on one suite, and its figures."""
    suite = load_suite(suite_dir)
    if args.skip:
        skipped = {t.instance_id for t in suite.split(args.split)[: args.skip]}
        suite = dataclasses.replace(suite, tasks=[t for t in suite.tasks
                                                  if t.instance_id not in skipped])
    model = ORACLE_MODEL if args.noisy_oracle is not None else args.model
    options = EvalOptions(
        model=model, adapter=args.adapter, api_base=args.api_base, split=args.split,
        limit=args.limit, samples=samples, workers=args.workers,
        judge=args.judge and args.noisy_oracle is None,
        output_dir=out / f"{suite_dir.name}-n{samples}" if out else None)
    episode = options.episode
    options = options.model_copy(update={"episode": episode.model_copy(update={
        "max_steps": args.max_steps,
        "llm": episode.llm.model_copy(update={"max_tokens": args.max_tokens}),
        "context": episode.context.model_copy(
            update={"repo_map_tokens": args.repo_map_tokens})})})
    runners = noisy_oracle(args.noisy_oracle, args.seed) if args.noisy_oracle is not None \
        else attempt_runner
    started = time.monotonic()
    report = evaluate(suite, options, runners=runners)
    summary = report.summary
    single, selected, best = summary["single_pass@1"], summary["selected_pass@1"], \
        summary["pass@n"]
    return {
        "suite": suite_dir.name, "n": samples, "tasks": summary["tasks"],
        "single_pass@1": single, "selected_pass@1": selected, "pass@n": best,
        "gap_closed": round((selected - single) / (best - single), 3) if best > single
        else None,
        "selectors": summary["selectors"], "s_per_task": summary["mean_task_s"],
        "wall_time_s": round(time.monotonic() - started, 1), "report": str(
            Path(report.output_dir) / "report.json"), "per_task": summary["per_task"]}


def table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) \
            else str(value)

    lines = ["| suite | N | tasks | single pass@1 | selected pass@1 | pass@N | gap closed | "
             "tests | +vote | +judge | s/task |", "|" + "---|" * 11]
    for r in rows:
        picks = r["selectors"]
        lines.append("| " + " | ".join(cell(v) for v in (
            r["suite"], r["n"], r["tasks"], r["single_pass@1"], r["selected_pass@1"],
            r["pass@n"], r["gap_closed"], picks.get("tests"), picks.get("tests+vote"),
            picks.get("tests+vote+judge"), r["s_per_task"])) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, action="append", required=True,
                        help="A suite directory (repeat for several).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--skip", type=int, default=0,
                        help="Leave out the split's first K tasks (to extend an earlier run).")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N tasks "
                        "(after --skip).")
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--api-base", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256, help="Tokens per model call.")
    parser.add_argument("--repo-map-tokens", type=int, default=0,
                        help="Repository map in the prompt (0: none, as the shipped model's "
                             "figures were measured).")
    parser.add_argument("--judge", action="store_true", help="Add the judge (the model).")
    parser.add_argument("--noisy-oracle", type=float, default=None, metavar="P",
                        help="Instead of a model: the oracle, right with probability P.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Write the figures (JSON).")
    parser.add_argument("--runs", type=Path, default=None, help="Where the evaluations' "
                        "trajectories go (default: $APPRENTICE_HOME/evals).")
    args = parser.parse_args()
    rows = []
    for suite_dir in args.suite:
        for samples in args.samples:
            print(f"== {suite_dir.name}: N = {samples}", file=sys.stderr, flush=True)
            rows.append(measure(suite_dir, samples, args, args.runs))
            print(table(rows[-1:]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                 for k, v in vars(args).items()},
                                        "rows": rows}, indent=2, default=str) + "\n")
        print(f"figures: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
