"""Teach the embedded model to find bugs with `locate`, and measure it on a held-out library.

    nohup python bench/bench_locate_sft.py --sdists SDISTS --init ADAPTER --out runs/locate \\
        [--heldout toolz=SUITE] [--ship] > locate.log &

SDISTS holds the unpacked training libraries (`pip download --no-binary :all: --no-deps
NAME==VERSION`, then `tar xzf`): boltons 26.2.0, cachetools 8.0.2, inflection 0.5.1, six 1.17.0,
humanize 4.17.0, jmespath 1.1.0, tabulate 0.10.0. toolz is held out and more-itertools is never
trained on. ADAPTER is the adapter training goes on from: the curriculum-only model that
`bench/bench_finetune.py ... --ship` makes (README, "The shipped model").

Stages, each skipped when its output is in OUT:
1. `synthesize` 16 tasks per library (train split, seed 3), `locate_suite` +
   `with_locate_oracles` (`agent finetune locate-oracles`), and a curriculum draw (32 train
   tasks, seed 2, every task with a twin, half the oracles recovering from a refused edit);
2. the oracle's verified episodes of both, with the tools `core,locate`, no repo map;
3. SFT from ADAPTER on all of them (1 epoch capped at `--steps`, LoRA r 16 on the last 10
   layers, learning rate `--lr`);
4. one greedy episode per task (6 calls of 256 tokens, tools core,locate) on each `--heldout`
   suite and the curriculum's held-out split; `--ship` installs the adapter as
   `local/apprentice-135m` with its manifest.

Measured on 2 CPU cores (toolz: `agent finetune synthesize toolz-1.2.0 --max-tasks 13
--eval-only --seed 1`; curriculum: the 14 held-out tasks of bench_finetune):

| model | tools | toolz (13) | curriculum held-out (14) | demo | training |
|---|---|---|---|---|---|
| shipped before (curriculum only) | core | 0.000 | 0.429 | 1 | 83 min |
| + SFT, 5 libraries + curriculum, 64 steps, lr 5e-4 (stage A) | core,locate | 0.000 | | | +41 min |
| + SFT, 7 libraries + curriculum, 48 steps (stage B) | core,locate | 0.000 | | | +24 min |
| + SFT, `locate`-first episodes only, 94 steps (stage C) | + paths grammar | 0.000 | | | +55 min |
| + SFT, a fresh draw (seed 5), 64 steps (stage D) | + paths grammar | 0.000 | 0.143 | | +32 min |
| + SFT, 2 more draws, cut after the edit (stage E) | + paths grammar | 0.000 | 0.143 | | +40 min |
| + SFT, only fixes the conversation shows (stage F) | + paths grammar | 0.000 | | | +40 min |

Stage A's data came from the probe before the failing test ran last (same format, other
ranks); this script makes stage B's data. Both call `locate` first with the right id (the
grammar keeps `test` to ids shown) in every toolz episode whose statement spells the id out;
then they view the test id as a path (9 and 7 of 13 episodes), or the test file at the
suspect's lines. Curriculum figures for the stages were not measured (out of time). Reports:
`bench/results/locate/`.

Stages C and D were run by hand from this script's pieces, not by `main` (its stages make
stage B). C: `locate_suite` + `with_locate_oracles` again on the same 7-library draw (an oracle
now skips its view when its edits replace only text `locate` showed: 39 of 53 first-ranked
tasks), oracle episodes, then SFT from stage B on the 86 episodes that start with `locate` plus
8 curriculum ones, one pass. D: `synthesize` the 7 libraries again (24 tasks each, seed 5), drop
tasks drawn before (144 left), set 20 aside (unseen, for GRPO), and SFT from C on the 95
`locate`-first episodes of the rest plus 8 other curriculum episodes, 64 steps. Both at lr 2e-4,
LoRA r 16 on the last 10 layers; training times on a CPU shared with synthesis or evaluation.
D goes from `locate` straight to an edit of the first suspect's file in 12 of 13 toolz episodes
(2 % malformed calls), and its edits are wrong: 8 of 13 change nothing.

E, by hand as well: `synthesize` six of the libraries twice more (seed 8, 3 tasks a file: 70
tasks; seed 9, 10 a file: 112), drop every task drawn before (153 left), `locate` oracles,
episodes, then SFT from D on the 119 `locate`-first episodes cut after their last edit
(`agent finetune sft --through-edit`; at most 4096 tokens) plus 8 curriculum ones: 127 steps,
21 s a step, 40 min. The rows are 2,670 tokens on average, 1,259 of them the system prompt and
the tool schemas, 202 the model's own. E passes one of the 20 unseen training-library tasks
(`pass` to `return message` in humanize) and none of toolz; it still copies the buggy line
(`if not (keyword_exclude or num_pos_only > n)` for itself) or writes the wrong fix
(`return lamda()` for `return False`). Under `--tool-grammar edits` it fixes one toolz task
(`if not predicate(k)`, 1/13, 19 % of calls malformed).

F: SFT from E on the `locate`-first repairs of every draw whose fix writes only what the
conversation showed before the edit, or Python keywords and builtins (156 of 305; the tasks'
`fix_in_view`, which reads the whole function, marks 215), through the edit, plus 8 curriculum
episodes: 130 steps, lr 2e-4, 40 min. toolz 0/13 under `paths` (0 of the 10 in view, 10 %
malformed calls) and under `edits` (13 %); under `paths` 7 of 13 episodes send an edit that
changes nothing. The 20 unseen training-library tasks: 1/20, the one E passed.
Why no stage moves toolz: `bench/bench_edit_samples.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agent.episode import EpisodeConfig  # noqa: E402
from agent.episode_config import ContextConfig  # noqa: E402
from agent.llm import LLMConfig  # noqa: E402
from finetune.curriculum import generate_curriculum  # noqa: E402
from finetune.evaluate import EvalOptions, evaluate  # noqa: E402
from finetune.locate_oracles import locate_suite, with_locate_oracles  # noqa: E402
from finetune.sft import LoraSettings, SFTRunConfig, run_sft  # noqa: E402
from finetune.sft_data import load_rows  # noqa: E402
from finetune.suite import load_suite  # noqa: E402
from finetune.synthesis import SynthesisOptions, synthesize  # noqa: E402
from finetune.warm_start import SFT_FILE, oracle_trajectories  # noqa: E402

LIBRARIES = ("boltons-26.2.0", "cachetools-8.0.2", "inflection-0.5.1", "six-1.17.0",
             "humanize-4.17.0", "jmespath-1.1.0", "tabulate-0.10.0")
TOOLS = "core,locate"


def stage(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.monotonic()


def build_data(sdists: Path, out: Path) -> list[dict]:
    synth, located, curriculum = out / "synth", out / "synth-locate", out / "curriculum"
    if not (synth / "tasks.jsonl").is_file():
        started = stage("synthesize")
        synthesize(SynthesisOptions(repos=[sdists / name for name in LIBRARIES], out=synth,
                                    max_tasks=16, split="train", seed=3, workers=1),
                   log=lambda line: print(line, flush=True))
        print(f"{time.monotonic() - started:.0f} s", flush=True)
    if not (located / "tasks.jsonl").is_file():
        started = stage("locate-oracles")
        suite = load_suite(synth)
        runs = locate_suite(suite, workers=2)
        _, changed = with_locate_oracles(suite, runs, located)
        ranks = [run.rank for run in runs]
        print(f"{len(runs)} tasks, rank 1: {ranks.count(1)}, top 5: "
              f"{sum(r is not None and r <= 5 for r in ranks)}, oracles changed: {changed} "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    if not (curriculum / "tasks.jsonl").is_file():
        generate_curriculum(curriculum, train=32, test=14, seed=2, force=True, twin_share=1.0,
                            recovery_share=0.5)
    rows: list[dict] = []
    for name, suite_dir in (("synth", located), ("curriculum", curriculum)):
        data = out / f"oracle-{name}" / SFT_FILE
        if not data.is_file():
            started = stage(f"oracle episodes: {name}")
            report, _ = oracle_trajectories(load_suite(suite_dir), out / f"oracle-{name}",
                                            workers=2, repo_map_tokens=0, tools=TOOLS)
            print(report.summary, f"{time.monotonic() - started:.0f} s", flush=True)
        rows += load_rows(data)
    random.Random(1).shuffle(rows)
    return rows


def evaluate_adapter(adapter: Path, suite_dir: Path, save: Path) -> dict:
    episode = EpisodeConfig(max_steps=6, tools=TOOLS, context=ContextConfig(repo_map_tokens=0),
                            llm=LLMConfig(max_tokens=256))
    report = evaluate(load_suite(suite_dir), EvalOptions(
        model="local/smollm2-135m", adapter=str(adapter), split="test", workers=1,
        output_dir=save.with_suffix(""), episode=episode))
    save.write_text(json.dumps({"summary": report.summary}, indent=1))
    return report.summary


def ship_locate(adapter: Path, sources: dict[str, Path], suites: dict[str, Path],
                figures: dict[str, dict], demo: dict) -> Path:
    """Install `adapter` as `local/apprentice-135m`: its manifest names the base, every SFT
    source (rows, sha256), the suites' digests, every training stage and the figures."""
    from bench_transfer import SHIPPED, ship

    from agent.models import ADAPTERS_DIR
    from finetune.run_dir import read_manifest
    from finetune.sft_data import rows_digest

    rows, counts = [], {}
    for name, path in sources.items():
        loaded = load_rows(path)
        rows += loaded
        counts[name] = len(loaded)
    stages: list[dict] = []
    folder: Path | None = adapter
    while folder is not None:  # the adapter, and those it went on training from
        if folder.resolve() == (ADAPTERS_DIR / SHIPPED).resolve():
            previous = json.loads((folder / "manifest.json").read_text())
            stages.insert(0, {"adapter": "previous local/apprentice-135m",
                              "adapter_sha256": previous.get("adapter_sha256"),
                              "training_minutes": previous.get("training_minutes")})
            break
        run = read_manifest(folder)
        stages.insert(0, {"adapter": folder.name, "config": run.get("config"),
                          "metrics": run.get("metrics"), "data": run.get("data")})
        parent = (run.get("config") or {}).get("init_adapter")
        folder = Path(parent) if parent else None
    minutes = sum((s.get("metrics") or {}).get("seconds", 0) / 60 or s.get("training_minutes")
                  or 0 for s in stages)
    last = read_manifest(adapter)
    return ship(adapter, {
        "name": SHIPPED, "base_model": "smollm2-135m", "trained_by": "bench/bench_locate_sft.py",
        "tools": TOOLS, "data_sha256": rows_digest(rows), "sft_sources": counts,
        "suite": "synthesized tasks of 7 training libraries (locate-first oracles) + "
                 "finetune.curriculum",
        "suite_sha256": {name: load_suite(path).digest() for name, path in suites.items()},
        "config": last.get("config"), "metrics": last.get("metrics"), "stages": stages,
        "training_minutes": round(minutes, 1), "figures": {**figures, "demo": demo}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdists", type=Path, required=True)
    parser.add_argument("--init", type=Path, required=True, help="Adapter to go on from.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--heldout", action="append", default=[], help="NAME=SUITE")
    parser.add_argument("--curriculum-test", type=Path, help="The curriculum's held-out suite.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = build_data(args.sdists, args.out)
    adapter = args.out / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        started = stage(f"SFT on {len(rows)} conversations")
        run_sft(rows, SFTRunConfig(model="smollm2-135m", output_dir=adapter,
                                   init_adapter=args.init, epochs=1, max_steps=args.steps,
                                   learning_rate=args.lr,
                                   lora=LoraSettings(r=16, alpha=32, last_layers=10)),
                source="locate-first oracles of synthesized tasks + curriculum")
        print(f"{time.monotonic() - started:.0f} s", flush=True)
    suites = [item.split("=", 1) for item in args.heldout]
    if args.curriculum_test:
        suites.append(["curriculum", str(args.curriculum_test)])
    for name, suite_dir in suites:
        stage(f"evaluate on {name}")
        print(evaluate_adapter(adapter, Path(suite_dir), args.out / f"eval-{name}.json"),
              flush=True)


if __name__ == "__main__":
    main()
