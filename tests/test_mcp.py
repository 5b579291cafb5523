"""MCP servers' tools in real episodes: a server written with the `mcp` SDK over stdio on the
host and over streamable HTTP on 127.0.0.1, a self-contained one inside the Docker sandbox,
and servers that fail to start, hang or crash. The scripted model stands in for the LLM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.scripted_model import tool_call
from agent.solve import solve
from agent.tasks import Task
from tools.project_file import user_config_path
from tools.sandbox import SandboxConfig
from trajectories.reader import read_trajectory, rebuild_calls
from trajectories.replay import replay_trajectory

pytestmark = pytest.mark.usefixtures("docker_ready")

SERVERS = Path(__file__).parent / "mcp_servers"
SDK_SERVER = SERVERS / "sdk_server.py"
FINISH = tool_call("finish", {"summary": "done"})


def commit(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "add MCP servers"], check=True)


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))


def run_episode(example, scripted, script) -> tuple:
    repo, issue = example
    scripted.script = list(script)
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url,
                                          backoff_s=0.01), sandbox=SandboxConfig(), max_steps=10)
    result = solve(Task.from_issue_file(issue, repo, "python3 -m pytest -q"), options)
    return result, read_trajectory(Path(result.trajectory_path)).events


def of_type(events, kind: str) -> list:
    return [e for e in events if e.type == kind]


def toml_list(*words: object) -> str:
    return json.dumps([str(w) for w in words])


@pytest.fixture
def http_server() -> Iterator[str]:
    """The SDK server over streamable HTTP on 127.0.0.1; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, str(SDK_SERVER), "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_sdk_server_on_the_host_and_a_plain_one_in_the_sandbox_offer_their_tools(
        example, scripted) -> None:
    repo, _ = example
    commit(repo, {"mcp_server.py": (SERVERS / "plain_server.py").read_text(),
                  ".apprentice.toml": (
                      "[mcp.servers.box]\ncommand = \"python3 mcp_server.py\"\n\n"
                      f"[mcp.servers.calc]\ncommand = {toml_list(sys.executable, SDK_SERVER)}\n"
                      "host = true\n")})
    listed = json.loads(agent("mcp", "list", "--repo", str(repo), "--json").stdout)
    assert {row["server"]: row["state"] for row in listed} == {"box": "ready",
                                                               "calc": "untrusted"}
    assert "box__where" in listed[0]["tools"]
    trusted = agent("mcp", "trust", "--repo", str(repo))
    assert trusted.returncode == 0 and "calc [host]" in trusted.stdout
    os.environ["APPRENTICE_TEST_API_KEY"] = "sk-test-never-in-a-server-1234567890"
    try:
        result, events = run_episode(example, scripted, [
            {"tool_calls": [tool_call("calc__add", {"a": 2, "b": 3})]},
            {"tool_calls": [tool_call("calc__where", {}), tool_call("box__where", {})]},
            {"tool_calls": [tool_call("box__network", {}),
                            tool_call("box__read", {"path": "calculator/operations.py"})]},
            {"tool_calls": [tool_call("calc__long_text", {"characters": 50_000})]},
            {"tool_calls": [tool_call("calc__add", {"a": "two"})]},
            {"tool_calls": [FINISH]},
        ])
    finally:
        del os.environ["APPRENTICE_TEST_API_KEY"]
    states = {e.server: (e.state, e.where) for e in of_type(events, "mcp_server")}
    assert states == {"box": ("ready", "sandbox"), "calc": ("ready", "host")}
    header = of_type(events, "session_started")[0]
    schemas = {t["function"]["name"]: t["function"] for t in header.tools}
    assert schemas["calc__add"]["parameters"]["required"] == ["a", "b"]
    assert schemas["calc__add"]["description"].startswith("Add two integers.")
    assert "box__read" in [t["function"]["name"] for t in scripted.requests[0]["tools"]]
    results = of_type(events, "tool_result")
    outputs = [r.output for r in results]
    assert outputs[0] == "5"
    assert "host=sandbox" not in outputs[1] and "APPRENTICE_TEST_API_KEY" not in outputs[1]
    assert "/worktrees/" in outputs[1]  # on the host, in the session's worktree
    assert outputs[2].startswith("host=sandbox cwd=/workspace uid=")
    assert outputs[3].startswith("network: unreachable")
    assert "def add(a, b):" in outputs[4]
    assert len(outputs[5]) < 22_000 and "characters of output were cut" in outputs[5]
    assert results[6].is_error and "valid integer" in outputs[6]
    assert result.exit_status == "finished"
    # Replay rebuilds what the model was sent, MCP results included; re-running the calls in
    # a fresh sandbox leaves the outside servers' calls out, and says so.
    for call, request in zip(rebuild_calls(events), scripted.requests, strict=True):
        assert call["messages"] == request["messages"]
    report = replay_trajectory(read_trajectory(Path(result.trajectory_path)))
    assert report.reproduced and [c.name for c in report.calls] == ["finish"]
    assert sum("MCP server's tool; not replayed" in note for note in report.notes) == 7


