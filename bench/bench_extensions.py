"""What hooks, MCP servers, stream-json output and subagents add to a step: a scripted model
drives the real loop, Docker sandbox and git on the calculator example, once per
configuration.

Per step: the agent's overhead excluding model time (from the end of one model reply to the
start of the next call: tools, hooks, checkpoint, events), median over every step of N
episodes. Configurations:
- baseline: bash `true` calls, nothing configured;
- hooks, `true`: a pre_tool_use and a post_tool_use hook that run `true`;
- hooks, python3: the same two hooks as python3 scripts reading their JSON (like a guard);
- MCP configured, not called: an SDK server on the host and a plain one in the sandbox; the
  same bash calls (the passive cost: schemas in every request, start-up once);
- MCP calls: each step calls an MCP tool instead (host stdio, in-sandbox stdio, HTTP);
- stream-json: the baseline with `agent solve --output-format stream-json`'s printer listening
  (its lines written to a file);
- subagent: each step is a `task` call whose subagent makes one call (finish): its start (the
  system prompt with the repo map), header, recorder, snapshots; its model time is subtracted.

    .venv/bin/python bench/bench_extensions.py [N] [ONLY]

ONLY: comma-separated parts of configuration names to run (the baseline always runs), e.g.
`stream,subagent`.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.episode import EpisodeConfig  # noqa: E402
from agent.example_repos import init_example  # noqa: E402
from agent.llm import LLMConfig  # noqa: E402
from agent.scripted_model import ScriptedModelServer, tool_call  # noqa: E402
from agent.solve import solve  # noqa: E402
from agent.stream_json import StreamJsonPrinter  # noqa: E402
from agent.tasks import Task  # noqa: E402
from trajectories.reader import read_trajectory, subagent_links  # noqa: E402

SERVERS = Path(__file__).resolve().parents[1] / "tests" / "mcp_servers"
STEPS = 6
GUARD = ("import json, sys\ncall = json.load(sys.stdin)\n"
         "sys.exit(2 if 'rm -rf' in str(call) else 0)\n")


def script(calls: list[tuple[str, dict]]) -> list[dict]:
    return [{"tool_calls": [tool_call(name, args)]} for name, args in calls] + [
        {"tool_calls": [tool_call("finish", {"summary": "done"})]}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def step_overheads(events: list) -> list[float]:
    replies = [e for e in events if e.type == "assistant_message"]
    calls = [e for e in events if e.type == "model_call_started"]
    finished = next(e for e in events if e.type == "finished")
    ends = [c.timestamp for c in calls[1:]] + [finished.timestamp]
    return [end - reply.timestamp for reply, end in zip(replies, ends, strict=True)][:-1]


def subagent_model_time(trajectory_path: str) -> list[float]:
    """Per `task` call of the episode, the model time of its subagent (to subtract)."""
    parent = read_trajectory(Path(trajectory_path))
    return [sum(e.latency_s for e in read_trajectory(link.path).events
                if e.type == "assistant_message") for link in subagent_links(parent)]


def run(name: str, config: str, steps: list[dict], episodes: int, server: ScriptedModelServer,
        task: Task, home: Path, rows: list, only: list[str], listeners: tuple = (),
        subagents: bool = False) -> None:
    if rows and only and not any(part in name for part in only):
        return
    (home / "config.toml").write_text(config)
    overheads: list[float] = []
    starts: list[float] = []
    schema_chars = 0
    for _ in range(episodes):
        server.script = list(steps)
        server.requests.clear()
        events: list = []
        result = solve(task, EpisodeConfig(llm=LLMConfig(model="openai/scripted",
                                                        api_base=server.url)),
                       listeners=[events.append, *listeners])
        assert result.exit_status == "finished", result.error
        errors = [e.message for e in events if e.type == "error"]
        assert not errors, errors
        steps_s = step_overheads(events)
        if subagents:
            child_model = subagent_model_time(result.trajectory_path)
            assert len(child_model) == len(steps_s), (child_model, steps_s)
            steps_s = [step - model for step, model in zip(steps_s, child_model, strict=True)]
        overheads += steps_s
        starts += [e.duration_s for e in events if e.type == "mcp_server"]
        schema_chars = len(json.dumps(server.requests[0]["tools"]))
    rows.append((name, statistics.median(overheads), sorted(overheads)[int(len(overheads) * .9)],
                 max(starts) if starts else 0.0, schema_chars))


def main(episodes: int = 3, only: list[str] | None = None) -> None:
    only = only or []
    with tempfile.TemporaryDirectory() as tmp, ScriptedModelServer() as server:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["APPRENTICE_HOME"] = str(home)
        repo, issue = init_example("calculator", Path(tmp) / "example")
        (repo / "mcp_server.py").write_text((SERVERS / "plain_server.py").read_text())
        (Path(tmp) / "guard.py").write_text(GUARD)
        git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b.invalid"]
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "an MCP server"], check=True)
        task = Task.from_issue_file(issue, repo, "python3 -m pytest -q")
        port = free_port()
        http = subprocess.Popen([sys.executable, str(SERVERS / "sdk_server.py"), "--http",
                                 str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5)
        sdk = json.dumps([sys.executable, str(SERVERS / "sdk_server.py")])
        guard = json.dumps([sys.executable, str(Path(tmp) / "guard.py")])
        servers = (f"[mcp.servers.calc]\ncommand = {sdk}\nhost = true\n\n"
                   '[mcp.servers.box]\ncommand = ["python3", "mcp_server.py"]\n\n'
                   f'[mcp.servers.web]\nurl = "http://127.0.0.1:{port}/mcp"\n')
        bash = script([("bash", {"command": "true"})] * STEPS)
        rows: list = []
        try:
            run("baseline (bash true)", "", bash, episodes, server, task, home, rows, only)
            run("hooks: pre+post `true`", '[[hooks.pre_tool_use]]\ncommand = ["true"]\n'
                '[[hooks.post_tool_use]]\ncommand = ["true"]\n', bash, episodes, server, task,
                home, rows, only)
            run("hooks: pre+post python3", f"[[hooks.pre_tool_use]]\ncommand = {guard}\n"
                f"[[hooks.post_tool_use]]\ncommand = {guard}\n", bash, episodes, server, task,
                home, rows, only)
            run("MCP: 3 servers, not called", servers, bash, episodes, server, task, home, rows,
                only)
            run("MCP call: host stdio (SDK)", servers,
                script([("calc__add", {"a": 1, "b": 2})] * STEPS), episodes, server, task,
                home, rows, only)
            run("MCP call: sandbox stdio", servers, script([("box__where", {})] * STEPS),
                episodes, server, task, home, rows, only)
            run("MCP call: HTTP 127.0.0.1 (SDK)", servers,
                script([("web__echo", {"text": "hi"})] * STEPS), episodes, server, task, home,
                rows, only)
            with (Path(tmp) / "stream.jsonl").open("w") as out:
                run("stream-json printer", "", bash, episodes, server, task, home, rows, only,
                    listeners=(StreamJsonPrinter(out),))
            delegate = [{"tool_calls": [tool_call("task", {"description": "look",
                                                           "prompt": "Say done."})]},
                        {"tool_calls": [tool_call("finish", {"summary": "done"})]}] * STEPS
            run("subagent: a task call per step", "", delegate + script([]), episodes, server,
                task, home, rows, only, subagents=True)
        finally:
            http.terminate()
    base = rows[0][1]
    print(f"episodes per configuration: {episodes}, steps each: {STEPS}")
    print("configuration                     step median ms   +ms vs base   p90 ms   "
          "server start s   tool schemas chars")
    for name, median, p90, start, chars in rows:
        print(f"{name:32} {median * 1000:14.1f} {(median - base) * 1000:+13.1f} "
              f"{p90 * 1000:8.1f} {start:16.2f} {chars:20,}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
         sys.argv[2].split(",") if len(sys.argv) > 2 else None)
