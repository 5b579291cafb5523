"""Train the embedded default for transfer: SFT (then GRPO) on oracle episodes of tasks
synthesized from real libraries plus the curriculum, judged on held-out *repositories* and on
the README's demo, and shipped as `local/apprentice-135m` with `--ship`.

    nohup python bench/bench_transfer.py --synthesis /tmp/synthbench --out runs/transfer \\
        [--per-repo 40] [--max-row-tokens 3072] [--sft-epochs 1] [--ship] > transfer.log &

`--synthesis` is `bench/bench_synthesis.py`'s output folder: its `corpus` suite (train split:
the training libraries and the curriculum's train tasks; test split: the held-out library and
the curriculum's test tasks), `eval-train.json` (the oracle's episodes on the train split,
whose verified trajectories are the SFT data) and `eval-more-itertools` (a library reserved for
evaluation, never trained on). Every stage writes into OUT and is skipped when its output is
there (delete it to redo it). Evaluations are `finetune.evaluate` runs, one greedy episode per
task (`--samples 4` adds sampled pass@4) on small balanced sub-suites:

- `curriculum`: the curriculum's held-out test tasks (other domains and names);
- `heldout-repo`: tasks of the library held out by `--split-by repo` (one per kind first);
- `more-itertools`: the evaluation-only library;
- `demo`: `agent solve` on `agent examples init`'s calculator, exactly as `.ci/demo` runs it.

Writes OUT/results.json and OUT/results.md (the table of every model on every suite), and with
`--ship` copies the SFT (or GRPO) adapter to agent/adapters/apprentice-135m with its manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent.episode import EpisodeConfig  # noqa: E402
from agent.episode_config import ContextConfig  # noqa: E402
from agent.llm import LLMConfig  # noqa: E402
from agent.models import ADAPTERS_DIR, adapter_digest  # noqa: E402
from finetune.evaluate import EvalOptions, evaluate  # noqa: E402
from finetune.sft_data import rows_digest, rows_from_trajectories, tokenize_row, write_rows  # noqa: E402
from finetune.suite import Suite, SuiteTask, load_suite, write_suite  # noqa: E402

BASE = "smollm2-135m"
SHIPPED = "apprentice-135m"
RESERVED = "more_itertools"
"""Never trained on: a task whose repository starts with this is refused as SFT data."""


def stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.monotonic()


def source_of(task: SuiteTask) -> str:
    """The library a task was synthesized from, or `curriculum`."""
    extra = task.model_extra or {}
    return str(extra.get("repo_name") or "curriculum")


def kind_of(task: SuiteTask) -> str:
    extra = task.model_extra or {}
    return str(extra.get("kind") or task.instance_id.rsplit("-", 1)[0])


def balanced(tasks: list[SuiteTask], limit: int, seed: int) -> list[SuiteTask]:
    """Up to `limit` tasks, round-robin over kinds (shuffled within a kind)."""
    rng = random.Random(seed)
    by_kind: dict[str, list[SuiteTask]] = {}
    for task in tasks:
        by_kind.setdefault(kind_of(task), []).append(task)
    for group in by_kind.values():
        rng.shuffle(group)
    picked: list[SuiteTask] = []
    while len(picked) < limit and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(picked) < limit:
                picked.append(by_kind[kind].pop())
    return picked


def sub_suite(suite: Suite, tasks: list[SuiteTask], out: Path) -> Path:
    """A suite of `tasks` (their bundles copied) in `out`."""
    if (out / "tasks.jsonl").is_file():
        return out
    for task in tasks:
        target = out / task.repo_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(suite.path / task.repo_path, target)
    write_suite(out, [t.model_copy(update={"split": "test"}) for t in tasks], suite.meta)
    return out


def eval_suites(synthesis: Path, out: Path, sizes: dict[str, int], seed: int) -> dict[str, Path]:
    corpus = load_suite(synthesis / "corpus")
    test = corpus.split("test")
    curriculum = [t for t in test if source_of(t) == "curriculum"]
    heldout = [t for t in test if source_of(t) != "curriculum"]
    held_more = load_suite(synthesis / "eval-more-itertools")
    return {  # the held-out repositories first: they are what the model is judged by
        "heldout-repo": sub_suite(corpus, balanced(heldout, sizes["heldout-repo"], seed),
                                  out / "suites" / "heldout-repo"),
        "more-itertools": sub_suite(held_more, balanced(held_more.split("test"),
                                                        sizes["more-itertools"], seed),
                                    out / "suites" / "more-itertools"),
        "curriculum": sub_suite(corpus, balanced(curriculum, sizes["curriculum"], seed),
                                out / "suites" / "curriculum"),
    }


def fits(tokens: dict[str, list[int]], max_tokens: int, reply_tokens: int) -> bool:
    """True when the conversation has at most `max_tokens` tokens and no reply of the model
    is longer than `reply_tokens` (the episode's reply limit: a longer one would be cut)."""
    replies, run = [], 0
    for bit in [*tokens["assistant_masks"], 0]:
        if bit:
            run += 1
        elif run:
            replies.append(run)
            run = 0
    return len(tokens["input_ids"]) <= max_tokens and max(replies, default=0) <= reply_tokens


def sft_rows(synthesis: Path, per_repo: int, max_tokens: int, reply_tokens: int, seed: int,
             tokenizer: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Verified oracle conversations of the train split: all the curriculum's, and up to
    `per_repo` per training library (balanced over kinds), none longer than `max_tokens` and
    no reply longer than `reply_tokens`."""
    corpus = load_suite(synthesis / "corpus")
    report = json.loads((synthesis / "eval-train.json").read_text())
    solved = {e["instance_id"]: e["trajectory_path"] for e in report["episodes"]
              if e["reward"] == 1 and e.get("trajectory_path")}
    by_source: dict[str, list[SuiteTask]] = {}
    for task in corpus.split("train"):
        if task.instance_id in solved:
            by_source.setdefault(source_of(task), []).append(task)
    rows, counts = [], {}
    for source, tasks in sorted(by_source.items()):
        if source.replace("-", "_").startswith(RESERVED):
            raise SystemExit(f"{source} is reserved for evaluation and must not be trained on")
        chosen = tasks if source == "curriculum" else balanced(tasks, len(tasks), seed)
        kept = 0
        for task in chosen:
            if source != "curriculum" and kept >= per_repo:
                break
            row = rows_from_trajectories([Path(solved[task.instance_id])])
            if row and fits(tokenize_row(row[0], tokenizer), max_tokens, reply_tokens):
                rows.append({**row[0], "instance_id": task.instance_id, "source": source})
                kept += 1
        counts[source] = kept
    random.Random(seed).shuffle(rows)
    return rows, counts


def run_eval(suite_dir: Path, save: Path, adapter: Path | None, args: argparse.Namespace,
             episodes: int = 1) -> dict[str, Any]:
    if save.is_file():
        return json.loads(save.read_text())
    options = EvalOptions(model=f"local/{BASE}", adapter=str(adapter) if adapter else None,
                          split="test", workers=1, episodes=episodes,
                          episode=EpisodeConfig(max_steps=args.episode_steps,
                                                llm=LLMConfig(max_tokens=args.max_tokens),
                                                context=ContextConfig(
                                                    repo_map_tokens=args.repo_map_tokens),
                                                repeat_guard=not args.no_repeat_guard),
                          output_dir=save.parent / f"{save.stem}-episodes")
    report = evaluate(load_suite(suite_dir), options, on_episode=lambda e: print(
        f"   {e.instance_id}: reward {e.reward} {e.exit_status} {e.steps} steps "
        f"{e.format_errors}/{e.model_calls} format errors {e.duration_s:.0f}s", flush=True))
    report.save(save)
    return json.loads(save.read_text())


def run_demo(save: Path, adapter: Path | None, home: Path) -> dict[str, Any]:
    """`.ci/demo`'s two commands with this adapter; the solve result JSON."""
    if save.is_file():
        return json.loads(save.read_text())
    demo = save.parent / f"{save.stem}-repo"
    agent = [sys.executable, "-m", "agent.cli"]
    env = {**os.environ, "APPRENTICE_HOME": str(home)}
    subprocess.run([*agent, "examples", "init", str(demo), "--force"], check=True, env=env)
    command = [*agent, "solve", str(demo / "issue.md"), "--repo", str(demo / "repo"),
               "--model", f"local/{BASE}", "--max-steps", "6", "--max-tokens", "256",
               "--repo-map-tokens", "0", "--json"]
    if adapter:
        command += ["--adapter", str(adapter)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    result = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {
        "error": proc.stderr[-2000:]}
    result["wall_time_s"] = round(time.monotonic() - started, 1)
    save.parent.mkdir(parents=True, exist_ok=True)
    save.write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_model(name: str, adapter: Path | None, suites: dict[str, Path], out: Path,
                   args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    demo = run_demo(out / "evals" / name / "demo.json", adapter, out / "home")
    figures["demo"] = {"reward": demo.get("reward"), "status": demo.get("exit_status"),
                       "steps": demo.get("steps"), "wall_time_s": demo.get("wall_time_s")}
    print(f"   demo: {figures['demo']}", flush=True)
    for suite_name, suite_dir in suites.items():
        started = stage(f"eval {name} on {suite_name}")
        report = run_eval(suite_dir, out / "evals" / name / f"{suite_name}.json", adapter, args)
        figures[suite_name] = {k: report["summary"].get(k) for k in
                               ("tasks", "pass@1", "format_error_rate", "mean_steps")}
        figures[suite_name]["per_kind"] = per_kind(report, suite_dir)
        if args.samples > 1:
            sampled = run_eval(suite_dir, out / "evals" / name / f"{suite_name}-k{args.samples}"
                               ".json", adapter, args, episodes=args.samples)
            figures[suite_name]["sampled_pass@1"] = sampled["summary"]["pass@1"]
            figures[suite_name]["pass@k"] = sampled["summary"]["pass@k"]
        print(f"   {suite_name}: {figures[suite_name]} ({time.monotonic() - started:.0f}s)",
              flush=True)
    return figures


def per_kind(report: dict[str, Any], suite_dir: Path) -> dict[str, str]:
    suite = load_suite(suite_dir)
    tally: dict[str, list[int]] = {}
    for episode in report["episodes"]:
        kind = kind_of(suite.task(episode["instance_id"]))
        tally.setdefault(kind, []).append(episode["reward"] or 0)
    return {k: f"{sum(v)}/{len(v)}" for k, v in sorted(tally.items())}


def ship(adapter: Path, manifest: dict[str, Any]) -> Path:
    """Copy the adapter (weights, config, tokenizer files) to agent/adapters/apprentice-135m
    and write its manifest."""
    target = ADAPTERS_DIR / SHIPPED
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter / name, target / name)
    manifest = {**manifest, "adapter_sha256": adapter_digest(target)}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def render(results: dict[str, Any]) -> str:
    suites = ["curriculum", "heldout-repo", "more-itertools"]
    lines = ["# bench_transfer", "", "| model | " + " | ".join(f"{s} pass@1" for s in suites)
             + " | demo reward |", "|---" * (len(suites) + 2) + "|"]
    for name, figures in results["models"].items():
        cells = []
        for s in suites:
            f = figures.get(s, {})
            cell = f"{f.get('pass@1')} ({f.get('tasks')})"
            if "sampled_pass@1" in f:
                cell += f", sampled {f['sampled_pass@1']}, pass@k {f.get('pass@k')}"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {figures.get('demo', {}).get('reward')} |")
    lines += ["", "Per kind (passed/tasks):", ""]
    for name, figures in results["models"].items():
        for s in suites:
            lines.append(f"- {name}, {s}: {figures.get(s, {}).get('per_kind')}")
    lines += ["", f"SFT data: {results['sft']['rows']} rows {results['sft']['sources']}",
              f"SFT: {json.dumps(results['sft'].get('metrics'))}",
              f"stage wall times (s): {json.dumps(results['times'])}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthesis", type=Path, default=Path("runs/synthesis"))
    parser.add_argument("--out", type=Path, default=Path("runs/transfer"))
    parser.add_argument("--per-repo", type=int, default=40,
                        help="oracle conversations per training library")
    parser.add_argument("--max-row-tokens", type=int, default=3072)
    parser.add_argument("--sft-epochs", type=float, default=1.0)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--lora-layers", type=int, default=10)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--curriculum-tasks", type=int, default=14)
    parser.add_argument("--heldout-tasks", type=int, default=13)
    parser.add_argument("--more-itertools-tasks", type=int, default=8)
    parser.add_argument("--episode-steps", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repo-map-tokens", type=int, default=0,
                        help="repository map in the prompt (0, as the demo and the SFT data)")
    parser.add_argument("--samples", type=int, default=1, help="also K sampled episodes")
    parser.add_argument("--no-repeat-guard", action="store_true",
                        help="evaluate without the repetition guard (to measure it)")
    parser.add_argument("--eval-only", default=None,
                        help="a label: evaluate the SFT adapter only, into evals/LABEL")
    parser.add_argument("--skip-base", action="store_true", help="do not evaluate the base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ship", action="store_true")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("APPRENTICE_HOME", str(out / "home"))
    times: dict[str, float] = {}
    suites = eval_suites(args.synthesis, out, {"curriculum": args.curriculum_tasks,
                                               "heldout-repo": args.heldout_tasks,
                                               "more-itertools": args.more_itertools_tasks},
                         args.seed)

    from transformers import AutoTokenizer

    from agent.models import resolve_model_path
    from finetune.run_dir import read_manifest
    from finetune.sft import LoraSettings, SFTRunConfig, run_sft

    data = out / "sft.jsonl"
    if not data.is_file():
        started = stage("SFT data: verified oracle conversations")
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(BASE))
        rows, counts = sft_rows(args.synthesis, args.per_repo, args.max_row_tokens,
                                args.max_tokens, args.seed, tokenizer)
        write_rows(rows, data)
        (out / "sft-sources.json").write_text(json.dumps(counts, indent=2) + "\n")
        times["sft data"] = round(time.monotonic() - started, 1)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    counts = json.loads((out / "sft-sources.json").read_text())

    sft_dir = out / "sft"
    if not (sft_dir / "adapter_model.safetensors").is_file():
        started = stage(f"SFT on {len(rows)} conversations {counts}")
        run_sft(rows, SFTRunConfig(model=BASE, output_dir=sft_dir, epochs=args.sft_epochs,
                                   learning_rate=args.sft_lr,
                                   lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r,
                                                     last_layers=args.lora_layers)),
                source=str(data))
        times["sft"] = round(time.monotonic() - started, 1)
    metrics = read_manifest(sft_dir)["metrics"]

    models: dict[str, Any] = {}
    if args.eval_only:
        figures = evaluate_model(args.eval_only, sft_dir, suites, out, args)
        (out / f"results-{args.eval_only}.json").write_text(json.dumps(figures, indent=2))
        return
    if not args.skip_base:
        models["base"] = evaluate_model("base", None, suites, out, args)
    models["sft"] = evaluate_model("sft", sft_dir, suites, out, args)
    results = {"models": models, "times": times, "args": {k: str(v) for k, v in
                                                          vars(args).items()},
               "sft": {"rows": len(rows), "sources": counts, "metrics": metrics,
                       "data_sha256": rows_digest(rows)}}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(render(results))
    print(render(results))
    if args.ship:
        suite = load_suite(args.synthesis / "corpus")
        target = ship(sft_dir, {
            "name": SHIPPED, "base_model": BASE, "trained_by": "bench/bench_transfer.py",
            "data_sha256": rows_digest(rows), "data_sources": counts,
            "suite": "bench/bench_synthesis.py corpus", "suite_sha256": suite.digest(),
            "config": read_manifest(sft_dir).get("config"), "metrics": metrics,
            "figures": {name: {s: {k: v for k, v in f.items() if k != "per_kind"}
                               for s, f in figures.items()} for name, figures in models.items()},
        })
        print(f"shipped: {target}")


if __name__ == "__main__":
    main()
