"""Does a bigger LoRA teach SmolLM2-135M the repair, and does it carry to a held-out library?

    nohup python bench/bench_lora_capacity.py --sdists SDISTS --heldout SUITE --out OUT \\
        [--config r16-last10 --config r128-all] [--adapter NAME=DIR] [--epochs 2] [--lr 5e-4] \\
        > capacity.log &

Every adapter so far was LoRA rank 16 on the last 10 of 30 blocks, and none passes a held-out
repository task: the model edits the right line and writes the wrong replacement. This asks
whether that is the adapter's capacity. Each `--config` (`r<rank>-last<N>` or `r<rank>-all`,
alpha = 2 x rank) trains from the base model on the same rows, for the same steps and learning
rate: the `locate`-first oracle episodes of tasks synthesized from the 7 training libraries of
`bench_locate_sft.py` (16 a library, seed 3) that start with `locate` and whose fix is in view
(`fix_in_view`: every name and number the fix writes is in the buggy function or the
statement), cut after the edit.

The measure is the cost of the oracle's edit call, teacher-forced: the nats of every token of
the assistant turn that edits (its `str_replace` call: path, `old_str` and `new_str`), on the
training rows (does it fit them?) and on the same kind of rows of the held-out suite, built
the same way (does it carry?). exp(-nats) is the probability that one unconstrained sample at
temperature 1 writes exactly that call, so it bounds what sampling (`--samples N`) and GRPO can
find. `repair` is the cost of the tokens from the first one where `new_str` departs from
`old_str` to the end of the call. Training keeps the rows of at most `--max-row-tokens`: with
a 10,152-token row, rank 128 on every block filled 24 GiB at step 25 and was killed, and
gradient checkpointing, which fits it, doubled the step time (60 s). Writes OUT/capacity.json;
the stages resume from OUT.

Measured 2026-12-07 on 2 CPU cores: 112 tasks synthesized in 292 s, 62 training rows (of 66
in-view `locate`-first repairs; 4 longer than 4,500 tokens), 2 epochs (124 steps) at lr 5e-4;
held out, the 10 in-view tasks of the 13-task toolz draw of the README. Costs in nats, median
over rows ("P>=1/12": rows whose whole call one sample writes with probability at least 1/12):

| adapter | training | train call / repair | train P>=1/12 | toolz call / repair | toolz P>=1/12 |
|---|---|---|---|---|---|
| base SmolLM2-135M | | 89.6 / 11.7 | 0 of 62 | 109.7 / 17.6 | 0 of 10 |
| r16-last10 | 23 min, 11.1 s/step | 19.0 / 5.7 | 0 of 62 | 43.2 / 8.1 | 0 of 10 |
| r128-all | 59 min, 28.5 s/step | 4.0 / 1.4 | 16 of 62 | 21.0 / 5.2 | 0 of 10 |

Held-out repair cost per kind, base -> r128-all: change_constant 7.5 -> 1.0, 16.7 -> 0.9,
14.1 -> 1.1; flip_comparison 5.4 -> 3.2; remove_not 11.1 -> 5.3; shuffle_statements 17.6 ->
5.2, 19.9 -> 4.4; drop_condition 37.1 -> 31.7; remove_statement 31.9 -> 23.2, 38.6 -> 30.5.
Rank 16 on the last 10 blocks, the same rows and steps: constants 3.3, 6.8, 5.7; flip 2.5;
remove_not 7.0; shuffles 8.1, 9.5; the not-in-view kinds 20 to 29. So the larger adapter fits
its own repairs (repair median 5.7 -> 1.4) and carries part of it to the held-out library
(8.1 -> 5.2, the constants 3 to 7 -> about 1), but no whole held-out call reaches 1 in 12.
In episodes (greedy, tools `core,locate`, 6 calls), r128-all passes 0 of 13 toolz tasks under
`--tool-grammar paths` and 1 of 13 under `edits`: `raises`, fixed by parity, as it toggled
`return True` / `return False` three times (its rows end at the edit, so it never runs the
tests). `bench_capacity_chain.py` trains the same adapter shape on these rows and the
curriculum together. Files: `bench/results/capacity/`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_locate_sft import LIBRARIES, TOOLS  # noqa: E402

from finetune.locate_oracles import locate_suite, with_locate_oracles  # noqa: E402
from finetune.run_dir import base_model_spec  # noqa: E402
from finetune.sft import LoraSettings, SFTRunConfig, load_base, run_sft  # noqa: E402
from finetune.sft_data import (  # noqa: E402
    load_rows,
    through_last_edit,
    tokenize_row,
    write_rows,
)
from finetune.suite import load_suite  # noqa: E402
from finetune.synthesis import SynthesisOptions, synthesize  # noqa: E402
from finetune.warm_start import SFT_FILE, oracle_trajectories  # noqa: E402

CONFIG = re.compile(r"r(\d+)-(?:last(\d+)|all)$")


def lora_of(name: str) -> LoraSettings:
    match = CONFIG.match(name)
    if match is None:
        raise SystemExit(f"--config {name!r}: expected r<rank>-last<N> or r<rank>-all")
    rank, last = int(match.group(1)), match.group(2)
    return LoraSettings(r=rank, alpha=2 * rank, last_layers=int(last) if last else None)


def base_tokenizer() -> Any:
    """The tokenizer of SmolLM2-135M, the base every adapter here trains on."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_spec("smollm2-135m")[1])