def test_servers_that_fail_hang_or_crash_leave_the_session_going(
        example, scripted, http_server: str) -> None:
    user_config_path().write_text(
        f'[mcp.servers.web]\nurl = "{http_server}"\n\n'
        f"[mcp.servers.calc]\ncommand = {toml_list(sys.executable, SDK_SERVER)}\nhost = true\n"
        "timeout = 2\n\n"
        f"[mcp.servers.stuck]\ncommand = {toml_list(sys.executable, SDK_SERVER, '--hang')}\n"
        "host = true\nstartup_timeout = 3\n\n"
        f"[mcp.servers.broken]\ncommand = {toml_list(sys.executable, SDK_SERVER, '--exit')}\n"
        "host = true\n\n"
        '[mcp.servers.absent]\ncommand = ["no-such-mcp-server"]\n')
    started = time.monotonic()
    result, events = run_episode(example, scripted, [
        {"tool_calls": [tool_call("web__echo", {"text": "over HTTP"})]},
        {"tool_calls": [tool_call("calc__sleep", {"seconds": 8})]},
        {"tool_calls": [tool_call("calc__crash", {})]},
        {"tool_calls": [tool_call("calc__add", {"a": 1, "b": 1})]},
        {"tool_calls": [tool_call("stuck__anything", {})]},
        {"tool_calls": [tool_call("bash", {"command": "echo the session goes on"})]},
        {"tool_calls": [FINISH]},
    ])
    assert time.monotonic() - started < 120
    states = {e.server: e for e in of_type(events, "mcp_server")}
    assert {name: e.state for name, e in states.items()} == {
        "web": "ready", "calc": "ready", "stuck": "failed", "broken": "failed",
        "absent": "failed"}
    assert states["web"].where == "url" and "web__echo" in states["web"].tools
    assert "did not start within 3 s" in states["stuck"].error
    assert "exited before answering" in states["broken"].error
    assert "missing configuration" in states["broken"].error  # its stderr
    assert "not found" in states["absent"].error and "sandbox image" in states["absent"].error
    errors = " ".join(e.message for e in of_type(events, "error"))
    assert "'stuck' did not start" in errors and "'absent' did not start" in errors
    outputs = [r.output for r in of_type(events, "tool_result")]
    assert outputs[0] == "over HTTP"
    assert "did not answer sleep within 2 s" in outputs[1]
    assert "has stopped" in outputs[2] and "crashing on purpose" in outputs[2]
    assert "has stopped" in outputs[3]
    assert "unknown tool 'stuck__anything'" in outputs[4]
    assert "the session goes on" in outputs[5]
    assert result.exit_status == "finished"


@pytest.mark.asyncio
async def test_the_tui_status_shows_the_servers_and_which_run_on_the_host(
        example, scripted) -> None:
    from tests.test_tui import SIZE, make_app, say, tool_blocks

    repo, _ = example
    commit(repo, {"mcp_server.py": (SERVERS / "plain_server.py").read_text()})
    user_config_path().write_text(
        '[mcp.servers.box]\ncommand = "python3 mcp_server.py"\n\n'
        f"[mcp.servers.calc]\ncommand = {toml_list(sys.executable, SDK_SERVER)}\nhost = true\n")
    app = make_app(repo, scripted, [{"tool_calls": [tool_call("calc__add", {"a": 4, "b": 5})]},
                                    {"content": "4 + 5 = 9"}])
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "add 4 and 5")
        assert app.status.mcp == "box, calc on host"
        assert "mcp: box, calc on host" in str(app.status.render())
        block = tool_blocks(app)["calc__add"]
        assert block.result is not None and block.result.output == "9"
