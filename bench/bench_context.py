"""Context compaction: a 200-turn scripted session, with and without compaction.

    .venv/bin/python bench/bench_context.py [--turns 200] [--window 8192]

The model is the scripted OpenAI-compatible server (agent/scripted_model.py) reached through
litellm; summary requests get a fixed structured summary. Each turn views one of 40 files of
100 to 8,000 characters, so outputs are big next to an 8k window (SmolLM2's). Every request is
measured with the same counter the session uses (litellm's, cl100k for this model name).
"Without" gives the session a window it never reaches. Targets: peak under the threshold (80 %
of the window) and total prompt tokens at most 25 % of the uncompacted run's.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("APPRENTICE_HOME", tempfile.mkdtemp(prefix="bench-context-"))

from agent.context import SUMMARY_SYSTEM, ContextConfig, TokenCounter  # noqa: E402
from agent.llm import LLMClient, LLMConfig  # noqa: E402
from agent.scripted_model import ScriptedModelServer, tool_call  # noqa: E402
from agent.session import Session  # noqa: E402
from agent.tasks import Task  # noqa: E402
from tools.base import ToolBox, ToolContext  # noqa: E402
from tools.control import default_tools  # noqa: E402
from tools.workspace import Workspace  # noqa: E402
from trajectories.events import Compaction, Event  # noqa: E402

SUMMARY = ("## Goal\n- understand the records\n## Decisions\n- read every file\n## Plan state\n"
           "- reading\n## Files touched\n- data/*.txt (read)\n## Tried and failed\n- nothing\n"
           "## Next steps\n- keep reading")
ISSUE = "Read the data files one by one and report which records repeat."


class SummarisingLLM(ScriptedModelServer):
    """The scripted model; summary requests are answered with SUMMARY."""

    def _next_step(self) -> dict[str, Any]:
        if self.requests[-1]["messages"][0]["content"] == SUMMARY_SYSTEM:
            return {"content": SUMMARY}
        return super()._next_step()


def make_repo(folder: Path) -> Path:
    repo = folder / "repo"
    (repo / "data").mkdir(parents=True)
    rng = random.Random(7)
    for i in range(40):
        lines = [f"record {i}-{n}: value={rng.randint(0, 999)}" for n in range(rng.randint(4, 320))]
        (repo / "data" / f"file_{i:02}.txt").write_text("\n".join(lines) + "\n")
    (repo / "AGENTS.md").write_text("Report findings; never edit the data.\n")
    for command in (["init", "-q", "-b", "main"], ["add", "-A"],
                    ["-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit",
                     "-qm", "data"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True)
    return repo


def script(turns: int) -> list[dict[str, Any]]:
    steps = [{"content": f"Reading file {i % 40}.", "tool_calls": [
        tool_call("view", {"path": f"data/file_{i % 40:02}.txt"})]} for i in range(turns - 1)]
    return [*steps, {"tool_calls": [tool_call("finish", {"summary": "read them all"})]}]


def run(repo: Path, turns: int, window: int, compact: bool) -> dict[str, Any]:
    events: list[Event] = []
    with SummarisingLLM(script(turns)) as server:
        workspace = Workspace.create(repo, f"bench-{'on' if compact else 'off'}-{time.time_ns()}")
        issue = repo.parent / "issue.md"
        issue.write_text(ISSUE + "\n")
        llm = LLMClient(LLMConfig(model="openai/scripted", api_base=server.url, max_tokens=256))
        config = ContextConfig(context_window=window if compact else 10**9, repo_map_tokens=0)
        session = Session("bench", Task.from_issue_file(issue, repo, "true"), llm,
                          ToolBox(default_tools()), ToolContext(workspace=workspace.path),
                          workspace, max_steps=turns + 5, listeners=[events.append],
                          context=config)
        started = time.perf_counter()
        result = session.run()
        seconds = time.perf_counter() - started
        counter = TokenCounter("openai/scripted")
        sizes = [counter.count(r["messages"], r.get("tools") or []) for r in server.requests]
        agent = [size for size, r in zip(sizes, server.requests, strict=True)
                 if r["messages"][0]["content"] != SUMMARY_SYSTEM]
        workspace.remove(delete_branch=True)
    stages = [e.stage for e in events if isinstance(e, Compaction)]
    return {"status": result.exit_status, "calls": len(agent), "summary_calls":
            len(sizes) - len(agent), "peak": max(agent), "total": sum(sizes),
            "masked": stages.count("masked"), "summarised": stages.count("summarised"),
            "dropped": stages.count("dropped"), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--window", type=int, default=8192)
    args = parser.parse_args()
    repo = make_repo(Path(tempfile.mkdtemp(prefix="bench-context-repo-")))
    off = run(repo, args.turns, args.window, compact=False)
    on = run(repo, args.turns, args.window, compact=True)
    limit = int(args.window * ContextConfig().threshold)
    print(f"\n{args.turns}-turn session, window {args.window}, threshold {limit} tokens")
    print(f"{'':20} {'calls':>6} {'peak':>9} {'total':>12} {'compactions m/s/d':>18} "
          f"{'time s':>7}")
    for name, row in (("without compaction", off), ("with compaction", on)):
        compactions = f"{row['masked']}/{row['summarised']}/{row['dropped']}"
        calls = f"{row['calls']}+{row['summary_calls']}" if row["summary_calls"] else row["calls"]
        print(f"{name:20} {calls:>6} {row['peak']:>9,} {row['total']:>12,} {compactions:>18} "
              f"{row['seconds']:>7.1f}")
    ratio = on["total"] / off["total"]
    print(f"\npeak {on['peak']:,} {'<=' if on['peak'] <= limit else '>'} threshold {limit:,}; "
          f"total {ratio:.1%} of the uncompacted run (target <= 25%)")


if __name__ == "__main__":
    main()