def short_rows(rows: list[dict[str, Any]], max_tokens: int, tokenizer: Any
               ) -> list[dict[str, Any]]:
    """The rows whose rendered conversation is at most `max_tokens` long (rank 128 on every
    block runs out of 24 GiB on a 10,000-token row)."""
    return [row for row in rows
            if len(tokenize_row(row, tokenizer)["input_ids"]) <= max_tokens]


def repair_rows(suite_dir: Path, out: Path, split: str, whole: bool = False
                ) -> list[dict[str, Any]]:
    """The in-view, `locate`-first verified oracle episodes of `suite_dir`, cut after the edit
    (cached in OUT/rows.jsonl) or `whole`: on to the test run and `finish` (OUT/whole-rows.jsonl).
    The oracle's episodes run once, into OUT/oracle."""
    cached = out / ("whole-rows.jsonl" if whole else "rows.jsonl")
    if cached.is_file():
        return [json.loads(line) for line in cached.read_text().splitlines()]
    located = out / "suite"
    if not (located / "tasks.jsonl").is_file():
        suite = load_suite(suite_dir)
        with_locate_oracles(suite, locate_suite(suite, workers=2), located)
    suite = load_suite(located)
    verified = out / "oracle" / SFT_FILE
    if verified.is_file():
        oracle = load_rows(verified)
    else:
        _, oracle = oracle_trajectories(suite, out / "oracle", split=split, workers=2,
                                        repo_map_tokens=0, tools=TOOLS)
    tasks = {task.instance_id: task for task in suite.tasks}
    rows = []
    for row in oracle:
        task = tasks.get(row.get("task", ""))
        if task is None or not task.oracle or task.oracle[0]["name"] != "locate" \
                or (task.model_extra or {}).get("fix_in_view") is not True:
            continue
        kept = row if whole else through_last_edit(row)
        if kept is not None:
            rows.append({**kept, "instance_id": task.instance_id,
                         "kind": (task.model_extra or {}).get("kind")})
    write_rows(rows, cached)
    return rows


