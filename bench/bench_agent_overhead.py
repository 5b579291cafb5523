"""Agent overhead per step, excluding model time: a scripted model drives the calculator fix
(view, str_replace, bash pytest, finish) through the real loop, Docker sandbox and git.

Prints, over N episodes: set-up (worktree + sandbox), per-step overhead (from the end of one
model reply to the start of the next call: tools, checkpoint, events), verify time, total.

    .venv/bin/python bench/bench_agent_overhead.py [N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.episode import EpisodeConfig
from agent.example_repos import init_example  # noqa: E402
from agent.llm import LLMConfig  # noqa: E402
from agent.scripted_model import ScriptedModelServer  # noqa: E402
from agent.solve import solve  # noqa: E402
from agent.tasks import Task  # noqa: E402
from tests.test_solve import FIX_SCRIPT  # noqa: E402


def main(episodes: int = 5) -> None:
    overheads: list[float] = []
    setups: list[float] = []
    verifies: list[float] = []
    totals: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, ScriptedModelServer() as server:
        repo, issue = init_example("calculator", Path(tmp) / "example")
        task = Task.from_issue_file(issue, repo)
        for _ in range(episodes):
            server.script = list(FIX_SCRIPT)
            events: list = []
            started = time.time()
            result = solve(task, EpisodeConfig(llm=LLMConfig(model="openai/scripted",
                                                            api_base=server.url)),
                           listeners=[events.append])
            assert result.reward == 1, result.test_output
            totals.append(time.time() - started)
            setups.append(events[0].timestamp - started)
            verifies.append(result.verify_duration_s)
            replies = [e for e in events if e.type == "assistant_message"]
            calls = [e for e in events if e.type == "model_call_started"]
            finished = next(e for e in events if e.type == "finished")
            ends = [c.timestamp for c in calls[1:]] + [finished.timestamp]
            overheads += [end - reply.timestamp for reply, end in zip(replies, ends, strict=True)]
    ms = lambda xs: f"{statistics.median(xs) * 1000:8.1f}"  # noqa: E731
    print(f"episodes: {episodes}, steps measured: {len(overheads)}")
    print("what                                   median ms")
    print(f"set-up (worktree + sandbox start)      {ms(setups)}")
    print(f"per-step agent overhead (no model)     {ms(overheads)}")
    p90 = sorted(overheads)[int(len(overheads) * 0.9)] * 1000
    print(f"  p90                                  {p90:8.1f}")
    print(f"verify (fresh copy + sandbox + tests)  {ms(verifies)}")
    print(f"whole episode                          {ms(totals)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
