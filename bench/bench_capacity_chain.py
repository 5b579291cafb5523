"""One larger adapter for both jobs: the curriculum's procedure and held-out repairs.

    nohup python bench/bench_capacity_chain.py --curriculum-rows DIR/recovery/data.jsonl \\
        --repair-rows CAP/train/rows.jsonl --out OUT [--config r128-all] [--epochs 1] \\
        [--lr 5e-4] [--max-row-tokens 4500] [--init-adapter DIR --name NAME] > chain.log &

`bench_lora_capacity.py` found that rank 128 on every block fits the synthesized repairs and
carries part of them to toolz, but its adapter trained on repairs alone, cut after the edit, so
in an episode it toggles its edit back and forth and never runs the tests. This trains one
adapter from the base model on both: the recovery pass's rows of the shipped chain
(`bench_finetune.py --recovery-pass`, DIR/recovery/data.jsonl: plain, anchored and recovering
curriculum oracles, tools `core`) and the in-view `locate`-first repairs of the 7 training
libraries (`bench_lora_capacity.py`, OUT/train/rows.jsonl, tools `core,locate`), shuffled
together. Rows longer than `--max-row-tokens` stay out (rank 128 on every block runs out of
24 GiB on a 10,000-token row). Writes OUT/ADAPTER (the adapter, its log and manifest) and
OUT/ADAPTER/data.jsonl; evaluate it with `agent eval` as in the README.

Measured 2026-12-07 on 2 CPU cores, `--config r128-all --epochs 1 --lr 5e-4`: 107 curriculum
rows and 62 repairs, 169 steps, 20.6 s/step, 58 min. One greedy episode per task, 6 calls of at
most 256 tokens, no repo map:

| adapter | curriculum (14), tools core | toolz (13), core,locate, `edits` | demo |
|---|---|---|---|
| shipped (4 SFT passes + GRPO, rank 16, last 10 blocks; 83 min) | 0.929 | 0.000 | 1 |
| r128-all on the 62 repairs alone (`bench_lora_capacity.py`) | | 0.077 (1 of 13) | |
| r128-all on curriculum + repairs (this bench) | 0.357 | 0.000 (23 % malformed) | 1, 24 s |
| + 1 epoch, whole repairs (`--init-adapter`) | 0.714 | 0.000 (0 % malformed) | 1, 28 s |

The one toolz pass of the repairs-only adapter is `raises` in toolz/utils.py (`return True` ->
`return False`), and it passed by parity: that adapter never saw what follows an edit, so it
toggled the line three times and the last toggle left it fixed. This adapter learnt the
procedure (on toolz it calls `locate`, edits, then tries to run the tests) but 16 of its 78
toolz calls are `bash` commands that repeat `-m pytest -q -p no:cacheprovider` until the
256-token budget cuts the JSON: the curriculum's test command is `python3 -m pytest -q`, and no
repair row shows a test run. Its edits on toolz are no better than the repairs-only adapter's
(`return rv` -> `return v`, `key=key` -> `key=len`). One epoch over 107 curriculum rows from
the base is too little for the curriculum (the shipped chain spent 485 steps on it). GRPO
from this adapter under the same decoding (`agent finetune grpo --tools core,locate
--tool-grammar edits`, G 4, T 1.0, lr 1e-4) on 45 in-view tasks of the training libraries
never trained on (`agent finetune synthesize ... --max-tasks 12 --seed 11`, less the tasks of
`bench_lora_capacity.py`'s draw): 4 steps, 413 s/step, 0 of 16 episodes passed, 4 of 4 groups
without signal. Files: `bench/results/capacity/chain-*`.

The second row goes on from that adapter for one more epoch (`--init-adapter OUT/r128-all
--name r128-all-2 --lr 3e-4 --seed 1`) with the repairs whole, on past the edit to the test run
and `finish` (`bench_lora_capacity.py` writes them as CAP/train/whole-rows.jsonl): the same 107
curriculum rows and 62 repairs, 169 steps, 25.5 s/step, 72 min (the first 20 minutes shared the
2 cores with a CI run). The curriculum doubles to 0.714 and the malformed calls are gone: on toolz
every episode is `locate`, one edit, one test run, `finish` (4.4 calls on average). Still 0 of
13, for two reasons the episodes show. The edits are wrong as before (`key=key` -> `key=None`,
`self.item = item` -> `self.item = key`, a docstring line reworded). And all 13 test runs fail
to start: the training libraries keep their tests in `tests/`, toolz in `toolz/tests/`, and the
model writes the test id without its folder (`pytest test_curried.py::test_reduce`, or just
`test_reduce`), then finishes after the error, as every whole repair row finishes after its
run. Teacher-forced as in `bench_lora_capacity.py` (its `--adapter NAME=DIR`), the oracle's
edit on the 10 in-view toolz tasks costs a median repair of 7.9 nats after the first epoch and
5.3 after the second, where the repairs-only probe stood at 5.2, while the second epoch fits its
own repairs (training median 2.6 -> 1.0 nats, 19 of 62 whole calls likelier than 1 in 12): more
epochs fit the training libraries, not toolz. Files: `bench/results/capacity/chain2-*` and
`capacity.json` (entries `chain`, `chain2`).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_lora_capacity import base_tokenizer, lora_of, short_rows  # noqa: E402

from finetune.sft import SFTRunConfig, run_sft  # noqa: E402
from finetune.sft_data import load_rows, write_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--curriculum-rows", type=Path, required=True)
    parser.add_argument("--repair-rows", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", default="r128-all")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-row-tokens", type=int, default=4500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-adapter", type=Path,
                        help="go on training this adapter (its LoRA shape wins over --config)")
    parser.add_argument("--name", help="OUT/NAME holds the adapter (default: --config)")
    args = parser.parse_args()
    lora = lora_of(args.config)
    tokenizer = base_tokenizer()
    curriculum = short_rows(load_rows(args.curriculum_rows), args.max_row_tokens, tokenizer)
    repairs = short_rows(load_rows(args.repair_rows), args.max_row_tokens, tokenizer)
    rows = curriculum + repairs
    random.Random(args.seed).shuffle(rows)
    adapter = args.out / (args.name or args.config)
    adapter.mkdir(parents=True, exist_ok=True)
    write_rows(rows, adapter / "data.jsonl")
    print(f"{len(curriculum)} curriculum rows, {len(repairs)} repair rows", flush=True)
    started = time.monotonic()
    metrics = run_sft(rows, SFTRunConfig(
        model="smollm2-135m", output_dir=adapter, epochs=args.epochs,
        learning_rate=args.lr, lora=lora, seed=args.seed, init_adapter=args.init_adapter),
        source=f"{args.curriculum_rows} + {args.repair_rows}")
    print(f"{adapter.name}: trained in {time.monotonic() - started:.0f} s {metrics}", flush=True)


if __name__ == "__main__":
    main()
