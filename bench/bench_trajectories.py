"""What trajectories cost: recording per event, listing and exporting 10,000 episodes.

    python bench/bench_trajectories.py [--events 2000] [--episodes 10000] [--keep DIR]

Targets (issue 4): recording under 1 ms per event with durability on, listing 10,000 episodes
under 1 s, exporting 10,000 episodes to an SFT dataset under 60 s. The episodes are synthetic
but schema-valid: the real tool schemas, an 8-step conversation with tool calls and results of
realistic size, a finish and a verdict. Also shows how big local-model token ids get on disk.
Everything runs in a temporary APPRENTICE_HOME; nothing of the user's is read or written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.base import ToolBox
from tools.control import default_tools
from trajectories.events import (
    AssistantMessage,
    Checkpoint,
    Event,
    Finished,
    ModelCallStarted,
    SessionStarted,
    ToolCallStarted,
    ToolResult,
    UserMessage,
    Verified,
)
from trajectories.export import export_rows, write_jsonl
from trajectories.reader import read_trajectory
from trajectories.recorder import TrajectoryRecorder
from trajectories.store import TrajectoryStore

STEPS = 8
TOOLS = ToolBox(default_tools()).schemas()
SYSTEM = "You are apprentice, a careful software engineer. " * 30
OUTPUT = "\n".join(f"{n:6d}\t    value = compute(value, {n})  # keep going" for n in range(25))


def episode(session_id: str, started: float, rng: random.Random) -> list[Event]:
    """One synthetic episode's events, in the order a session emits them."""
    task = {"instance_id": f"task-{rng.randrange(500)}", "repo": "/src/demo",
            "problem_statement": "Fix the bug in compute().", "test_command": "pytest -q",
            "FAIL_TO_PASS": ["tests/test_compute.py::test_it"], "PASS_TO_PASS": []}
    common: dict[str, Any] = {"session_id": session_id}
    events: list[Event] = [
        SessionStarted(**common, timestamp=started, software_version="0.1.0", task=task,
                       model=rng.choice(["local/smollm2-135m", "openai/gpt-4o-mini"]),
                       system_prompt=SYSTEM, tools=TOOLS, repo="/src/demo",
                       base_commit="0" * 40, branch=f"agent/{session_id}"),
        UserMessage(**common, content="Solve this issue:\n" + task["problem_statement"],
                    origin="task"),
    ]
    for step in range(1, STEPS + 1):
        call_id = f"call_{step}"
        name = "finish" if step == STEPS else rng.choice(["view", "bash", "grep"])
        arguments = json.dumps({"summary": "Fixed."} if name == "finish"
                               else {"path": f"src/module_{step}.py"})
        events += [
            ModelCallStarted(**common, step=step, prompt_messages=2 * step),
            AssistantMessage(**common, step=step, content=f"Step {step}: looking further.",
                             tool_calls=[{"id": call_id, "type": "function", "function": {
                                 "name": name, "arguments": arguments}}],
                             prompt_tokens=900 * step, completion_tokens=40, latency_s=0.8),
            ToolCallStarted(**common, step=step, tool_call_id=call_id, name=name,
                            arguments=arguments),
            ToolResult(**common, step=step, tool_call_id=call_id, name=name,
                       output=OUTPUT if name != "finish" else "Finished: Fixed.",
                       duration_s=0.05),
        ]
    reward = rng.choice([0, 1])
    events += [
        Checkpoint(**common, step=STEPS, commit="1" * 40),
        Finished(**common, step=STEPS, exit_status="finished", summary="Fixed.",
                 patch="--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", steps=STEPS,
                 prompt_tokens=30_000, completion_tokens=320),
        Verified(**common, step=STEPS, reward=reward, test_command="pytest -q",
                 test_output="1 passed" if reward else "1 failed", exit_code=1 - reward),
    ]
    return events


def bench_recording(events: int, folder: Path) -> None:
    rng = random.Random(1)
    stream: list[Event] = []
    while len(stream) < events:
        stream += [e for e in episode("rec", time.time(), rng)[1:]]
    stream = stream[:events]
    print(f"\n## Recording ({events} events, mean event {_mean_size(stream)} bytes of JSON)")
    print("| durability | mean per event | p99 per event |")
    print("|---|---:|---:|")
    for mode in ("flush", "fsync"):
        recorder = TrajectoryRecorder(folder / f"record-{mode}.jsonl", durability=mode)
        times = []
        for event in stream:
            started = time.perf_counter()
            recorder(event)
            times.append(time.perf_counter() - started)
        recorder.close()
        times.sort()
        print(f"| {mode} | {statistics.mean(times) * 1e3:.3f} ms | "
              f"{times[int(0.99 * len(times))] * 1e3:.3f} ms |")


