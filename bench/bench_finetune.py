"""The headline experiment: does training on the agent's own verified work make SmolLM2 better
at held-out tool-use tasks? Baseline eval -> oracle trajectories -> SFT -> eval -> GRPO -> eval.

    python bench/bench_finetune.py [--out DIR] [--train 100] [--grpo-tasks 40] [--test 14]
        [--sft-epochs 2] [--sft-lr 1e-3] [--lora-layers 10] [--grpo-steps 8] [--grpo-lr 1e-4]
        [--grpo-temperature 1.0] [--grpo-seed N] [--workers 1] [--eval-episodes 1]

The curriculum gets `--train + --grpo-tasks` train tasks and at least 14 held-out test tasks
(one per kind of bug; disjoint domains and names); the oracle solves the first `--train` for
SFT, GRPO explores the other `--grpo-tasks` (tasks SFT never saw), and the first `--test` test
tasks are evaluated (greedy). Every stage writes into DIR and is skipped when its output is
already there (delete a file or folder to redo it). Prints the before/after table, wall times
and training seconds per step; writes DIR/results.md and the runs' report.png / report.md.
Needs Docker, the sandbox image and the pulled model. `--workers 1` matters on a CPU: the
in-process model generates one call at a time and keeps one key/value cache, so with one
episode at a time each step only encodes the tokens it appends; parallel episodes re-encode the
whole prompt at every call. The model gets the `core` tools (its default): a 1,900-token prompt
instead of 2,500.

Measured (2 CPU cores, SmolLM2-135M-Instruct; 14 held-out tasks, one per kind, one greedy
episode each, 6 model calls of at most 128 tokens):

    eval                      pass@1  format errors  mean steps
    base                      0.000   0.357          6.0
    after SFT                 0.857   0.042          5.1      (+85.7 points)
    after GRPO (T 0.5)        0.857   0.056          5.1      (+0; 7 of 8 groups all-equal)
    after GRPO (T 1.0)        0.857   0.028          5.1      (+0; 4 of 8 groups all-equal)
    + 8 more steps (T 1.0)    0.857   0.028          5.1      (+0; 2 of 8 groups all-equal)

On the first 10 of these tasks (the earlier setting): base 0.0, SFT 0.9, GRPO 0.9.
SFT: 100 oracle conversations (~1,870 tokens each, ~200 of them the model's), 2 epochs at
1e-3, LoRA r 16 on the last 10 blocks: 200 steps, 9.5 s/step, 31.7 min. GRPO from the SFT
adapter on 40 train tasks SFT never saw, G=4, one episode at a time, lr 1e-4: 8 steps, 98 s/step
(13 min) at temperature 0.5 (the bench's run, `--grpo-temperature 0.5`); at 1.0, now the
default (`agent finetune grpo --adapter DIR/sft --skip 100 --workers 1 --learning-rate 1e-4
--temperature 1.0 --max-steps 8`), 101 s/step, 13.5 min. Training in all: 45 min.
Evaluations: 3 min each.
The 8 more steps ran from the T 1.0 adapter on other train tasks (`agent finetune grpo --adapter
DIR/grpo-t1.0 --skip 108 --seed 1 ...`, 108.6 s/step, 14.5 min): SFT + 16 GRPO steps is 59.7 min
of training. Sampled (`agent eval --episodes 4`, temperature 0.7, 56 episodes): pass@1 0.607
after SFT, 0.625 after 8 GRPO steps, 0.679 after 16 (38 passing episodes instead of 34; per-task
counts move both ways: at the edge of noise); pass@4 0.857, 0.857, 0.929.
What the model learnt: the agent's procedure (grep the function, view its file from the line
grep printed, str_replace, run the tests, finish), and for 12 of the 14 kinds of bug which edit
to make, on names and domains it never saw. The two misses: `wrong_operator_product`, where it
copied the module path wrong (`weather/reads.py` for `weather/readings.py`) and then never
recovered (the oracle never shows a retry); and `missing_file`, where it created the test file
instead of the module. What made the difference from the first run (0.2 after SFT): 2 epochs
instead of 1, and the `core` tool set, which cut each conversation from 2,500 to 1,870 tokens
(9.5 s/step instead of 17.6, so 2 epochs cost about what 1 did). GRPO has little left to fix
where SFT is this strong: at temperature 0.5 the SFT policy passes or fails a train task in all
4 samples (7 of 8 groups without signal); at 1.0 half the groups carry signal, and greedy
held-out pass@1 stays where SFT left it; only the sampled figures move, a little.

The shipped default (`local/apprentice-135m`, 2026-12-02): `--train 98 --grpo-tasks 0
--grpo-steps 0 --sft-epochs 2 --max-tokens 256 --repo-map-tokens 0 --skip-base --demo
--refine-tasks 56 --heldout toolz=... --heldout more-itertools=... --ship`, the train split
varied (names, issue-like statements, twins of the buggy line; `finetune.name_variants`):

    stage                               curriculum  demo  training
    SFT, 98 episodes, 2 epochs          0.429       0     196 steps, 17.4 s/step, 57 min
    + refine, 56 episodes, 1 epoch      0.429       1     56 steps, 27.7 s/step, 26 min

(the machine was shared with other work; held-out repositories: bench/results/apprentice-135m).
The first stage fixed the demo's path and operator but sent `return a - b`, which also occurs in
`subtract`, and ignored the tool's refusal; the refine pass (half of its episodes anchored on
the `def`, or refused and then anchored) made it send the anchored edit directly.

The default since 2026-12-07 adds `--plain-pass --plain-packages`: one more pass from the refine
adapter on the oracles of the train split drawn again without varied names but with package
names drawn from a pool of 48 (`generate_curriculum(vary_train=False, vary_packages=True)`; the
test split is the same task for task), shuffled with the refine pass's 28 anchored episodes
(126 steps, lr 5e-4). Teacher-forced on the 14 held-out oracles, the refine adapter's first
greedy miss was in 11 of them; in 4 of the 5 tasks of the `library` package it wrote
`tests/...` where grep had printed `library/...`: the 8 train packages were all it knew.
Measured from the 2026-12-02 adapter:

    stage                                           curriculum  demo  training
    + plain pass, unvaried names (98 + 28)          0.571       1     126 steps, 12.4 s/step, 26 min
    + plain pass, names unvaried, packages varied   0.714       1     126 steps, 16.9 s/step, 35 min

(bench/results/apprentice-135m/plain-*). The plain-pass adapter's four misses were mistakes it
did not recover from, because no oracle ever made one: an edit of `catalogue.py` for
`library/catalogue.py` (refused, then the tests and `finish`), `MINUTES_PER_HOUR = 60` sent
unchanged (the constant sat above the lines it viewed), `return coutn` sent unchanged, and a
grep for a module the issue asks to create. The default since 2026-12-07 (later) adds
`--recovery-pass` (`recovery_pass`): oracles that make those mistakes first and recover from
the tool's answer (`generate_curriculum(mistake_share=0.5)`; the tool now also names the path
meant), with the refused turn masked out of the loss, mixed with plain and anchored oracles
(97 conversations, 1 epoch, lr 5e-4), from the plain-pass adapter:

    stage                                           curriculum  demo  training
    + recovery pass (7 + 20 + 20 + 4 recoveries,    0.929       1     97 steps, 9.5 s/step, 15 min
      26 plain, 20 anchored): shipped; sampled 4 per task at 0.7: pass@1 0.714, pass@4 0.929;
      toolz 0/13, more-itertools 0/8 (today's draws)

(bench/results/apprentice-135m/recovery-*). Three of the four misses now pass without a
mistake to recover from: it edits `library/catalogue.py` and writes `return count` the first
time, and creates the missing module after the grep that finds nothing (as the search-first
oracles do). It still sends `MINUTES_PER_HOUR = 60` unchanged, and after the refusal edits a
misspelt path instead of viewing the whole file (7 such oracles of 97 were not enough). Since
then `str_replace` reports that edit as not found, quoting the line the file holds
(`MINUTES_PER_HOUR = 24`), and the recovering oracle edits from the quote instead of viewing
the file. The default since 2026-12-07 (latest) is the whole command rerun on a quiet machine
with that form and a recovery draw of 392 tasks (14 constant recoveries, 7 search-first; 107
rows; bench/results/apprentice-135m/quiet-chain-*):

    stage                                           curriculum  demo  training
    SFT, refine, plain, recovery (one command)      0.857       1     196 + 56 + 126 + 107 steps,
      sampled 4 per task at 0.7: pass@1 0.786,                        8.8 s/step, 69.8 min
      pass@4 0.929; toolz 0/13, more-itertools 0/8,                   (+8.3 min of oracles)
      no malformed call on either

Greedily one task fewer than the chain before it (the constant, renamed rather than re-valued,
and `wrong_default`, fixed and then deleted by a second edit without `new_str`); sampled, 44
passing episodes of 56 against 40. The constant still fails all 4 samples.

The default since 2026-12-07 (last) ends the same command with 8 GRPO steps from the recovery
pass (`--grpo-tasks 40 --grpo-seed 2 --grpo-steps 8`: the 40 tasks are a curriculum draw of
their own, so SFT's data is unchanged; G 4, T 1.0, lr 1e-4, one episode at a time):

    stage                                           curriculum  demo  training
    + GRPO, 8 steps (7 of 8 groups with signal)     0.929       1     8 steps, 101 s/step,
      sampled 4 per task at 0.7: pass@1 0.714,                        13.4 min; 83.3 min in all
      pass@4 0.929; toolz 0/13, more-itertools 0/8

Greedy on the test splits of three more draws (seeds 1 to 3, 42 tasks): SFT 12, 12, 10; SFT +
GRPO 12, 13, 12 (50 of 56 with seed 0's, against 46). Sampled on seed 0 it is 4 episodes of 56
behind SFT. The step metrics were those of an earlier `agent finetune grpo` run from the
shipped SFT adapter, digit for digit (bench/results/apprentice-135m/quiet-chain-grpo-bench-*).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent.episode import EpisodeConfig  # noqa: E402
from agent.episode_config import ContextConfig  # noqa: E402
from agent.llm import LLMConfig  # noqa: E402
from finetune.curriculum import generate_curriculum  # noqa: E402
from finetune.evaluate import EvalOptions, EvalReport, evaluate  # noqa: E402
from finetune.report import eval_table, write_report  # noqa: E402
from finetune.sft_data import load_rows  # noqa: E402
from finetune.suite import load_suite  # noqa: E402
from finetune.warm_start import SFT_FILE, oracle_trajectories  # noqa: E402


def stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.monotonic()


def done(started: float, times: dict[str, float], name: str) -> None:
    times[name] = round(time.monotonic() - started, 1)
    print(f"   {name}: {times[name]:.0f}s", flush=True)


def run_eval(args: argparse.Namespace, suite_dir: Path, save: Path,
             adapter: Path | None = None) -> dict:
    if save.is_file():
        return json.loads(save.read_text())
    suite = load_suite(suite_dir)
    options = EvalOptions(model="local/smollm2-135m", adapter=str(adapter) if adapter else None,
                          split="test", limit=args.test, workers=args.workers,
                          episodes=args.eval_episodes,
                          episode=EpisodeConfig(max_steps=args.episode_steps,
                                                llm=LLMConfig(max_tokens=args.max_tokens),
                                                context=ContextConfig(
                                                    repo_map_tokens=args.repo_map_tokens)),
                          output_dir=save.parent / f"{save.stem}-episodes")
    report: EvalReport = evaluate(suite, options, on_episode=lambda e: print(
        f"   {e.instance_id}: reward {e.reward} {e.exit_status} {e.steps} steps "
        f"{e.format_errors}/{e.model_calls} format errors {e.duration_s:.0f}s", flush=True))
    report.save(save)
    return json.loads(save.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/apprentice-bench-finetune"))
    parser.add_argument("--train", type=int, default=100,
                        help="train tasks the oracle solves for SFT")
    parser.add_argument("--grpo-tasks", type=int, default=40,
                        help="further train tasks, unseen by SFT, that GRPO explores")
    parser.add_argument("--test", type=int, default=14, help="held-out tasks evaluated")
    parser.add_argument("--eval-episodes", type=int, default=1,
                        help="episodes per held-out task (K of pass@K; >1 samples at 0.7)")
    parser.add_argument("--workers", type=int, default=1,
                        help="episodes at once; 1 keeps the local model's key/value cache warm")
    parser.add_argument("--episode-steps", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repo-map-tokens", type=int, default=512,
                        help="repository map in the prompts of the oracle and the evals")
    parser.add_argument("--skip-base", action="store_true", help="do not evaluate the base")
    parser.add_argument("--heldout", action="append", default=[], metavar="NAME=SUITE",
                        help="also evaluate on a suite of a repository never trained on "
                             "(`agent finetune synthesize --eval-only`); repeatable")
    parser.add_argument("--refine-tasks", type=int, default=0,
                        help="then one more pass on N fresh tasks, half of them with a twin "
                             "of the buggy line (anchored or recovering edits)")
    parser.add_argument("--refine-lr", type=float, default=5e-4)
    parser.add_argument("--plain-pass", action="store_true",
                        help="after the refine pass, one more on the oracles of the train "
                             "split drawn without varied names, plus the refine pass's "
                             "anchored episodes")
    parser.add_argument("--plain-packages", action="store_true",
                        help="in the plain pass, package names drawn from a wide pool "
                             "(`generate_curriculum(vary_packages=True)`)")
    parser.add_argument("--recovery-pass", action="store_true",
                        help="after the refine (and plain) pass, one pass on oracles that "
                             "recover from the model's mistakes (`recovery_pass`)")
    parser.add_argument("--ship", action="store_true",
                        help="copy the final adapter to agent/adapters/apprentice-135m")
    parser.add_argument("--demo", action="store_true",
                        help="also run the README's demo with each adapter")
    parser.add_argument("--sft-epochs", type=float, default=2.0)
    parser.add_argument("--sft-lr", type=float, default=1e-3)
    parser.add_argument("--lora-layers", type=int, default=10)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--grpo-steps", type=int, default=8)
    parser.add_argument("--grpo-generations", type=int, default=4)
    parser.add_argument("--grpo-lr", type=float, default=1e-4)
    parser.add_argument("--grpo-temperature", type=float, default=1.0)
    parser.add_argument("--grpo-seed", type=int, default=None,
                        help="draw GRPO's --grpo-tasks as a curriculum of their own with this "
                             "seed (DIR/grpo-suite) instead of after the SFT tasks of DIR/suite")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("APPRENTICE_HOME", str(out / "home"))
    times: dict[str, float] = {}
    suite_dir = out / "suite"
    if not (suite_dir / "tasks.jsonl").is_file():
        started = stage("curriculum")
        generate_curriculum(suite_dir, train=sft_train_tasks(args),
                            test=max(args.test, 14), force=True)
        done(started, times, "curriculum")

    base = None
    if not args.skip_base:
        started = stage("baseline eval (SmolLM2-135M, held-out test split)")
        base = run_eval(args, suite_dir, out / "evals" / "base.json")
        done(started, times, "baseline eval")

    oracle_dir = out / "oracle"
    if not (oracle_dir / SFT_FILE).is_file():
        started = stage(f"oracle trajectories (first {args.train} train tasks, real agent loop)")
        report, rows = oracle_trajectories(load_suite(suite_dir), oracle_dir, limit=args.train,
                                           workers=4, repo_map_tokens=args.repo_map_tokens)
        print(f"   {len(rows)} verified of {report.summary['episodes']} episodes")
        done(started, times, "oracle")
    rows = load_rows(oracle_dir / SFT_FILE)

    from finetune.run_dir import read_manifest
    from finetune.sft import LoraSettings, SFTRunConfig, run_sft

    sft_dir = out / "sft"
    if not (sft_dir / "adapter_model.safetensors").is_file():
        started = stage(f"SFT on {len(rows)} oracle trajectories")
        run_sft(rows, SFTRunConfig(model="smollm2-135m", output_dir=sft_dir,
                                   epochs=args.sft_epochs, learning_rate=args.sft_lr,
                                   lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r,
                                                     last_layers=args.lora_layers)),
                source=str(oracle_dir / SFT_FILE))
        done(started, times, "sft")
    sft_metrics = read_manifest(sft_dir)["metrics"]
    if args.refine_tasks:
        sft_dir, rows = refine(args, out, sft_dir, rows, times)
        sft_metrics = read_manifest(sft_dir)["metrics"]
        if args.plain_pass:
            sft_dir, rows = plain_pass(args, out, sft_dir, rows, times)
            sft_metrics = read_manifest(sft_dir)["metrics"]
        if args.recovery_pass:
            sft_dir, rows = recovery_pass(args, out, sft_dir, rows, times)
            sft_metrics = read_manifest(sft_dir)["metrics"]

    if args.demo:
        run_demo_with(sft_dir, out, "SFT")
    started = stage("eval after SFT")
    after_sft = run_eval(args, suite_dir, sft_dir / "evals" / "after-sft.json", sft_dir)
    done(started, times, "eval after sft")
    reports = {"after-sft": sft_dir / "evals" / "after-sft.json"}
    if base is not None:
        shutil.copy(out / "evals" / "base.json", sft_dir / "evals" / "base.json")
        reports = {"base": sft_dir / "evals" / "base.json", **reports}
    write_report(sft_dir, reports)
    grpo_metrics = None
    after_grpo = None
    if args.grpo_steps:
        from finetune.grpo import GRPORunConfig, run_grpo

        grpo_dir = out / "grpo"
        grpo_suite, skip = suite_dir, args.train
        if args.grpo_seed is not None:
            grpo_suite, skip = out / "grpo-suite", 0
            if not (grpo_suite / "tasks.jsonl").is_file():
                generate_curriculum(grpo_suite, train=args.grpo_tasks, test=14,
                                    seed=args.grpo_seed, force=True)
        if not (grpo_dir / "adapter_model.safetensors").is_file():
            started = stage(f"GRPO from {sft_dir}, {args.grpo_steps} steps on "
                            f"{args.grpo_tasks} train tasks SFT did not see")
            run_grpo(GRPORunConfig(suite=grpo_suite, model="smollm2-135m", adapter=sft_dir,
                                   output_dir=grpo_dir, skip=skip, limit=args.grpo_tasks,
                                   max_steps=args.grpo_steps,
                                   num_generations=args.grpo_generations,
                                   learning_rate=args.grpo_lr,
                                   temperature=args.grpo_temperature, workers=args.workers,
                                   episode_max_steps=args.episode_steps,
                                   max_tokens=args.max_tokens,
                                   repo_map_tokens=args.repo_map_tokens))
            done(started, times, "grpo")
        grpo_metrics = read_manifest(grpo_dir)["metrics"]
        if args.demo:
            run_demo_with(grpo_dir, out, "GRPO")
        started = stage("eval after GRPO")
        after_grpo = run_eval(args, suite_dir, grpo_dir / "evals" / "after-grpo.json", grpo_dir)
        done(started, times, "eval after grpo")
        reports["after-grpo"] = grpo_dir / "evals" / "after-grpo.json"
        write_report(grpo_dir, reports)

    final = out / "grpo" if grpo_metrics else sft_dir
    demo_result = None
    if args.demo:
        demo_result = json.loads((final / "evals" / "demo.json").read_text())
    heldout = {}
    for spec in args.heldout:
        name, _, folder = spec.partition("=")
        started = stage(f"eval on the held-out repository {name} ({folder})")
        heldout[name] = run_eval(args, Path(folder), final / "evals" / f"heldout-{name}.json",
                                 final)
        done(started, times, f"eval {name}")

    table = eval_table(reports)
    lines = ["# bench_finetune", "", table, ""]
    for name, report in heldout.items():
        summary = report["summary"]
        lines.append(f"held-out repository {name}: pass@1 {summary['pass@1']} "
                     f"({summary['tasks']} tasks), format-error rate "
                     f"{summary.get('format_error_rate')}")
    if demo_result is not None:
        lines.append(f"demo: reward {demo_result.get('reward')}, {demo_result.get('steps')} "
                     f"steps, {demo_result.get('wall_time_s')} s")
    if base is not None:
        gain = after_sft["summary"]["pass@1"] - base["summary"]["pass@1"]
        lines.append(f"pass@1 change after SFT: {gain * 100:+.1f} points")
    if after_grpo:
        more = after_grpo["summary"]["pass@1"] - after_sft["summary"]["pass@1"]
        lines.append(f"pass@1 change of GRPO over SFT: {more * 100:+.1f} points")
    lines.append(f"last SFT stage: {len(rows)} oracle conversations in all, "
                 f"{sft_metrics['steps']} steps, "
                 f"{sft_metrics['seconds_per_step']} s/step, {sft_metrics['seconds']} s, "
                 f"train loss {sft_metrics.get('train_loss', 0):.3f}")
    stages = training_stages(final)
    training = training_seconds(stages)
    if len(stages) > 1:
        lines.append("stages (s): " + ", ".join(
            f"{stage['adapter']} {(stage['metrics'] or {}).get('seconds')}" for stage in stages))
    if grpo_metrics:
        lines.append(f"GRPO: {grpo_metrics['steps']} steps, {grpo_metrics['seconds_per_step']} "
                     f"s/step, {grpo_metrics['seconds']} s; {grpo_metrics['groups_all_equal']} "
                     f"of {grpo_metrics['groups']} groups had all-equal rewards")
    lines.append(f"training wall time (every SFT stage + GRPO): {training / 60:.1f} min")
    lines.append(f"stage wall times (s): {json.dumps(times)}")
    lines.append(f"reports: {sft_dir / 'report.md'}"
                 + (f", {out / 'grpo' / 'report.md'}" if grpo_metrics else ""))
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print("\n" + text)
    if args.ship:
        ship_adapter(final, rows, suite_dir, after_grpo or after_sft, heldout, demo_result)


def sft_train_tasks(args: argparse.Namespace) -> int:
    """Train tasks of DIR/suite: the SFT ones, and GRPO's after them unless they have a draw of
    their own (`--grpo-seed`)."""
    return args.train + (args.grpo_tasks if args.grpo_seed is None else 0)


def run_demo_with(adapter: Path, out: Path, name: str) -> dict[str, Any]:
    """The README's demo with `adapter` (once: its result is kept in the adapter's evals)."""
    from bench_transfer import run_demo

    demo = run_demo(adapter / "evals" / "demo.json", adapter, out / "home")
    print(f"   demo after {name}: reward {demo.get('reward')}, {demo.get('steps')} steps, "
          f"{demo.get('wall_time_s')} s", flush=True)
    return demo


def refine(args: argparse.Namespace, out: Path, adapter: Path, rows: list,
           times: dict[str, float]) -> tuple[Path, list]:
    """Go on training `adapter` for one short pass on a fresh curriculum draw (seed + 1) in
    which every kind that can have a twin has one (`finetune.name_variants`) and half of those
    oracles first try the ambiguous edit and recover from the tool's refusal; the rest of the
    pass is other kinds, so nothing learnt is dropped. Returns (adapter, all rows trained on)."""
    from finetune.run_dir import read_manifest
    from finetune.sft import LoraSettings, SFTRunConfig, run_sft
    from finetune.sft_data import rows_from_trajectories, write_rows

    refine_dir = out / "refine"
    suite_dir = out / "refine-suite"
    if not (suite_dir / "tasks.jsonl").is_file():
        generate_curriculum(suite_dir, train=2 * args.refine_tasks, test=14, seed=1,
                            force=True, twin_share=1.0, recovery_share=0.5)
    data = refine_dir / "oracle" / SFT_FILE
    if not data.is_file():
        started = stage("refine: oracle trajectories on a fresh draw")
        report, _ = oracle_trajectories(load_suite(suite_dir), refine_dir / "oracle",
                                        workers=4, repo_map_tokens=args.repo_map_tokens)
        suite = load_suite(suite_dir)
        anchored, others = [], []
        for episode in report.episodes:
            if episode.reward != 1 or not episode.trajectory_path:
                continue
            task = suite.task(episode.instance_id)
            calls = ((c["name"], c["arguments"]) for c in task.oracle or [])
            group = anchored if anchors_on_def(calls) else others
            group.append(Path(episode.trajectory_path))
        share = min(len(anchored), args.refine_tasks // 2)
        picked = anchored[:share] + others[:args.refine_tasks - share]
        write_rows(rows_from_trajectories(picked), data)
        print(f"   {share} anchored or recovering episodes + {len(picked) - share} others")
        done(started, times, "refine oracle")
    refine_rows = load_rows(data)
    if not (refine_dir / "adapter_model.safetensors").is_file():
        started = stage(f"refine: SFT from {adapter} on {len(refine_rows)} conversations")
        run_sft(refine_rows, SFTRunConfig(model="smollm2-135m", output_dir=refine_dir,
                                          init_adapter=adapter, epochs=1,
                                          learning_rate=args.refine_lr,
                                          lora=LoraSettings(r=args.lora_r,
                                                            alpha=2 * args.lora_r,
                                                            last_layers=args.lora_layers)),
                source=str(data))
        done(started, times, "refine sft")
    read_manifest(refine_dir)
    return refine_dir, [*rows, *refine_rows]


def plain_pass(args: argparse.Namespace, out: Path, adapter: Path, rows: list,
               times: dict[str, float]) -> tuple[Path, list]:
    """Go on training `adapter` for one pass on the oracles of the train split drawn without
    varied names (the same seed, so the same test split: `generate_curriculum(vary_train=
    False)`), shuffled with the refine pass's anchored episodes so the anchored edit is kept.
    Varied names alone leave the model viewing `tests/...` where grep printed the module's
    path. Returns (adapter, all rows trained on)."""
    plain_dir = out / "plain"
    suite_dir = out / "plain-suite"
    if not (suite_dir / "tasks.jsonl").is_file():
        generate_curriculum(suite_dir, train=sft_train_tasks(args),
                            test=max(args.test, 14), force=True, vary_train=False,
                            vary_packages=args.plain_packages)
    oracle = plain_dir / "oracle" / SFT_FILE
    if not oracle.is_file():
        started = stage("plain pass: oracle trajectories on the unvaried train split")
        oracle_trajectories(load_suite(suite_dir), plain_dir / "oracle", limit=args.train,
                            workers=4, repo_map_tokens=args.repo_map_tokens)
        done(started, times, "plain oracle")
    anchored = [row for row in load_rows(out / "refine" / "oracle" / SFT_FILE)
                if anchors_on_def(row_calls(row))]
    pass_rows = train_pass(args, adapter, [*load_rows(oracle), *anchored], plain_dir, "plain",
                           times)
    return plain_dir, [*rows, *pass_rows]


RECOVERY_SHARES = {"unchanged constant": 14, "unchanged": 20, "bare path": 20,
                   "search first": 7, "plain": 26, "anchored": 20}
"""Rows of each kind the recovery pass trains on (107 in all; the 392-task draw held 14 constant
recoveries, 7 search-first ones and enough of the rest)."""


def recovery_kind(row: dict[str, Any]) -> str:
    """Which recovery an oracle conversation teaches (`finetune.curriculum.MISTAKES`), from the
    tool results it holds: 'unchanged constant', 'unchanged', 'bare path', 'search first',
    'anchored' (a twin's ambiguous edit refused, or an edit anchored on its `def`) or 'plain'."""
    results = [str(m.get("content") or "") for m in row["messages"] if m["role"] == "tool"]
    calls = row_calls(row)
    if any("was not found" in r for r in results):
        return "unchanged constant"  # the constant written from memory: the tool quotes it
    if any("nothing would change" in r for r in results):
        return "unchanged"
    if any("Did you mean" in r for r in results):
        return "bare path"
    if calls and calls[0][0] == "grep" and any(n == "create" for n, _ in calls):
        return "search first"
    return "anchored" if anchors_on_def(calls) else "plain"


def recovery_pass(args: argparse.Namespace, out: Path, adapter: Path, rows: list,
                  times: dict[str, float]) -> tuple[Path, list]:
    """Go on training `adapter` for one pass on oracles that make the model's own mistakes
    first and recover from the tool's answer: an edit path without its folder, an edit that
    changes nothing (for a module constant above the lines viewed, the value it should have,
    which the tool answers by quoting the line the file holds), a grep for a module that does
    not exist yet (`generate_curriculum(mistake_share=0.5)`, a fresh draw of 392 train tasks,
    seed 3, plain names, varied packages; 28 of them have a module constant). The refused
    calls are context, not targets (`finetune.sft_data.weigh_refused_turns`). Mixed with plain
    oracles of the same draw and the refine pass's anchored ones, `RECOVERY_SHARES` of each.
    Returns (adapter, all rows trained on)."""
    recovery_dir = out / "recovery"
    suite_dir = out / "recovery-suite"
    if not (suite_dir / "tasks.jsonl").is_file():
        generate_curriculum(suite_dir, train=392, test=14, seed=3, force=True,
                            vary_train=False, vary_packages=True, mistake_share=0.5)
    oracle = recovery_dir / "oracle" / SFT_FILE
    if not oracle.is_file():
        started = stage("recovery pass: oracle trajectories that recover from a mistake")
        oracle_trajectories(load_suite(suite_dir), recovery_dir / "oracle", workers=3,
                            repo_map_tokens=args.repo_map_tokens)
        done(started, times, "recovery oracle")
    groups: dict[str, list] = {}
    for row in [*load_rows(oracle), *load_rows(out / "refine" / "oracle" / SFT_FILE)]:
        groups.setdefault(recovery_kind(row), []).append(row)
    pass_rows = [row for kind, count in RECOVERY_SHARES.items()
                 for row in groups.get(kind, [])[:count]]
    print("   " + ", ".join(f"{kind} {min(len(groups.get(kind, [])), count)}"
                          for kind, count in RECOVERY_SHARES.items()))
    pass_rows = train_pass(args, adapter, pass_rows, recovery_dir, "recovery", times)
    return recovery_dir, [*rows, *pass_rows]


def train_pass(args: argparse.Namespace, adapter: Path, pass_rows: list, folder: Path,
               name: str, times: dict[str, float]) -> list:
    """One epoch of SFT from `adapter` into `folder` on `pass_rows`, shuffled (seed 0), at the
    refine pass's learning rate; skipped when `folder` already holds an adapter, and the data
    file written only when it trains. Returns the rows in the order trained on."""
    import random

    from finetune.run_dir import read_manifest
    from finetune.sft import LoraSettings, SFTRunConfig, run_sft
    from finetune.sft_data import write_rows

    pass_rows = list(pass_rows)
    random.Random(0).shuffle(pass_rows)
    if not (folder / "adapter_model.safetensors").is_file():
        started = stage(f"{name} pass: SFT from {adapter} on {len(pass_rows)} conversations")
        data = write_rows(pass_rows, folder / "data.jsonl")
        run_sft(pass_rows, SFTRunConfig(model="smollm2-135m", output_dir=folder,
                                        init_adapter=adapter, epochs=1,
                                        learning_rate=args.refine_lr,
                                        lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r,
                                                          last_layers=args.lora_layers)),
                source=str(data))
        done(started, times, f"{name} sft")
    read_manifest(folder)
    return pass_rows


