"""Hooks run on the host around a session's events: real episodes through the scripted model,
real hook processes, real git. The sandbox is the local one (hooks never run in it), so these
need no Docker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.episode import EpisodeConfig
from agent.hooks_config import load_hooks
from agent.llm import LLMConfig
from agent.scripted_model import tool_call
from agent.solve import solve
from agent.tasks import Task
from tools.project_file import user_config_path
from tools.sandbox import SandboxConfig
from trajectories.reader import read_trajectory

NO_RM = '''import json, sys
call = json.load(sys.stdin)
if "rm -rf" in call["tool_input"].get("command", ""):
    print("refusing rm -rf: delete files one by one", file=sys.stderr)
    sys.exit(2)
'''
FINISH = tool_call("finish", {"summary": "done"})


def commit(repo: Path, files: dict[str, str], message: str = "add files") -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


def run_episode(example, scripted, script) -> tuple:
    repo, issue = example
    scripted.script = list(script)
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url,
                                          backoff_s=0.01),
                            sandbox=SandboxConfig(kind="local"), max_steps=8, keep_worktree=True)
    result = solve(Task.from_issue_file(issue, repo, "python3 -m pytest -q"), options)
    return result, read_trajectory(Path(result.trajectory_path)).events


def of_type(events, kind: str) -> list:
    return [e for e in events if e.type == kind]


def test_a_trusted_hook_blocks_rm_rf_and_the_model_reads_why(example, scripted) -> None:
    repo, _ = example
    commit(repo, {"hooks/no_rm.py": NO_RM, ".apprentice.toml": (
        '[[hooks.pre_tool_use]]\nmatcher = "bash"\ncommand = ["python3", "hooks/no_rm.py"]\n')})
    trusted = agent("hooks", "trust", "--repo", str(repo))
    assert trusted.returncode == 0 and "pre_tool_use: python3 hooks/no_rm.py" in trusted.stdout
    listed = agent("hooks", "list", "--repo", str(repo), "--json")
    assert json.loads(listed.stdout)[0]["runs"] is True
    result, events = run_episode(example, scripted, [
        {"tool_calls": [tool_call("bash", {"command": "rm -rf calculator"})]},
        {"tool_calls": [tool_call("view", {"path": "calculator/operations.py"})]},
        {"tool_calls": [tool_call("bash", {"command": "echo still here"})]},
        # The model rewrites the guard, then tries again: the changed guard is not run.
        {"tool_calls": [tool_call("create", {"path": "hooks/no_rm.py", "file_text": "pass\n"})]},
        {"tool_calls": [tool_call("bash", {"command": "rm -rf calculator"})]},
        {"tool_calls": [FINISH]},
    ])
    results = of_type(events, "tool_result")
    assert results[0].is_error and results[0].output == (
        "Blocked by a pre_tool_use hook: refusing rm -rf: delete files one by one")
    assert "def add" in results[1].output  # view: no matcher hit, no hook run
    assert "still here" in results[2].output and not results[2].is_error
    assert results[4].is_error and "hooks/no_rm.py changed during the session" in results[4].output
    # What the model was sent next is the hook's reason.
    assert "refusing rm -rf" in scripted.requests[1]["messages"][-1]["content"]
    runs = of_type(events, "hook_run")
    assert [(r.hook_event, r.outcome) for r in runs] == [
        ("pre_tool_use", "blocked"), ("pre_tool_use", "ok"), ("pre_tool_use", "skipped")]
    assert runs[0].exit_code == 2 and runs[0].source == "repository"
    assert runs[0].tool_call_id == results[0].tool_call_id
    assert "calculator/" not in result.patch  # nothing was deleted
    assert result.exit_status == "finished"



def test_a_guard_swapped_for_a_fifo_or_a_link_is_not_followed_and_blocks(example, scripted,
                                                                          tmp_path) -> None:
    """The sandbox owns the worktree: the host's check of a hook's script must neither block
    on a FIFO put in its place nor follow a link out of the tree (to a copy of the script)."""
    repo, _ = example
    commit(repo, {"hooks/no_rm.py": NO_RM, ".apprentice.toml": (
        '[[hooks.pre_tool_use]]\nmatcher = "bash"\ncommand = ["python3", "hooks/no_rm.py"]\n')})
    assert agent("hooks", "trust", "--repo", str(repo)).returncode == 0
    outside = tmp_path / "same.py"
    outside.write_text(NO_RM)  # the trusted content, but outside the workspace
    result, events = run_episode(example, scripted, [
        {"tool_calls": [tool_call("bash", {"command": "rm hooks/no_rm.py && mkfifo "
                                                     "hooks/no_rm.py"})]},
        {"tool_calls": [tool_call("bash", {"command": "rm -rf calculator"})]},
        {"tool_calls": [tool_call("bash", {"command": f"rm hooks/no_rm.py && ln -s {outside} "
                                                     "hooks/no_rm.py"})]},
        {"tool_calls": [tool_call("bash", {"command": "rm -rf calculator"})]},
        {"tool_calls": [FINISH]},
    ])
    results = of_type(events, "tool_result")
    for blocked in (results[1], results[3]):
        assert blocked.is_error and "hooks/no_rm.py changed during the session" in blocked.output
    assert "calculator/" not in result.patch  # nothing was deleted

def test_the_checked_bytes_are_what_runs_even_if_the_script_is_swapped_after_the_check(
        example, scripted, tmp_path, monkeypatch) -> None:
    """A process in the sandbox can rewrite the script between the host's check and the run:
    the hook runs a private copy of the bytes that were checked, never the file again."""
    from agent import hooks as hooks_module

    repo, _ = example
    commit(repo, {"hooks/no_rm.py": NO_RM, ".apprentice.toml": (
        '[[hooks.pre_tool_use]]\nmatcher = "bash"\ncommand = "python3 ./hooks/no_rm.py"\n')})
    assert agent("hooks", "trust", "--repo", str(repo)).returncode == 0
    marker = tmp_path / "swapped-script-ran"
    original = hooks_module.run_hook_process
    ran: list[list[str]] = []

    def swap_then_run(argv, payload, cwd, env, timeout):
        (cwd / "hooks" / "no_rm.py").write_text(f"open({str(marker)!r}, 'w')\n")
        ran.append(argv)
        return original(argv, payload, cwd, env, timeout)

    monkeypatch.setattr(hooks_module, "run_hook_process", swap_then_run)
    result, events = run_episode(example, scripted, [
        {"tool_calls": [tool_call("bash", {"command": "rm -rf calculator"})]},
        {"tool_calls": [FINISH]},
    ])
    blocked = of_type(events, "tool_result")[0]
    assert blocked.is_error and "refusing rm -rf" in blocked.output
    assert not marker.exists() and "calculator/" not in result.patch
    assert "hooks/no_rm.py" in ran[0][2] and "./hooks/no_rm.py" not in ran[0][2]


def test_a_hook_that_hangs_is_killed_at_its_timeout_and_the_call_goes_ahead(
        example, scripted, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    recorder = tmp_path / "record_hook.py"
    recorder.write_text("import json, os, sys\n"
                        "json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), "
                        f"'input': json.load(sys.stdin)}}, open({str(seen)!r}, 'w'))\n")
    user_config_path().write_text(
        '[[hooks.pre_tool_use]]\ncommand = "sleep 60"\ntimeout = 1\n\n'
        f'[[hooks.post_tool_use]]\ncommand = ["{sys.executable}", "{recorder}"]\n')
    os.environ["APPRENTICE_TEST_API_KEY"] = "sk-test-never-in-a-hook-1234567890"
    try:
        result, events = run_episode(example, scripted, [
            {"tool_calls": [tool_call("bash", {"command": "echo ran anyway"})]},
            {"tool_calls": [FINISH]}])
    finally:
        del os.environ["APPRENTICE_TEST_API_KEY"]
    runs = of_type(events, "hook_run")
    hung = [r for r in runs if r.hook_event == "pre_tool_use"]
    assert hung and all(r.outcome == "error" and r.timed_out for r in hung)
    assert hung[0].duration_s < 10 and "timed out after 1 s" in hung[0].message
    assert "ran anyway" in of_type(events, "tool_result")[0].output
    assert any("timed out after 1 s and was killed" in e.message
               for e in of_type(events, "error"))
    # The post_tool_use hook saw the call and its result, in the worktree, with no API key.
    saw = json.loads(seen.read_text())
    assert saw["input"]["hook_event_name"] == "post_tool_use"
    assert saw["input"]["tool_name"] == "finish" and saw["input"]["tool_output"] == (
        "Finished: done")
    worktree = Path(saw["cwd"])  # the session's, not the user's checkout
    assert worktree.name == result.session_id and "worktrees" in worktree.parts
    assert (worktree / "calculator" / "operations.py").is_file()
    assert "APPRENTICE_TEST_API_KEY" not in saw["env"]
    assert not [k for k in saw["env"] if "KEY" in k and not k.startswith("GIT_CONFIG_KEY")]
    assert saw["env"]["APPRENTICE_HOOK_EVENT"] == "post_tool_use"
    assert result.exit_status == "finished"


def test_untrusted_repository_hooks_are_shown_and_not_run(example, scripted,
                                                          tmp_path: Path) -> None:
    repo, _ = example
    marker = tmp_path / "ran-on-the-host"
    hook = f'[[hooks.user_prompt_submit]]\ncommand = "touch {marker}"\n'
    commit(repo, {".apprentice.toml": hook})
    listed = agent("hooks", "list", "--repo", str(repo))
    assert "untrusted, does not run" in listed.stdout and "agent hooks trust" in listed.stdout
    result, events = run_episode(example, scripted, [{"tool_calls": [FINISH]}])
    assert not marker.exists() and not of_type(events, "hook_run")
    notes = [e.message for e in of_type(events, "error")]
    assert any("not trusted, so they do not run" in n and f"touch {marker}" in n for n in notes)
    assert result.exit_status == "finished"
    # Trusted, then changed in a new commit: untrusted again until trusted again.
    agent("hooks", "trust", "--repo", str(repo))
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert load_hooks(repo, head).trusted
    commit(repo, {".apprentice.toml": hook.replace("ran-on", "ran-again-on")})
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert not load_hooks(repo, head).trusted


def test_stop_and_prompt_hooks_keep_the_agent_going_once_and_add_context(
        example, scripted) -> None:
    user_config_path().write_text(
        '[[hooks.user_prompt_submit]]\ncommand = "echo Keep the change small."\n\n'
        '[[hooks.stop]]\ncommand = "echo \'run the tests before you finish\' >&2; exit 2"\n')
    result, events = run_episode(example, scripted, [
        {"tool_calls": [FINISH]},
        {"tool_calls": [tool_call("bash", {"command": "python3 -m pytest -q"})]},
        {"tool_calls": [FINISH]}])
    messages = of_type(events, "user_message")
    assert messages[0].origin == "task" and messages[0].content.endswith("Keep the change small.")
    assert [(m.origin, m.content) for m in messages[1:]] == [
        ("hook", "run the tests before you finish")]
    stops = [r for r in of_type(events, "hook_run") if r.hook_event == "stop"]
    assert [r.outcome for r in stops] == ["continue", "ok"]  # the second is not obeyed
    assert "not obeyed" in stops[1].message
    assert result.exit_status == "finished" and result.usage.steps == 3
    assert "run the tests before you finish" in scripted.requests[1]["messages"][-1]["content"]
