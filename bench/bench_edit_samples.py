"""Edit-level pass@K: does the model's distribution over its first edit after `locate` hold the fix?

    python bench/bench_edit_samples.py --evals EVAL_DIR --suite SUITE --adapter ADAPTER \\
        [--samples 12] [--temperature 1.0] [--save OUT.json]

EVAL_DIR is the `--output-dir` of an `agent eval` run with the tools `core,locate` (one episode
per task). For each task whose episode called `locate`, the context the model had right after
the `locate` result (the messages exactly as sent, rebuilt from the trajectory) is sent again
`--samples` times at `--temperature`, under the `paths` grammar with the located lines as the
lines shown. A sample counts when it is a `str_replace` of the task's file whose result is, byte
for byte, the file the task's fix gives: a lower bound (another edit could also pass the tests).
This bounds what test-selected sampling (`agent solve --samples N`) and GRPO can find: with no
correct edit among K samples of the one step that matters, neither has anything to select or
reinforce.

Measured on 2 CPU cores (one adapter, 12 samples of at most 256 tokens per task, about a minute
per task):

| adapter | suite | temperature | tasks with the fix among 12 samples | distinct edits per task |
|---|---|---|---|---|
| stage E (`bench_locate_sft.py`) | toolz, held out (13) | 1.0 | 0 of 13 | 8.8 |
| E + 3 epochs on 47 remove_return repairs | toolz remove_return (3 of 5) | 1.0 | 0 of 3 | 9.3 |

`locate`'s first suspect is in the file the fix changes in 10 of the 13; of the 156 samples none
is the fix. They edit the located function's lines but write text
that is not code (`return %`, `Sparta`), call what is not defined (`return d2.update(d2)`,
`return list(cons(1, seq))` from the docstring), or change nothing (`pass` for `pass`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from agent.local_model import register_local_provider  # noqa: E402
from agent.patches import patched_files  # noqa: E402
from agent.tool_grammar import PathChoices  # noqa: E402
from finetune.suite import Suite, SuiteTask, checkout_task, load_suite  # noqa: E402
from trajectories.reader import read_trajectory, rebuild_calls  # noqa: E402

SHOWN = re.compile(r"\n\n(\S+), lines (\d+)-(\d+):")
PATH_ARGUMENTS = {"view": ("path",), "str_replace": ("path",), "insert": ("path",),
                  "create": ("path",)}


def after_locate(trajectory: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The messages the model was sent right after its first `locate` result, and the tools."""
    recorded = read_trajectory(trajectory)
    calls = rebuild_calls(recorded.events)
    for index, call in enumerate(calls[:-1]):
        names = [c["function"]["name"] for c in call["response"].get("tool_calls") or []]
        if "locate" in names and recorded.header is not None:
            return calls[index + 1]["messages"], recorded.header.tools
    return None


def sample_edits(messages: list[dict[str, Any]], tools: list[dict[str, Any]], paths: PathChoices,
                 adapter: str, samples: int, temperature: float) -> list[dict[str, Any] | None]:
    """`samples` replies to the same context; each the call it makes (None for none)."""
    replies: list[dict[str, Any] | None] = []
    for seed in range(samples):
        response = litellm.completion(
            model="local/smollm2-135m", messages=messages, tools=tools, tool_choice="required",
            temperature=temperature, max_tokens=256, adapter=adapter,
            tool_grammar=paths.as_dict(), seed=seed)
        calls = response.choices[0].message.tool_calls or []
        if not calls:
            replies.append(None)
            continue
        try:
            arguments = json.loads(calls[0].function.arguments)
        except json.JSONDecodeError:
            arguments = {"unparsed": calls[0].function.arguments}
        replies.append({"name": calls[0].function.name, "arguments": arguments})
    return replies


def is_fix(call: dict[str, Any] | None, path: str, before: str, fixed: str) -> bool:
    if call is None or call["name"] != "str_replace":
        return False
    arguments = call["arguments"]
    old = arguments.get("old_str")
    if arguments.get("path") != path or not old or before.count(old) != 1:
        return False
    return before.replace(old, arguments.get("new_str", "")) == fixed


def measure_task(suite: Suite, task: SuiteTask, episode: Path, adapter: str, samples: int,
                 temperature: float) -> dict[str, Any] | None:
    trajectories = sorted(episode.glob("*/*.jsonl"), key=lambda p: p.stat().st_mtime)
    context = after_locate(trajectories[-1]) if trajectories else None
    if context is None:
        return None
    messages, tools = context
    shown = SHOWN.search(str(messages[-1].get("content")))
    extra = task.model_extra or {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        checkout_task(suite, task, repo)
        files = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True,
                               text=True, check=True).stdout.split()
        read = {}
        if shown:
            lines = set(range(int(shown.group(2)), int(shown.group(3)) + 1))
            read[shown.group(1)] = ((repo / shown.group(1)).read_text(), lines)
        paths = PathChoices.of_files(PATH_ARGUMENTS, files, {"str_replace": ("path", "old_str")},
                                     read)
        before, fixed = patched_files(repo, task.base_commit, task.patch)[extra["path"]]
    if paths is None:
        return None
    started = time.monotonic()
    calls = sample_edits(messages, tools, paths, adapter, samples, temperature)
    edits = [c for c in calls if c is not None and c["name"] == "str_replace"]
    return {
        "task": task.instance_id, "kind": extra["kind"],
        "located": shown.group(1) if shown else None, "fixed_file": extra["path"],
        "fixes": sum(is_fix(c, extra["path"], before or "", fixed or "") for c in calls),
        "samples": samples, "distinct_edits": len({json.dumps(c["arguments"]) for c in edits}),
        "seconds": round(time.monotonic() - started), "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=Path, required=True)
    parser.add_argument("--suite", type=Path, required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--kind", help="only tasks of this kind of bug")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()
    register_local_provider()
    suite = load_suite(args.suite)
    rows = []
    for task in suite.tasks:
        episode = args.evals / task.instance_id
        if (args.kind and (task.model_extra or {}).get("kind") != args.kind) \
                or not episode.is_dir():
            continue
        row = measure_task(suite, task, episode, args.adapter, args.samples, args.temperature)
        if row is None:
            print(f"{task.instance_id}: no locate call", flush=True)
            continue
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "calls"}), flush=True)
    found = sum(row["fixes"] > 0 for row in rows)
    print(f"tasks with the fix among {args.samples} samples: {found} of {len(rows)}; "
          f"fixes {sum(row['fixes'] for row in rows)} of {args.samples * len(rows)} samples")
    if args.save:
        args.save.write_text(json.dumps({"adapter": args.adapter, "suite": str(args.suite),
                                         "temperature": args.temperature, "tasks": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
