"""Best-of-k from a recorded best-of-N run: the selector, run again on each task's first k attempts.

The first k of N independent attempts are k independent attempts, so an N = 8 run of
`bench_samples.py` (or `agent eval --samples 8`) also holds an N = 4 run: this bench reads each
group's recorded attempts (their patches next to their trajectories, their rewards in the
report), keeps attempts 0 .. k-1, and runs `agent.selection.select_patch` on them for real (the
visible tests of each candidate in a fresh sandbox, the attempts' own tests against each other,
the vote, and with --judge the model), so the selected patch is the one a k-attempt run would
have picked from these attempts. Rewards are the recorded ones (`agent verify`'s, per attempt).
Wall time per task is not measured here, only the selection's; `mean_recorded_task_s` is the
recorded run's (all N attempts and its selection: the report's, or for --groups from the first
attempt's first event to the selection event), a figure for k = N only.

    python bench/bench_resample.py --suite SUITE --report RUNS/cur-n8/report.json --take 4 \\
        --model local/apprentice-135m --judge --out results.json

`--report` repeated pools several runs on the same suite (an earlier run and its extension
with `bench_samples.py --skip K`); `--take N` on every run gives their pooled best-of-N.
`--groups DIR` reads the tasks of a run that was cut off before it wrote its report: every
`DIR/<task>/selection.jsonl`, with each attempt's reward from its trajectory's `verified` event
(an attempt that has none, because it was lost or never verified, scores 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from git import Repo  # noqa: E402

from agent.episode import task_sandbox  # noqa: E402
from agent.judge import PatchJudge  # noqa: E402
from agent.selection import (  # noqa: E402
    Candidate,
    SelectionOutcome,
    VisibleTask,
    select_patch,
    selector_signals,
)
from finetune.evaluate import EvalOptions  # noqa: E402
from finetune.suite import checkout_task, load_suite  # noqa: E402
from tools.sandbox.repo_image import image_for_repository  # noqa: E402
from trajectories.events import Verified  # noqa: E402
from trajectories.reader import read_trajectory  # noqa: E402


@dataclass
class RecordedGroup:
    """One task's recorded attempts: where its selection event is, and each attempt's reward."""

    instance_id: str
    selection_path: Path
    rewards: list[int]
    recorded_s: float | None
    """The recorded run's wall time for the task, all N attempts and the selection."""


def groups_of_report(report: dict[str, Any]) -> list[RecordedGroup]:
    """The groups of a finished run's report.json (those that ran without error)."""
    groups = []
    for group in report["groups"]:
        if group["broken"] or group["error"]:
            print(f"{group['instance_id']}: skipped ({group['error']})", file=sys.stderr)
            continue
        groups.append(RecordedGroup(group["instance_id"], Path(group["selection_path"]),
                                    [int(r or 0) for r in group["rewards"]],
                                    group.get("duration_s")))
    return groups


def recorded_reward(trajectory_path: Path) -> int:
    """The reward of an attempt's last `verified` event, 0 without one."""
    if not trajectory_path.is_file():
        return 0
    events = read_trajectory(trajectory_path).events
    verified = next((e for e in reversed(events) if isinstance(e, Verified)), None)
    return int(verified.reward or 0) if verified else 0


def groups_of_folder(runs: Path) -> list[RecordedGroup]:
    """The finished groups of a run folder (one sub-folder per task, named by its instance id),
    also of a run cut off before it wrote its report; a task without its selection is left out."""
    groups = []
    for selection_file in sorted(runs.glob("*/selection.jsonl")):
        event = json.loads(selection_file.read_text().splitlines()[-1])
        rows = sorted(event["candidates"], key=lambda r: r["attempt"])
        paths = [Path(r["trajectory_path"]) for r in rows]
        starts = [first_timestamp(path) for path in paths if path.is_file()]
        groups.append(RecordedGroup(selection_file.parent.name, selection_file,
                                    [recorded_reward(path) for path in paths],
                                    event["timestamp"] - min(starts) if starts else None))
    return groups


def first_timestamp(trajectory_path: Path) -> float:
    """When an attempt started: its first event's timestamp."""
    with trajectory_path.open() as lines:
        return float(json.loads(next(lines))["timestamp"])


def recorded_candidates(selection_file: Path, take: int) -> list[Candidate]:
    """Attempts 0 .. take-1 of a recorded group: each one's patch (the `.patch` beside its
    trajectory; none if it was lost) and why it was lost."""
    event = json.loads(selection_file.read_text().splitlines()[-1])
    candidates = []
    for row in sorted(event["candidates"], key=lambda r: r["attempt"])[:take]:
        patch_file = Path(row["trajectory_path"]).with_suffix(".patch")
        patch = patch_file.read_text() if patch_file.is_file() and not row["lost"] else ""
        candidates.append(Candidate(row["attempt"], patch, row["lost"]))
    if len(candidates) < take:
        raise SystemExit(f"{selection_file} has {len(candidates)} attempts, fewer than {take}")
    return candidates