def _mean_size(events: list[Event]) -> int:
    return int(statistics.mean(len(e.model_dump_json()) for e in events))


def bench_token_ids(folder: Path) -> None:
    """A 30-call local episode whose context grows ~300 tokens a call, recorded with its token
    ids: time per assistant message and size on disk, against storing every prompt whole."""
    rng = random.Random(2)
    recorder = TrajectoryRecorder(folder / "tokens.jsonl")
    prompt: list[int] = [rng.randrange(49_152) for _ in range(1_200)]
    whole, times = 0, []
    for step in range(1, 31):
        completion = [rng.randrange(49_152) for _ in range(60)]
        record = {"prompt_ids": prompt, "completion_ids": completion,
                  "completion_logprobs": [-0.5] * len(completion)}
        event = AssistantMessage(session_id="tok", step=step, content="ok", token_ids=record)
        whole += len(event.model_dump_json())
        started = time.perf_counter()
        recorder(event)
        times.append(time.perf_counter() - started)
        prompt = [*prompt, *completion, *(rng.randrange(49_152) for _ in range(240))]
    recorder.close()
    delta = (folder / "tokens.jsonl").stat().st_size
    print(f"\n## Token ids of a 30-call local episode (prompt 1.2k -> {len(prompt) // 1000}k "
          "tokens)")
    print(f"every prompt whole: {whole / 1e6:.2f} MB; as deltas: {delta / 1e6:.3f} MB "
          f"({whole / delta:.0f}x smaller); recording {statistics.mean(times) * 1e3:.2f} ms per "
          "assistant message (flush)")


def write_episodes(count: int, runs: Path) -> None:
    rng = random.Random(3)
    base = time.time() - count * 60
    for n in range(count):
        session_id = f"bench-{n:05d}"
        folder = runs / session_id
        folder.mkdir(parents=True)
        lines = [json.dumps(e.model_dump(mode="json")) for e in
                 episode(session_id, base + 60 * n, rng)]
        (folder / f"{session_id}.jsonl").write_text("\n".join(lines) + "\n")


def bench_index_and_export(count: int, home: Path) -> None:
    runs = home / "runs"
    started = time.perf_counter()
    write_episodes(count, runs)
    generated = time.perf_counter() - started
    size = sum(p.stat().st_size for p in runs.rglob("*.jsonl"))
    print(f"\n## {count} episodes ({size / 1e6:.0f} MB of JSONL, written in {generated:.1f} s)")
    store = TrajectoryStore(home / "index.sqlite")
    started = time.perf_counter()
    store.reindex([runs])
    reindexed = time.perf_counter() - started
    started = time.perf_counter()
    rows = store.list()
    listed = time.perf_counter() - started
    started = time.perf_counter()
    winners = store.list(reward=1, model="openai/gpt-4o-mini")
    filtered = time.perf_counter() - started
    store.close()
    env = {**os.environ, "APPRENTICE_HOME": str(home)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "trajectories", "list", "--json"],
                          capture_output=True, text=True, env=env, check=True)
    cli_listed = time.perf_counter() - started
    assert len(json.loads(proc.stdout)) == count
    out = home / "sft.jsonl"
    started = time.perf_counter()
    files = (read_trajectory(Path(r["path"])) for r in reversed(rows))
    exported = write_jsonl(export_rows(files, "sft", include_failures=True), out)
    export_s = time.perf_counter() - started
    print("| operation | time | target |")
    print("|---|---:|---:|")
    print(f"| reindex from JSONL (all {count}) | {reindexed:.2f} s | - |")
    print(f"| list all {len(rows)} through the index (TrajectoryStore.list) | "
          f"{listed * 1e3:.0f} ms | < 1 s |")
    print(f"| list filtered by model + reward ({len(winners)} rows) | {filtered * 1e3:.0f} ms "
          "| < 1 s |")
    print(f"| `agent trajectories list --json` (process start included) | {cli_listed:.2f} s "
          "| - |")
    print(f"| export {exported} episodes to SFT JSONL ({out.stat().st_size / 1e6:.0f} MB) | "
          f"{export_s:.1f} s | < 60 s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="Keep the generated files in this folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-trajectories-") as tmp:
        home = args.keep or Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        os.environ["APPRENTICE_HOME"] = str(home)
        print(f"# Trajectory benchmarks ({os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}, {home})")
        bench_recording(args.events, home)
        bench_token_ids(home)
        bench_index_and_export(args.episodes, home)


if __name__ == "__main__":
    main()
