"""`agent solve` end to end: the scripted model stands in for the LLM; Docker, git, the tools,
the recorder and the verifier are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.scripted_model import tool_call
from agent.solve import solve
from agent.tasks import Task
from tools.sandbox import SandboxConfig
from trajectories.events import AssistantDelta
from trajectories.reader import read_trajectory, rebuild_calls

pytestmark = pytest.mark.usefixtures("docker_ready")

OLD = '"""Return the sum of a and b."""\n    return a - b'
NEW = '"""Return the sum of a and b."""\n    return a + b'
FIX_SCRIPT = [
    {"content": "Let me look at the code.",
     "tool_calls": [tool_call("view", {"path": "calculator/operations.py"})]},
    {"content": None, "tool_calls": [tool_call("str_replace", {
        "path": "calculator/operations.py", "old_str": OLD, "new_str": NEW})]},
    {"content": "Run the tests.", "tool_calls": [tool_call("bash", {
        "command": "python3 -m pytest -q"})]},
    {"content": None, "tool_calls": [tool_call("finish", {"summary": "add now adds."})]},
]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def run_in_process(example, scripted, script, tools: str | None = None, max_steps: int = 8,
                   **llm) -> tuple:
    repo, issue = example
    scripted.script = list(script)
    deltas: list[str] = []
    options = EpisodeConfig(
        llm=LLMConfig(model="openai/scripted", api_base=scripted.url, backoff_s=0.01, **llm),
        sandbox=SandboxConfig(), max_steps=max_steps, tools=tools)
    def listener(event) -> None:
        if isinstance(event, AssistantDelta):
            deltas.append(event.text)

    result = solve(Task.from_issue_file(issue, repo), options, listeners=[listener])
    return result, read_trajectory(Path(result.trajectory_path)), deltas


def tool_results(trajectory) -> list:
    return [e for e in trajectory.events if e.type == "tool_result"]


def test_scripted_fix_gives_reward_1_and_leaves_the_checkout_alone(example, scripted) -> None:
    repo, issue = example
    user_repo = git.Repo(repo)
    head_before = user_repo.head.commit.hexsha
    scripted.script = list(FIX_SCRIPT)
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
                   "--api-base", scripted.url, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result) == [  # the keys users parse, flat, in this order
        "session_id", "model", "branch", "base_commit", "patch", "patch_path",
        "trajectory_path", "reward", "test_output", "steps", "prompt_tokens",
        "completion_tokens", "cost_usd", "exit_status", "summary", "error", "test_command",
        "duration_s", "verify_duration_s"]
    assert result["reward"] == 1 and result["exit_status"] == "finished"
    assert result["steps"] == 4 and result["prompt_tokens"] > 0
    assert "-    return a - b" in result["patch"] and "+    return a + b" in result["patch"]
    assert Path(result["patch_path"]).read_text() == result["patch"]
    assert "4 passed" in result["test_output"]
    assert "step 1:" not in proc.stderr  # progress goes to stderr in text mode only
    # The session's branch holds the fix; the user's checkout, HEAD and files are untouched.
    assert result["branch"] in [h.name for h in user_repo.heads]
    fixed = user_repo.git.show(f"{result['branch']}:calculator/operations.py")
    assert "return a + b" in fixed
    assert user_repo.head.commit.hexsha == head_before == result["base_commit"]
    assert user_repo.active_branch.name == "main" and not user_repo.is_dirty(untracked_files=True)
    assert "return a - b" in (repo / "calculator/operations.py").read_text().split("sum")[1]
    # The model was sent the contract's tools, then the observation of its view call.
    names = [t["function"]["name"] for t in scripted.requests[0]["tools"]]
    assert names == ["bash", "view", "create", "str_replace", "insert", "undo_edit", "grep",
                     "glob", "locate", "repo_map", "todo", "task", "finish"]
    assert "def add(a, b):" in scripted.requests[1]["messages"][-1]["content"]
    system = scripted.requests[0]["messages"][0]["content"]
    assert "A map of the repository" in system and "def add(a, b):" in system
    # The trajectory rebuilds exactly what was sent at each call.
    trajectory = read_trajectory(Path(result["trajectory_path"]))
    assert not trajectory.problems
    assert [e.type for e in trajectory.events][0] == "session_started"
    assert [e.type for e in trajectory.events][-2:] == ["finished", "verified"]
    calls = rebuild_calls(trajectory.events)
    for call, request in zip(calls, scripted.requests, strict=True):
        for ours, sent in zip(call["messages"], request["messages"], strict=True):
            assert ours == sent


def test_streamed_replies_are_reassembled(example, scripted) -> None:
    result, trajectory, deltas = run_in_process(example, scripted, FIX_SCRIPT, stream=True)
    assert result.reward == 1 and result.exit_status == "finished"
    assert "".join(deltas).startswith("Let me look at the code.")
    assert all(r["stream"] for r in scripted.requests)


def test_bad_tool_calls_come_back_as_observations(example, scripted) -> None:
    script = [
        {"tool_calls": [tool_call("view", '{"path": "calculator/oper')]},
        {"tool_calls": [tool_call("delete_everything", {})]},
        {"tool_calls": [tool_call("str_replace", {"path": "calculator/operations.py"})]},
        {"tool_calls": [tool_call("create", {"path": "/etc/evil", "file_text": "x"}),
                        tool_call("create", {"path": "../../escape.txt", "file_text": "x"})]},
        {"tool_calls": [tool_call("bash", {"command": "cat /workspace/../../etc/hostname; "
                                                      "touch /escape 2>&1; echo done"})]},
        {"tool_calls": [tool_call("finish", {"summary": "gave up"})]},
    ]
    result, trajectory, _ = run_in_process(example, scripted, script)
    outputs = [e.output for e in tool_results(trajectory)]
    assert "not valid JSON" in outputs[0]
    assert "unknown tool 'delete_everything'" in outputs[1]
    assert "old_str" in outputs[2] and "required" in outputs[2]
    assert "outside the workspace" in outputs[3] and "outside the workspace" in outputs[4]
    assert "Permission denied" in outputs[5] or "Read-only" in outputs[5]
    assert result.exit_status == "finished" and result.reward == 0 and result.patch == ""
    assert not Path("/etc/evil").exists()
    assert not (example[0].parent.parent / "escape.txt").exists()


def test_a_failed_call_repeated_with_nothing_changed_is_not_run_again(example, scripted) -> None:
    bad_view = tool_call("view", {"path": "calculator/nope.py"})
    tests = tool_call("bash", {"command": "python3 -m pytest -q"})
    no_op = tool_call("str_replace", {"path": "calculator/operations.py", "old_str": OLD,
                                      "new_str": OLD})
    script = [
        {"tool_calls": [bad_view]}, {"tool_calls": [bad_view]},  # blocked: nothing ran since
        {"tool_calls": [tests]},  # tests fail (bash may change files: the memory is cleared)
        {"tool_calls": [tests]},  # blocked: the same failing run, nothing edited in between
        {"tool_calls": [no_op]},  # refused: an edit that changes nothing
        {"tool_calls": [no_op]},  # blocked: a refused edit changed nothing...
        {"tool_calls": [tests]},  # ...so the failing run is still blocked too
        {"tool_calls": [tool_call("str_replace", {
            "path": "calculator/operations.py", "old_str": OLD, "new_str": NEW})]},
        {"tool_calls": [tests]},  # runs again after the edit, and passes
        {"tool_calls": [tool_call("finish", {"summary": "fixed"})]},
    ]
    result, trajectory, _ = run_in_process(example, scripted, script, max_steps=10)
    results = tool_results(trajectory)
    started = [e for e in trajectory.events if e.type == "tool_call_started"]
    assert [r.data.get("repeat_blocked", False) for r in results] == [
        False, True, False, True, False, True, True, False, False, False]
    assert "already failed and nothing has changed" in results[1].output
    assert "nope.py does not exist" in results[1].output  # the first failure, quoted
    assert "new_str is the same as old_str" in results[5].output
    assert len(started) == 6 and not results[8].is_error
    assert result.reward == 1


def test_a_tool_set_limits_what_the_model_sees_and_calls(example, scripted) -> None:
    script = [{"tool_calls": [tool_call("glob", {"pattern": "**/*.py"})]}, *FIX_SCRIPT]
    result, trajectory, _ = run_in_process(example, scripted, script, tools="core")
    offered = [t["function"]["name"] for t in scripted.requests[0]["tools"]]
    assert offered == ["bash", "view", "create", "str_replace", "grep", "finish"]
    assert [t["function"]["name"] for t in trajectory.events[0].tools] == offered
    assert "unknown tool 'glob'" in tool_results(trajectory)[0].output
    assert result.reward == 1
    proc = run_cli("solve", str(example[1]), "--repo", str(example[0]), "--tools", "core,ls")
    message = " ".join(proc.stderr.replace("│", " ").split())
    assert proc.returncode == 2 and "unknown tool set or tool ls" in message


def test_a_reply_without_tool_calls_is_nudged_then_stops(example, scripted) -> None:
    script = [{"content": "I would change add."}, {"content": "Still just talking."}]
    result, trajectory, _ = run_in_process(example, scripted, script)
    assert result.exit_status == "no_tool_call" and result.usage.steps == 2
    nudge = scripted.requests[1]["messages"][-1]
    assert nudge["role"] == "user" and "no tool call" in nudge["content"]


def test_transient_provider_errors_are_retried(example, scripted) -> None:
    script = [{"status": 500}, {"status": 429}, *FIX_SCRIPT]
    result, _, _ = run_in_process(example, scripted, script, retries=3)
    assert result.exit_status == "finished" and result.reward == 1


def test_a_provider_that_keeps_failing_ends_the_episode_with_an_error(example, scripted) -> None:
    repo, issue = example
    scripted.script = [{"status": 500}] * 10
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
                   "--api-base", scripted.url, "--json")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("agent: error:") and "failed after 4 attempts" in last
    assert json.loads(proc.stdout)["exit_status"] == "error"


def test_a_hanging_provider_times_out(example, scripted) -> None:
    result, trajectory, _ = run_in_process(example, scripted, [{"hang": 5}], timeout=1,
                                           retries=0)
    assert result.exit_status == "error" and "failed after 1 attempts" in (result.error or "")
    assert any(e.type == "error" and e.fatal for e in trajectory.events)


def test_uncommitted_changes_are_left_untouched(example, scripted) -> None:
    repo, _ = example
    target = repo / "calculator/operations.py"
    target.write_text(target.read_text() + "\n# my local experiment\n")
    (repo / "scratch.txt").write_text("notes\n")
    before = target.read_text()
    result, _, _ = run_in_process(example, scripted, FIX_SCRIPT)
    assert result.reward == 1
    assert target.read_text() == before and (repo / "scratch.txt").read_text() == "notes\n"
    assert "my local experiment" not in result.patch and "scratch" not in result.patch


def test_not_a_git_repository_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "issue.md").write_text("Fix it.\n")
    proc = run_cli("solve", str(tmp_path / "issue.md"), "--repo", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not a git repository" in proc.stderr


def test_a_data_directory_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a directory")
    proc = run_cli("trajectories", "list", env={"APPRENTICE_HOME": str(home)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"APPRENTICE_HOME {home} is not a usable directory" in proc.stderr


def test_missing_issue_file_is_a_clear_error(example) -> None:
    repo, _ = example
    proc = run_cli("solve", str(repo / "nope.md"), "--repo", str(repo))
    assert proc.returncode == 1 and "issue file" in proc.stderr and "Traceback" not in proc.stderr


def test_docker_not_running_is_a_clear_error_and_leaves_no_branch(example, scripted) -> None:
    repo, issue = example
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
                   "--api-base", scripted.url, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--sandbox local" in proc.stderr
    assert [h.name for h in git.Repo(repo).heads] == ["main"]
    assert scripted.requests == []


def test_a_compacted_episode_still_rebuilds_exactly(example) -> None:
    from agent.context import ContextConfig
    from tests.test_context import SummarisingLLM

    repo, issue = example
    thoughts = "The numbers may say something about the bug. " * 20
    noise = [{"content": f"Look at some numbers ({n}). {thoughts}", "tool_calls": [tool_call(
        "bash", {"command": f"seq {n} 2 {n + 1400}"})]} for n in range(3)]
    with SummarisingLLM([*noise, *FIX_SCRIPT]) as model:
        options = EpisodeConfig(
            llm=LLMConfig(model="openai/scripted", api_base=model.url, backoff_s=0.01),
            sandbox=SandboxConfig(), max_steps=10,
            context=ContextConfig(context_window=4000, keep_recent=0.05, repo_map_tokens=128))
        result = solve(Task.from_issue_file(issue, repo), options)
        sent = model.agent_requests
        summaries = len(model.requests) - len(sent)
    assert result.reward == 1 and result.exit_status == "finished"
    trajectory = read_trajectory(Path(result.trajectory_path))
    compactions = [e for e in trajectory.events if e.type == "compaction"]
    assert compactions and summaries == sum(c.stage != "masked" for c in compactions)
    assert any(c.stage == "summarised" for c in compactions)
    calls = rebuild_calls(trajectory.events)
    assert [c["messages"] for c in calls] == [r["messages"] for r in sent]