def picks(outcome: SelectionOutcome, rewards: dict[int, int]) -> dict[str, int]:
    """The reward of each selector's pick (tests only, + vote, + judge where asked)."""
    selectors = {"tests": selector_signals(vote=False), "tests+vote": selector_signals()}
    if "judge" in outcome.used:
        selectors["tests+vote+judge"] = outcome.used
    return {name: 0 if (pick := outcome.pick(used)) is None else rewards[pick]
            for name, used in selectors.items()}


def resample(args: argparse.Namespace) -> dict[str, Any]:
    suite = load_suite(args.suite)
    groups = [g for path in args.report for g in groups_of_report(json.loads(path.read_text()))]
    groups += [g for folder in args.groups for g in groups_of_folder(folder)]
    if not groups:
        raise SystemExit("no recorded groups: give --report or --groups")
    options = EvalOptions(model=args.model, adapter=args.adapter)
    judge = PatchJudge(options.llm()) if args.judge else None
    per_task: dict[str, dict[str, Any]] = {}
    for group in groups:
        if group.instance_id in per_task:
            raise SystemExit(f"{group.instance_id} is recorded twice in the pooled runs")
        candidates = recorded_candidates(group.selection_path, args.take)
        rewards = {c.attempt: group.rewards[c.attempt] for c in candidates}
        task = suite.task(group.instance_id)
        with tempfile.TemporaryDirectory(prefix="apprentice-resample-") as tmp:
            repo_task = checkout_task(suite, task, Path(tmp) / "repo")
            base = Repo(repo_task.repo).commit(repo_task.base_commit or "HEAD").hexsha
            sandbox = image_for_repository(Path(repo_task.repo), base,
                                           task_sandbox(repo_task, options.episode),
                                           lambda m: print(m, file=sys.stderr),
                                           setup=repo_task.setup)
            started = time.monotonic()
            outcome = select_patch(VisibleTask.of(repo_task.model_copy(
                update={"base_commit": base}), base, sandbox), candidates, judge=judge,
                workers=args.workers)
        scores = list(rewards.values())
        per_task[task.instance_id] = {
            "rewards": scores, "single_pass@1": sum(scores) / len(scores),
            "selected": outcome.selected,
            "selected_pass@1": 0 if outcome.selected is None else rewards[outcome.selected],
            "pass@n": int(any(scores)), "picks": picks(outcome, rewards),
            "selection_s": round(time.monotonic() - started, 1), "notes": outcome.notes,
            "recorded_s": None if group.recorded_s is None else round(group.recorded_s, 1)}
        print(f"{task.instance_id}: {per_task[task.instance_id]}", file=sys.stderr, flush=True)
    return summarize(per_task, args)


def summarize(per_task: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def mean(key: str) -> float:
        values = [float(t[key]) for t in per_task.values()]
        return round(sum(values) / len(values), 4) if values else 0.0

    single, selected, best = mean("single_pass@1"), mean("selected_pass@1"), mean("pass@n")
    names = sorted({n for t in per_task.values() for n in t["picks"]})
    recorded = [t["recorded_s"] for t in per_task.values() if t["recorded_s"] is not None]
    return {
        "reports": [str(path) for path in args.report + args.groups], "n": args.take,
        "tasks": len(per_task),
        "single_pass@1": single, "selected_pass@1": selected, "pass@n": best,
        "gap_closed": round((selected - single) / (best - single), 3) if best > single
        else None,
        "selectors": {n: round(sum(t["picks"].get(n, 0) for t in per_task.values())
                               / max(len(per_task), 1), 4) for n in names},
        "mean_selection_s": mean("selection_s"),
        "mean_recorded_task_s": round(sum(recorded) / len(recorded), 1) if recorded else None,
        "per_task": per_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--report", type=Path, action="append", default=[],
                        help="report.json of a recorded `--samples N` evaluation (repeat to "
                             "pool several runs on the same suite).")
    parser.add_argument("--groups", type=Path, action="append", default=[],
                        help="A run folder whose report was never written (cut off): its "
                             "tasks' selection.jsonl and trajectories (repeatable).")
    parser.add_argument("--take", type=int, default=4, help="Attempts kept per task (k).")
    parser.add_argument("--model", default="local/apprentice-135m", help="The judge's model.")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--judge", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.take < 1:
        parser.error("--take must be at least 1")
    if not args.report and not args.groups:
        parser.error("give at least one --report or --groups")
    figures = resample(args)
    print(json.dumps({k: v for k, v in figures.items() if k != "per_task"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