def edit_cost(model: Any, tokenizer: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Teacher-forced nats of the row's last assistant turn (the edit), all of it and from
    the first token of the repair."""
    import torch

    encoded = tokenize_row(row, tokenizer)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    end = max(i for i, m in enumerate(mask) if m) + 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    with torch.no_grad():  # logits of the positions that predict the turn's tokens only
        logits = model(torch.tensor([ids[:end]]), logits_to_keep=end - start + 1).logits[0]
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)
    target = torch.tensor(ids[start:end])
    nats = (-logprobs.gather(1, target[:, None])[:, 0]).tolist()
    call = row["messages"][-1]["tool_calls"][0]["function"]
    arguments = call["arguments"]
    arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    old, new = arguments.get("old_str", ""), arguments.get("new_str", "")
    common = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
                  min(len(old), len(new)))
    text = tokenizer.decode(ids[start:end])
    key = '"new_str": "'
    first = 0
    if key in text:  # the token holding the first character where new_str departs
        offset = text.index(key) + len(key) + len(json.dumps(new[:common])) - 2
        first = next((i for i in range(end - start)
                      if len(tokenizer.decode(ids[start:start + i + 1])) > offset), 0)
    return {"instance_id": row.get("instance_id"), "kind": row.get("kind"),
            "tokens": end - start, "nats": round(sum(nats), 3),
            "repair_nats": round(sum(nats[first:]), 3), "max_token_nats": round(max(nats), 3)}


def scorer(adapter: Path | None) -> tuple[Any, Any]:
    """The base model plus `adapter` (None: the base alone) in eval mode, and its tokenizer."""
    _, model_dir = base_model_spec("smollm2-135m")
    model, tokenizer = load_base(model_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval(), tokenizer


def upper_median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def costs(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Edit costs of `rows` under `model`: per row, and their medians and mean."""
    per_row = [edit_cost(model, tokenizer, row) for row in rows]
    nats = [r["nats"] for r in per_row]
    return {"rows": len(per_row), "median_nats": upper_median(nats),
            "mean_nats": round(sum(nats) / max(len(nats), 1), 3),
            "median_repair_nats": upper_median([r["repair_nats"] for r in per_row]),
            "rows_above_1_in_12": sum(math.exp(-n) >= 1 / 12 for n in nats),
            "per_row": per_row}



def record_costs(results_file: Path, results: dict[str, Any], name: str, adapter: Path | None,
                 entry: dict[str, Any], parts: dict[str, list[dict[str, Any]]]) -> None:
    """Score `adapter` (None: the base) on each part's rows into `entry`, store it as
    `results[name]` in `results_file`, and print its medians."""
    model, tokenizer = scorer(adapter)
    for part, rows in parts.items():
        entry[part] = costs(model, tokenizer, rows)
    results[name] = entry
    results_file.write_text(json.dumps(results, indent=1))
    print(name, {part: {k: v for k, v in entry[part].items() if k != "per_row"}
                 for part in parts}, flush=True)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdists", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True, help="A held-out library's suite.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--adapter", action="append", default=[],
                        help="NAME=DIR: an adapter trained elsewhere, measured the same way.")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-row-tokens", type=int, default=4500)
    args = parser.parse_args()
    configs = args.config or ["r16-last10", "r128-all"]
    for name in configs:
        lora_of(name)
    out: Path = args.out
    synth = out / "synth"
    if not (synth / "tasks.jsonl").is_file():
        synthesize(SynthesisOptions(repos=[args.sdists / n for n in LIBRARIES], out=synth,
                                    max_tasks=16, split="train", seed=3, workers=2),
                   log=lambda line: print(line, flush=True))
    train = repair_rows(synth, out / "train", "train")
    heldout = repair_rows(args.heldout, out / "heldout", "test")
    train = short_rows(train, args.max_row_tokens, base_tokenizer())
    print(f"{len(train)} training rows, {len(heldout)} held-out rows", flush=True)
    results_file = out / "capacity.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    trained_elsewhere = dict(item.split("=", 1) for item in args.adapter)
    for name in ["base", *trained_elsewhere, *configs]:
        if name in results:
            continue
        adapter = Path(trained_elsewhere[name]) if name in trained_elsewhere else None
        entry: dict[str, Any] = {}
        if name not in trained_elsewhere and name != "base":
            adapter = out / name
            if not (adapter / "adapter_model.safetensors").is_file():
                started = time.monotonic()
                entry["training"] = run_sft(train, SFTRunConfig(
                    model="smollm2-135m", output_dir=adapter, epochs=args.epochs,
                    learning_rate=args.lr, lora=lora_of(name)),
                    source="in-view locate-first repairs of 7 training libraries")
                print(f"{name}: trained in {time.monotonic() - started:.0f} s", flush=True)
        record_costs(results_file, results, name, adapter, entry,
                     {"train": train, "heldout": heldout})


if __name__ == "__main__":
    main()