def row_calls(row: dict[str, Any]) -> list[tuple[str, Any]]:
    """(tool name, arguments) of every call in an SFT row, in order."""
    return [(call["function"]["name"], call["function"]["arguments"])
            for message in row["messages"] for call in message.get("tool_calls") or []]


def anchors_on_def(calls: Iterable[tuple[str, Any]]) -> bool:
    """Whether one of the (tool name, arguments) calls is a `str_replace` whose `old_str` starts
    at a `def`: the anchored edit a twin of the buggy line calls for."""
    return any(name == "str_replace" and isinstance(arguments, dict)
               and str(arguments.get("old_str", "")).startswith("def ")
               for name, arguments in calls)


def training_stages(adapter: Path) -> list[dict[str, Any]]:
    """The runs that made `adapter`, first to last: each one's folder name, config, metrics and
    data, following the adapter each went on training from (an SFT run's `init_adapter`, a
    GRPO run's `adapter`). Every one must be a run folder: a shipped adapter is replaced by
    the next shipment, so its manifest may no longer describe what a run started from."""
    from finetune.run_dir import read_manifest

    stages: list[dict[str, Any]] = []
    folder = adapter
    while True:
        run = read_manifest(folder)
        stages.insert(0, {"adapter": folder.name, "kind": run.get("kind", "sft"),
                          "config": run.get("config"), "metrics": run.get("metrics"),
                          "data": run.get("data")})
        config = run.get("config") or {}
        parent = config.get("init_adapter") or config.get("adapter")
        if not parent:
            return stages
        folder = Path(parent)


