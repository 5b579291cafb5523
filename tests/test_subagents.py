"""Subagents (the `task` tool): a child session with a fresh context on the same worktree and
sandbox, recorded as a nested trajectory linked from the parent's. The scripted model stands in
for the LLM; Docker, git, the recorder and the verifier are real."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import git
import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.scripted_model import tool_call
from agent.solve import solve
from agent.stream_json import StreamJsonPrinter
from agent.subagents import SubagentConfig, load_config, without_subagents
from agent.tasks import Task
from tests.test_solve import NEW, OLD, run_cli
from tools.control import select_tools
from tools.sandbox import SandboxConfig
from trajectories.events import AssistantMessage, ToolCallStarted
from trajectories.export import export_rows
from trajectories.reader import read_trajectory, rebuild_calls, subagent_links
from trajectories.replay import replay_trajectory
from trajectories.store import TrajectoryStore

pytestmark = pytest.mark.usefixtures("docker_ready")

PROMPT = "Find where add is defined and say what it does."
FIX = {"path": "calculator/operations.py", "old_str": OLD, "new_str": NEW}


def run(example, scripted, script, listeners=(), on_open=None):
    repo, issue = example
    scripted.script = list(script)
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url,
                                          backoff_s=0.01), sandbox=SandboxConfig(), max_steps=8)
    result = solve(Task.from_issue_file(issue, repo), options, listeners=list(listeners),
                   on_open=on_open)
    return result, read_trajectory(Path(result.trajectory_path))


def results_of(trajectory) -> list:
    return [e for e in trajectory.events if e.type == "tool_result"]


def test_a_read_only_subagent_runs_in_a_fresh_context_and_its_trajectory_rebuilds(
        example, scripted) -> None:
    script = [
        {"content": "Delegate the search.", "tool_calls": [
            tool_call("task", {"description": "nested", "prompt": PROMPT, "tools": ["task"]}),
            tool_call("task", {"description": "edits", "prompt": PROMPT,
                               "tools": ["view", "str_replace"]}),
            tool_call("task", {"description": "find add", "prompt": PROMPT},
                      call_id="call_task")]},
        # the child's three calls
        {"tool_calls": [tool_call("grep", {"pattern": "def add"})]},
        {"tool_calls": [tool_call("str_replace", FIX)]},
        {"tool_calls": [tool_call("finish", {"summary": "add is in calculator/operations.py; "
                                                        "it subtracts."})]},
        # the parent again
        {"tool_calls": [tool_call("str_replace", FIX)]},
        {"tool_calls": [tool_call("finish", {"summary": "add now adds."})]},
    ]
    printed = io.StringIO()
    result, parent = run(example, scripted, script, [StreamJsonPrinter(printed)])
    assert result.exit_status == "finished" and result.reward == 1
    nested, edits, ran = results_of(parent)[:3]
    assert nested.is_error and "depth limit" in nested.output  # depth 1: no grandchildren
    assert edits.is_error and "str_replace: subagents get read-only tools unless" in edits.output
    assert not ran.is_error, ran.output
    assert ran.output.startswith("Subagent 'find add' finished after 3 steps.")
    assert "it subtracts" in ran.output and ran.output.endswith("Files it changed: none")
    # The nested trajectory: linked both ways, tools read-only, a fresh context.
    (link,) = subagent_links(parent)
    assert link.tool_call_id == "call_task" and link.path.is_file()
    child = read_trajectory(link.path)
    assert not child.problems and child.header is not None
    assert child.header.parent == {"session_id": result.session_id, "tool_call_id": "call_task",
                                   "depth": 1, "description": "find add"}
    assert link.session_id == child.header.session_id == f"{result.session_id}.task1"
    assert [t["function"]["name"] for t in child.header.tools] == [
        "view", "grep", "glob", "repo_map", "todo", "finish"]
    first = scripted.requests[1]["messages"]
    assert [m["role"] for m in first] == ["system", "user"] and first[1]["content"] == PROMPT
    refused = results_of(child)[1]  # the read-only child's edit
    assert refused.is_error and "unknown tool 'str_replace'" in refused.output
    # `trajectories show --calls` rebuilds every call exactly as sent, the child's from its file.
    proc = run_cli("trajectories", "show", link.session_id, "--calls", "--json")
    assert proc.returncode == 0, proc.stderr
    child_calls = json.loads(proc.stdout)
    parent_calls = rebuild_calls(parent.events)
    sent = scripted.requests
    assert [c["messages"] for c in child_calls] == [r["messages"] for r in sent[1:4]]
    assert [c["messages"] for c in parent_calls] == [r["messages"] for r in [sent[0], *sent[4:]]]
    assert child_calls == rebuild_calls(child.events)
    proc = run_cli("trajectories", "show", result.trajectory_path, "--calls")
    assert f"subagent {link.session_id} (finished" in proc.stdout
    assert proc.stdout.count("        call at step") == 0 and proc.stdout.count("    call at") == 3
    # The parent's cost counts the child's calls; the child is not an episode of the index.
    calls = [e for t in (parent, child) for e in t.events if isinstance(e, AssistantMessage)]
    assert result.usage.prompt_tokens == sum(e.prompt_tokens for e in calls)
    assert result.usage.steps == 3
    store = TrajectoryStore()
    try:
        assert store.get(link.session_id) is None and store.get(result.session_id) is not None
    finally:
        store.close()
    # Its own SFT row, with the episode's reward and the link.
    rows = list(export_rows([parent], "sft"))
    assert [r["session_id"] for r in rows] == [result.session_id, link.session_id]
    assert rows[1]["reward"] == 1 and rows[1]["parent_tool_call_id"] == "call_task"
    assert rows[1]["parent_session_id"] == result.session_id
    assert [m["role"] for m in rows[1]["messages"]][:2] == ["system", "user"]
    # stream-json prints the child's events among the parent's, in the order they happened.
    lines = [json.loads(line) for line in printed.getvalue().splitlines()]
    sessions = [line["session_id"] for line in lines]
    assert sessions.count(link.session_id) == len(child.events)
    assert lines[sessions.index(link.session_id)]["parent"]["tool_call_id"] == "call_task"
    # Replay runs the child's calls from its trajectory where the parent's task call was.
    report = replay_trajectory(parent)
    assert report.reproduced and report.patch_status == "same", report.to_dict()
    assert [c.name for c in report.calls] == ["grep", "str_replace", "finish", "str_replace",
                                              "finish"]


def test_a_subagent_allowed_to_edit_reports_its_files_and_stops_with_its_parent(
        example, scripted) -> None:
    repo, _ = example
    (repo / ".apprentice.toml").write_text("[subagents]\nallow_edits = true\nmax_steps = 5\n")
    checkout = git.Repo(repo)
    checkout.index.add([".apprentice.toml"])
    checkout.index.commit("let subagents edit")
    script = [
        {"tool_calls": [tool_call("task", {"description": "fix add", "prompt": "Fix add."})]},
        {"tool_calls": [tool_call("str_replace", FIX)]},
        {"tool_calls": [tool_call("bash", {"command": "sleep 120"})]},
        {"tool_calls": [tool_call("finish", {"summary": "never reached"})]},
    ]
    opened = []

    class InterruptOnSleep:
        subagent_events = True  # hears the child's events too

        def __call__(self, event) -> None:
            if isinstance(event, ToolCallStarted) and "sleep" in event.arguments:
                threading.Timer(0.5, opened[0].session.interrupt).start()

    result, parent = run(example, scripted, script, [InterruptOnSleep()], opened.append)
    assert result.exit_status == "interrupted"
    ran = results_of(parent)[0]
    assert ran.is_error and "ended (interrupted) after 2 steps" in ran.output
    assert ran.output.endswith("Files it changed: calculator/operations.py")
    assert ran.data["subagent"]["files_changed"] == ["calculator/operations.py"]
    child = read_trajectory(subagent_links(parent)[0].path)
    assert "bash" in [t["function"]["name"] for t in child.header.tools]
    assert child.events[-1].type == "finished" and child.events[-1].exit_status == "interrupted"
    assert len(scripted.requests) == 3  # neither went on after the interrupt
    assert "+    return a + b" in result.patch and result.reward == 1


def test_the_subagents_table_is_checked_and_max_depth_0_removes_the_tool(tmp_path) -> None:
    repo = tmp_path / "repo"
    checkout = git.Repo.init(repo)
    (repo / ".apprentice.toml").write_text("[subagents]\nmax_steps = 0\n")
    checkout.index.add([".apprentice.toml"])
    bad = checkout.index.commit("a bad table").hexsha
    config, problems = load_config(repo, bad)
    assert config == SubagentConfig()
    assert len(problems) == 1 and "[subagents] ignored" in problems[0].message
    assert "max_steps" in problems[0].message
    (repo / ".apprentice.toml").write_text("[subagents]\nmax_depth = 0\n")
    checkout.index.add([".apprentice.toml"])
    off = checkout.index.commit("no subagents").hexsha
    config, problems = load_config(repo, off)
    assert config.max_depth == 0 and not problems
    assert "task" in [t.name for t in select_tools("full")]
    assert "task" not in [t.name for t in without_subagents(select_tools("full"), config)]
