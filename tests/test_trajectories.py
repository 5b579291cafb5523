"""Trajectories: durable records, the index, redaction, the verifier and the exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.scripted_model import tool_call
from agent.solve import solve
from agent.tasks import Task
from tests.test_solve import FIX_SCRIPT, run_cli
from trajectories.reader import read_trajectory, rebuild_calls
from trajectories.store import TrajectoryStore
from trajectories.verify import verify_patch

GOOD_PATCH = """--- a/calculator/operations.py
+++ b/calculator/operations.py
@@ -3,7 +3,7 @@
 
 def add(a, b):
     \"\"\"Return the sum of a and b.\"\"\"
-    return a - b
+    return a + b
 
 
 def subtract(a, b):
"""
WRONG_PATCH = GOOD_PATCH.replace("+    return a + b", "+    return a * b")
BROKEN_PATCH = GOOD_PATCH.replace("-    return a - b", "-    return a / b")
GIVE_UP = [{"tool_calls": [tool_call("finish", {"summary": "no idea"})]}]


def episode(example, scripted, script, **llm):
    repo, issue = example
    scripted.script = list(script)
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url,
                                         backoff_s=0.01, **llm), max_steps=8)
    return solve(Task.from_issue_file(issue, repo), options)


def base_commit(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.usefixtures("docker_ready")
class TestVerify:
    def test_a_correct_patch_earns_1(self, example) -> None:
        repo, _ = example
        result = verify_patch(repo, base_commit(repo), GOOD_PATCH, "python3 -m pytest -q")
        assert result.reward == 1 and "4 passed" in result.test_output

    def test_a_wrong_patch_earns_0(self, example) -> None:
        repo, _ = example
        result = verify_patch(repo, base_commit(repo), WRONG_PATCH, "python3 -m pytest -q")
        assert result.reward == 0 and "1 failed" in result.test_output

    def test_a_patch_that_does_not_apply_earns_0_with_the_reason(self, example) -> None:
        repo, _ = example
        result = verify_patch(repo, base_commit(repo), BROKEN_PATCH, "python3 -m pytest -q")
        assert result.reward == 0 and "does not apply" in result.test_output

    def test_listed_tests_decide_the_reward(self, example) -> None:
        repo, _ = example
        base = base_commit(repo)
        passing = verify_patch(repo, base, "", "python3 -m pytest -q",
                               pass_to_pass=["tests/test_operations.py::test_subtract"])
        assert passing.reward == 1 and "test_subtract" in passing.test_command
        failing = verify_patch(repo, base, "", "python3 -m pytest -q",
                               fail_to_pass=["tests/test_operations.py::test_add"])
        assert failing.reward == 0

    def test_a_hanging_test_command_times_out_with_0(self, example) -> None:
        repo, _ = example
        result = verify_patch(repo, base_commit(repo), GOOD_PATCH, "sleep 60", timeout=2)
        assert result.reward == 0 and result.duration_s < 30

    def test_agent_verify_stores_the_result(self, example, scripted) -> None:
        result = episode(example, scripted, FIX_SCRIPT)
        proc = run_cli("verify", result.session_id, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["reward"] == 1
        events = read_trajectory(Path(result.trajectory_path)).events
        assert [e.type for e in events][-2:] == ["verified", "verified"]
        assert TrajectoryStore().get(result.session_id)["reward"] == 1


def test_corrupted_and_cut_lines_are_reported_and_skipped(tmp_path: Path, example,
                                                          scripted, docker_ready) -> None:
    result = episode(example, scripted, FIX_SCRIPT)
    lines = Path(result.trajectory_path).read_text().splitlines()
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join([*lines[:3], "{not json", *lines[3:], '{"type": "tool_res'])
                       + "\n")
    trajectory = read_trajectory(damaged)
    assert len(trajectory.events) == len(lines)
    assert len(trajectory.problems) == 2
    assert ":4:" in trajectory.problems[0] and f":{len(lines) + 2}:" in trajectory.problems[1]
    proc = run_cli("trajectories", "show", str(damaged))
    assert proc.returncode == 0 and "skipped unreadable event" in proc.stderr
    assert "[verified] reward=1" in proc.stdout


def test_a_killed_process_leaves_a_readable_file_and_a_repairable_index(
        example, scripted, apprentice_home: Path, docker_ready) -> None:
    repo, issue = example
    scripted.script = [FIX_SCRIPT[0], FIX_SCRIPT[1], {"hang": 120}]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "solve", str(issue), "--repo", str(repo), "--model",
         "openai/scripted", "--api-base", scripted.url, "--timeout", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline and len(scripted.requests) < 3:
        time.sleep(0.2)
    assert len(scripted.requests) == 3, "the episode never reached its third model call"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    path = next((apprentice_home / "runs").rglob("*.jsonl"))
    trajectory = read_trajectory(path)
    assert not trajectory.problems
    assert [e.type for e in trajectory.events].count("tool_result") == 2
    assert len(rebuild_calls(trajectory.events)) == 2
    store = TrajectoryStore()
    assert store.list()[0]["exit_status"] == "killed"  # its process is gone
    assert run_cli("trajectories", "reindex").returncode == 0
    row = TrajectoryStore().list()[0]
    assert row["exit_status"] == "killed" and row["steps"] == 2


def test_secrets_in_the_environment_never_reach_any_file(example, scripted, monkeypatch,
                                                         apprentice_home: Path,
                                                         docker_ready) -> None:
    secret = "sk-apprentice-test-" + "9" * 24
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567890")
    script = [
        {"content": f"My key is {secret} and tok-1234567890.",
         "tool_calls": [tool_call("bash", {"command": "env; echo $OPENAI_API_KEY"})]},
        {"tool_calls": [tool_call("create", {"path": "leak.txt", "file_text": secret})]},
        *GIVE_UP,
    ]
    result = episode(example, scripted, script)
    bash_output = read_trajectory(Path(result.trajectory_path)).events
    assert any(e.type == "tool_result" and "PATH=" in e.output for e in bash_output)
    for path in apprentice_home.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            data = path.read_bytes()
            assert secret.encode() not in data, path
            assert b"tok-1234567890" not in data, path


def test_list_filters_and_export_formats_load_and_render(example, scripted, tmp_path: Path,
                                                         model_ready: Path,
                                                         docker_ready) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer

    good = episode(example, scripted, FIX_SCRIPT)
    bad = episode(example, scripted, GIVE_UP)
    listed = json.loads(run_cli("trajectories", "list", "--json").stdout)
    assert {r["id"] for r in listed} == {good.session_id, bad.session_id}
    winners = json.loads(run_cli("trajectories", "list", "--reward", "1", "--json").stdout)
    assert [r["id"] for r in winners] == [good.session_id]
    calls = json.loads(run_cli("trajectories", "show", good.session_id, "--calls",
                               "--json").stdout)
    assert len(calls) == 4 and calls[0]["tools"][0]["function"]["name"] == "bash"

    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    for fmt, expected in (("sft", 1), ("dpo", 1), ("grpo", 1), ("swebench", 1)):
        out = tmp_path / f"{fmt}.jsonl"
        proc = run_cli("trajectories", "export", "--format", fmt, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        rows = load_dataset("json", data_files=str(out), split="train")
        assert len(rows) == expected, fmt
        if fmt == "sft":
            messages = rows[0]["messages"]
            assert [m["role"] for m in messages][:2] == ["system", "user"]
            assert messages[2]["tool_calls"][0]["function"]["name"] == "view"
            text = tokenizer.apply_chat_template(messages, tools=json.loads(rows[0]["tools"]),
                                                 tokenize=False)
            assert "Solve this issue" in text
        if fmt == "dpo":
            assert rows[0]["chosen"][-1]["tool_calls"][0]["function"]["name"] == "finish"
        if fmt == "swebench":
            patches = {r["instance_id"]: r["model_patch"] for r in rows}
            assert set(patches) == {"issue"} and set(rows.column_names) == {
                "instance_id", "model_name_or_path", "model_patch"}