def training_seconds(stages: list[dict[str, Any]]) -> float:
    """The training seconds of `training_stages`, added up."""
    return sum((stage["metrics"] or {}).get("seconds", 0) for stage in stages)


def grpo_sources(manifest: dict[str, Any]) -> dict[str, Any]:
    """For a GRPO run's manifest, the tasks its episodes explored (none for SFT)."""
    if manifest.get("kind") != "grpo":
        return {}
    data = manifest.get("data") or {}
    return {"grpo_sources": {f"curriculum {data.get('split')} split ({data.get('suite')})":
                             data.get("tasks")},
            "grpo_suite_sha256": data.get("suite_sha256")}


def ship_adapter(adapter: Path, rows: list, suite_dir: Path, curriculum: dict,
                 heldout: dict[str, dict], demo: dict | None) -> None:
    """Copy the adapter to agent/adapters/apprentice-135m with its manifest (the default)."""
    from bench_transfer import SHIPPED, ship

    from finetune.run_dir import read_manifest
    from finetune.sft_data import rows_digest

    def figures(report: dict) -> dict:
        return {k: report["summary"].get(k) for k in ("tasks", "pass@1", "format_error_rate")}

    manifest = read_manifest(adapter)
    stages = training_stages(adapter)
    seconds = training_seconds(stages)
    target = ship(adapter, {
        "name": SHIPPED, "base_model": "smollm2-135m", "trained_by": "bench/bench_finetune.py",
        "data_sha256": rows_digest(rows), "sft_sources": {"curriculum train split": len(rows)},
        "suite": "finetune.curriculum (seed 0, varied train split)",
        "suite_sha256": load_suite(suite_dir).digest(), "config": manifest.get("config"),
        "metrics": manifest.get("metrics"), "stages": stages,
        **grpo_sources(manifest),
        "training_minutes": round(seconds / 60, 1),
        "figures": {"curriculum": figures(curriculum),
                    **{name: figures(report) for name, report in heldout.items()},
                    "demo": {k: (demo or {}).get(k) for k in ("reward", "steps",
                                                               "wall_time_s")}},
    })
    print(f"shipped: {target}")


if __name__ == "__main__":
    main()
