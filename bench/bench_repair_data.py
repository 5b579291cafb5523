"""Would far more synthesized repairs teach the held-out repair? The same steps on 10x the repairs.

    nohup python bench/bench_repair_data.py --sdists SDISTS --heldout SUITE --out OUT \\
        [--max-tasks 60] [--steps 160] [--few 62] > repair-data.log &

The adapters so far fit the training libraries' repairs and not toolz's (`bench_lora_capacity.py`:
held-out repair cost 5.2 nats at best), each trained on the 62 in-view repairs of 112 tasks. The
last notes named "far more synthesized repairs per kind" as the lever left on this base. This
measures it at equal compute: one adapter trains `--steps` steps on `--few` repairs (many
epochs), another the same steps on every repair synthesized (about one epoch), and both are
scored on the held-out library. Full episodes cost 25 s a step on 2 cores, so the rows here are
the repair alone, short: the task's issue and the buggy function as `view` prints it (the
oracle's last view of the file it edits, at the buggy commit), then the oracle's `str_replace`
call, with that one tool; the held-out rows are built the same way. The measure is
`bench_lora_capacity.py`'s: teacher-forced nats of the edit call, all of it and from the first
token where `new_str` departs from `old_str` (`repair`).

Stages (each skipped when its output is in OUT): synthesize `--max-tasks` tasks a library
(validating at most `--max-candidates`) from the 7 training libraries of `bench_locate_sft.py`
(seed 5, train split); the short rows; the two adapters (LoRA `--config`, default r64-all,
lr 5e-4); the scores (OUT/repair-data.json).

Measured 2026-12-07 on 2 CPU cores: 357 tasks synthesized (60 a library, but six 51 and
jmespath 6 of its 250 candidates), each with a view before its edit (rows of about 1,000
tokens).
LoRA r16 on the last 10 blocks (r64 on every block took 55 s a step beside an `agent eval`),
160 steps at lr 5e-4, about 6 s a step. Held out: the 13 toolz tasks of the README's draw.
Median nats (`repair`: from the first token where `new_str` departs):

| adapter | rows seen in 160 steps | the 62: call / repair | toolz: call / repair |
|---|---|---|---|
| base SmolLM2-135M | | 97.3 / 22.1 | 132.6 / 28.4 |
| few: 62 repairs, 2.6 epochs | 62, each 2 or 3 times | 16.4 / 4.1 | 57.0 / 12.4 |
| many: 357 repairs, 0.45 epoch | 160, each once | 25.2 / 7.7 | 56.5 / 11.7 |

At equal steps, 2.6 times as many distinct repairs (160 against 62) leave the held-out cost
where it was (repair 12.4 -> 11.7; per task within a few nats either way: the constants 2 to 9,
flip_comparison 3, remove_not 6, the removed statements and returns 14 to 66), while the few
fit their own rows better. At this size and budget, what the model learns of a repair does not
carry to another library's, whether it sees each repair once or thrice; more synthesized data
would need more steps, and the 90-minute budget is already spent by the chain. Per-row costs:
`bench/results/repair-data/repair-data.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_locate_sft import LIBRARIES  # noqa: E402
from bench_lora_capacity import lora_of, record_costs  # noqa: E402

from finetune.sft import SFTRunConfig, run_sft  # noqa: E402
from finetune.synthesis import SynthesisOptions, synthesize  # noqa: E402
from tools.base import ToolBox  # noqa: E402
from tools.files import StrReplace  # noqa: E402

SYSTEM = ("You are apprentice, a careful software engineer working in a git repository. "
          "Fix the bug the issue describes with one str_replace call on the code shown.")


def short_row(task: dict[str, Any], suite_dir: Path, tools: list[dict[str, Any]]
              ) -> dict[str, Any] | None:
    """The task's repair as a two-turn row (its oracle's last edit, after its last view of that
    file), or None when the oracle views no code of the file it edits before editing it."""
    from git import Repo

    calls = task.get("oracle") or []
    edits = [i for i, c in enumerate(calls) if c["name"] == "str_replace"]
    if not edits:
        return None
    edit = calls[edits[-1]]  # a recovering oracle's first edit is the refused one
    path = edit["arguments"]["path"]
    views = [c["arguments"].get("view_range") for c in calls[:edits[-1]]
             if c["name"] == "view" and c["arguments"].get("path") == path]
    if not views or not views[-1]:
        return None
    first, last = views[-1]
    with tempfile.TemporaryDirectory() as tmp:
        Repo.clone_from(str(suite_dir / task["repo_path"]), tmp)
        lines = (Path(tmp) / path).read_text().splitlines()
    shown = "\n".join(f"{n:6d}\t{line}" for n, line in
                      enumerate(lines[first - 1:last], first))
    user = f"{task['problem_statement']}\n\n{path}, lines {first}-{last}:\n{shown}"
    call = {"type": "function", "id": "call_0",
            "function": {"name": "str_replace", "arguments": edit["arguments"]}}
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": user},
                         {"role": "assistant", "content": "", "tool_calls": [call]}],
            "tools": tools, "reward": 1, "instance_id": task["instance_id"],
            "kind": task.get("kind"), "fix_in_view": task.get("fix_in_view")}


def suite_rows(suite_dir: Path, cached: Path) -> list[dict[str, Any]]:
    if cached.is_file():
        return [json.loads(line) for line in cached.read_text().splitlines()]
    tools = ToolBox([StrReplace()]).schemas()
    rows = [row for line in (suite_dir / "tasks.jsonl").read_text().splitlines()
            if (row := short_row(json.loads(line), suite_dir, tools)) is not None]
    cached.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdists", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True, help="A held-out library's suite.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-tasks", type=int, default=60)
    parser.add_argument("--max-candidates", type=int, default=250,
                        help="Candidates validated per library at most (jmespath keeps 3 %%).")
    parser.add_argument("--few", type=int, default=62)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--config", default="r64-all")
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    synth = out / "synth"
    if not (synth / "tasks.jsonl").is_file():
        synthesize(SynthesisOptions(repos=[args.sdists / n for n in LIBRARIES], out=synth,
                                    max_tasks=args.max_tasks,
                                    max_candidates=args.max_candidates, split="train", seed=5,
                                    workers=2),
                   log=lambda line: print(line, flush=True))
    many = suite_rows(synth, out / "rows.jsonl")
    heldout = suite_rows(args.heldout, out / "heldout-rows.jsonl")
    few = random.Random(0).sample(many, min(args.few, len(many)))
    print(f"{len(many)} training rows, {len(few)} in the few, {len(heldout)} held out",
          flush=True)
    results_file = out / "repair-data.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name, rows in (("base", None), ("few", few), ("many", many)):
        if name in results:
            continue
        entry: dict[str, Any] = {}
        adapter = None
        if rows is not None:
            adapter = out / name
            if not (adapter / "adapter_model.safetensors").is_file():
                started = time.monotonic()
                entry["training"] = run_sft(rows, SFTRunConfig(
                    model="smollm2-135m", output_dir=adapter, max_steps=args.steps,
                    learning_rate=args.lr, lora=lora_of(args.config)),
                    source=f"{len(rows)} short synthesized repairs")
                entry["training_s"] = round(time.monotonic() - started)
                entry["rows"] = len(rows)
        record_costs(results_file, results, name, adapter, entry,
                     {"train_few": few, "heldout": heldout})


if __name__ == "__main__":
    main()
