"""Replay (the determinism check), SWE-bench instances as tasks, importing other agents' logs,
compact token ids and the versioned schema. Docker, git and the model server are real."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.scripted_model import tool_call
from agent.solve import solve
from agent.tasks import Task, TaskError, load_swebench_instance
from tests.test_solve import FIX_SCRIPT, run_cli
from tests.test_trajectories import GIVE_UP, GOOD_PATCH, base_commit
from trajectories.events import (
    SCHEMA_VERSION,
    AssistantMessage,
    Compaction,
    Finished,
    SessionStarted,
    ToolResult,
    Usage,
    UserMessage,
    parse_event,
)
from trajectories.reader import (
    UnsupportedSchemaError,
    message_of,
    read_trajectory,
    rebuild_calls,
)
from trajectories.recorder import TrajectoryRecorder
from trajectories.token_ids import TokenIdsCompactor, TokenIdsExpander
from trajectories.verify import verify_patch


def run_episode(repo: Path, task: Task, scripted, script) -> object:
    scripted.script = list(script)
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url,
                                         backoff_s=0.01), max_steps=8)
    return solve(task, options)


# --- replay -------------------------------------------------------------------------------


@pytest.mark.usefixtures("docker_ready")
class TestReplay:
    def test_a_recorded_episode_replays_the_same(self, example, scripted) -> None:
        repo, issue = example
        result = run_episode(repo, Task.from_issue_file(issue, repo), scripted, FIX_SCRIPT)
        proc = run_cli("replay", result.session_id, "--json")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        report = json.loads(proc.stdout)
        assert report["reproduced"] and report["patch_status"] == "same"
        assert [c["name"] for c in report["calls"]] == ["view", "str_replace", "bash", "finish"]
        assert {c["status"] for c in report["calls"]} <= {"same", "volatile"}
        # pytest's "4 passed in 0.02s" is only equal once the timing is masked, if at all
        assert report["calls"][2]["status"] in ("same", "volatile")
        assert [h.name for h in git.Repo(repo).heads if "replay" in h.name] == []

    def test_differing_observations_are_reported_step_by_step(self, example, scripted,
                                                              tmp_path: Path) -> None:
        repo, issue = example
        script = [
            {"tool_calls": [tool_call("bash", {"command": "echo $RANDOM-$RANDOM-$RANDOM"})]},
            {"tool_calls": [tool_call("view", {"path": "calculator/operations.py"})]},
            *GIVE_UP,
        ]
        result = run_episode(repo, Task.from_issue_file(issue, repo), scripted, script)
        # also pretend the file looked different when the episode was recorded
        tampered = tmp_path / "tampered.jsonl"
        text = Path(result.trajectory_path).read_text()
        tampered.write_text(text.replace("return a - b", "return a - c", 1))
        proc = run_cli("replay", str(tampered))
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("step   1 bash") and lines[0].endswith("differs")
        assert any(line.startswith("step   2 view") and line.endswith("differs")
                   for line in lines)
        assert "-     6\t    return a - c" in proc.stdout
        assert "+     6\t    return a - b" in proc.stdout
        assert "2 differ -> NOT reproduced" in proc.stdout

    def test_replay_of_an_unknown_episode_is_a_clear_error(self) -> None:
        proc = run_cli("replay", "no-such-episode")
        assert proc.returncode == 2 and "no trajectory 'no-such-episode'" in proc.stderr
        assert "Traceback" not in proc.stderr


# --- SWE-bench instances --------------------------------------------------------------------

TEST_PATCH = """--- /dev/null
+++ b/tests/test_more.py
@@ -0,0 +1,5 @@
+from calculator import add
+
+
+def test_add_more():
+    assert add(20, 22) == 42
"""


def instance_for(repo: Path, issue: Path, **extra) -> dict:
    return {"repo": "example/calculator", "instance_id": "calc-1",
            "base_commit": base_commit(repo), "problem_statement": issue.read_text(),
            "FAIL_TO_PASS": json.dumps(["tests/test_more.py::test_add_more"]),
            "PASS_TO_PASS": ["tests/test_operations.py::test_subtract"],
            "test_patch": TEST_PATCH, "patch": "the gold patch is never used", "version": "1.0",
            **extra}


@pytest.mark.usefixtures("docker_ready")
def test_solve_takes_a_swebench_instance_and_judges_it_with_its_test_patch(
        example, scripted, tmp_path: Path) -> None:
    repo, issue = example
    instances = tmp_path / "instances.jsonl"
    other = {**instance_for(repo, issue), "instance_id": "calc-2"}
    instances.write_text(json.dumps(other) + "\n" + json.dumps(instance_for(repo, issue)) + "\n")
    scripted.script = list(FIX_SCRIPT)
    proc = run_cli("solve", "--instance", str(instances), "--instance-id", "calc-1", "--repo",
                   str(repo), "--model", "openai/scripted", "--api-base", scripted.url, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reward"] == 1 and "test_add_more" in result["test_command"]
    assert "2 passed" in result["test_output"]
    sent = json.dumps(scripted.requests)
    assert "test_add_more" not in sent and "gold patch" not in sent
    assert "calculator.add(2, 3)" in scripted.requests[0]["messages"][1]["content"]
    header = read_trajectory(Path(result["trajectory_path"])).header
    assert header.task["instance_id"] == "calc-1" and header.task["test_patch"] == TEST_PATCH
    swebench = tmp_path / "preds.jsonl"
    assert run_cli("trajectories", "export", "--format", "swebench", "--out",
                   str(swebench)).returncode == 0
    assert json.loads(swebench.read_text())["instance_id"] == "calc-1"
    # the same instance, unsolved: its FAIL_TO_PASS test (from the test patch) fails
    task = Task.from_swebench(instance_for(repo, issue), repo)
    failed = run_episode(repo, task, scripted, GIVE_UP)
    assert failed.reward == 0 and "test_add_more" in failed.test_output


@pytest.mark.usefixtures("docker_ready")
def test_a_test_patch_that_does_not_apply_earns_0_with_the_reason(example) -> None:
    repo, _ = example
    broken = GOOD_PATCH.replace("calculator/operations.py", "tests/test_operations.py")
    result = verify_patch(repo, base_commit(repo), GOOD_PATCH, "python3 -m pytest -q",
                          test_patch=broken)
    assert result.reward == 0 and "the test patch does not apply" in result.test_output


def test_bad_instances_are_clear_errors(example, tmp_path: Path) -> None:
    repo, issue = example
    many = tmp_path / "many.json"
    many.write_text(json.dumps([instance_for(repo, issue),
                                {**instance_for(repo, issue), "instance_id": "calc-2"}]))
    with pytest.raises(TaskError, match="holds 2 instances"):
        load_swebench_instance(many)
    assert load_swebench_instance(many, "calc-2")["instance_id"] == "calc-2"
    with pytest.raises(TaskError, match="is not in"):
        Task.from_swebench(instance_for(repo, issue, base_commit="0" * 40), repo)
    with pytest.raises(TaskError, match="FAIL_TO_PASS"):
        Task.from_swebench(instance_for(repo, issue, FAIL_TO_PASS="not json"), repo)
    proc = run_cli("solve", "--repo", str(repo))
    assert proc.returncode == 2 and "--instance FILE" in proc.stderr
    proc = run_cli("solve", "--instance", str(many), "--repo", str(repo))
    assert proc.returncode == 1 and "--instance-id" in proc.stderr


# --- importing other agents' trajectories ---------------------------------------------------

MINI_V1 = {
    "info": {"exit_status": "Submitted", "submission": "diff --git a/x b/x",
             "model_stats": {"instance_cost": 0.1, "api_calls": 4}, "mini_version": "1.9.0",
             "config": {"model": {"model_name": "anthropic/claude-sonnet-4"},
                        "environment": {"cwd": "/testbed"}}},
    "messages": [
        {"role": "system", "content": "Reply with exactly one ```bash block."},
        {"role": "user", "content": "<pr_description>add is wrong</pr_description>"},
        {"role": "assistant",
         "content": "THOUGHT: look at it.\n\n```bash\ncat /testbed/calculator/operations.py\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\ndef add(a, b):\n"
                                    "    return a - b\n</output>"},
        {"role": "assistant", "content": "I will fix it now."},
        {"role": "user", "content": "Please always provide EXACTLY ONE action in triple "
                                    "backticks, found 0 actions."},
        {"role": "assistant", "content": "THOUGHT: fix.\n\n```bash\nsed -i 's/a - b/a + b/' "
                                         "calculator/operations.py\n```"},
        {"role": "user", "content": "<returncode>0</returncode>\n<output>\n</output>"},
        {"role": "assistant", "content": "THOUGHT: done, submit.\n\n```bash\necho "
                                         "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A "
                                         "&& git diff --cached\n```"},
        {"role": "user", "content": "diff --git a/x b/x"},
    ],
    "trajectory_format": "mini-swe-agent-1",
}

MINI_V2 = {
    "info": {"exit_status": "Submitted", "submission": "",
             "config": {"model": {"model_name": "openai/gpt-5"},
                        "environment": {"cwd": "/testbed"}}},
    "messages": [
        {"role": "system", "content": "You can call bash.", "extra": {}},
        {"role": "user", "content": "Fix add.", "extra": {}},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {
                "name": "bash", "arguments": json.dumps({"command": "grep -n add -r ."})}},
            {"id": "toolu_2", "type": "function", "function": {
                "name": "bash", "arguments": json.dumps({"command": "ls /testbed"})}}],
         "extra": {"cost": 0.01}},
        {"role": "tool", "tool_call_id": "toolu_1", "content": [
            {"type": "text", "text": "<returncode>0</returncode>\n./calculator/x.py:1:def add"}],
         "extra": {"returncode": 0}},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "calculator tests",
         "extra": {"returncode": 0}},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_3", "type": "function", "function": {"name": "bash", "arguments":
             json.dumps({"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\ngit diff"})}}]},
        {"role": "exit", "content": "", "extra": {"exit_status": "Submitted", "submission": ""}},
    ],
    "trajectory_format": "mini-swe-agent-1.1",
}


def swe_call(call_id: str, name: str, **args) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


SWE_AGENT = {
    "environment": "swe_main",
    "info": {"exit_status": "submitted", "submission": "diff --git a/x b/x",
             "model_stats": {"instance_cost": 0.3}, "swe_agent_version": "1.1.0"},
    "replay_config": json.dumps({"env": {"repo": {"repo_name": "testbed"}},
                                 "agent": {"model": {"name": "claude-3-7-sonnet"}},
                                 "problem_statement": {"id": "example__calc-7"}}),
    "trajectory": [{"action": "...", "observation": "...", "response": "...", "thought": "",
                    "state": {}, "query": [], "execution_time": 0.1, "extra_info": {}}],
    "history": [
        {"role": "system", "content": "You are a helpful assistant.", "agent": "main",
         "message_type": "system_prompt"},
        {"role": "user", "content": "A demonstration.", "agent": "main", "is_demo": True,
         "message_type": "demonstration"},
        {"role": "user", "content": [{"type": "text", "text": "<uploaded_files>\n/testbed\n"
                                      "</uploaded_files> add is wrong"}],
         "agent": "main", "message_type": "observation"},
        {"role": "assistant", "content": "Let me view it.", "thought": "Let me view it.",
         "action": "str_replace_editor view /testbed/calculator/operations.py",
         "agent": "main", "message_type": "action", "tool_calls": [
             swe_call("c1", "str_replace_editor", command="view",
                      path="/testbed/calculator/operations.py", view_range=[1, 10])]},
        {"role": "tool", "content": [{"type": "text", "text": "OBSERVATION:\n     9\t    return "
                                      "a - b"}], "tool_call_ids": ["c1"], "agent": "main",
         "message_type": "observation"},
        {"role": "assistant", "content": "Fix it.", "thought": "Fix it.", "action": "...",
         "agent": "main", "message_type": "action", "tool_calls": [
             swe_call("c2", "str_replace_editor", command="str_replace",
                      path="/testbed/calculator/operations.py", old_str="a - b",
                      new_str="a + b", file_text=None)]},
        {"role": "tool", "content": "The file /testbed/calculator/operations.py has been "
                                    "edited.", "tool_call_ids": ["c2"], "agent": "main",
         "message_type": "observation"},
        {"role": "assistant", "content": "Submitting.", "thought": "Submitting.",
         "action": "submit", "agent": "main", "message_type": "action",
         "tool_calls": [swe_call("c3", "submit")]},
        {"role": "tool", "content": "Thank you for your work. Please review the diff...",
         "tool_call_ids": ["c3"], "agent": "main", "message_type": "observation"},
        {"role": "assistant", "content": "Run the tests first.", "thought": "Run the tests.",
         "action": "cd /testbed && pytest -q", "agent": "main", "message_type": "action",
         "tool_calls": [swe_call("c4", "bash", command="cd /testbed && pytest -q")]},
        {"role": "tool", "content": "4 passed", "tool_call_ids": ["c4"], "agent": "main",
         "message_type": "observation"},
        {"role": "assistant", "content": "All good.", "thought": "All good.", "action": "submit",
         "agent": "main", "message_type": "action", "tool_calls": [swe_call("c5", "submit")]},
        {"role": "tool", "content": "diff --git a/x b/x", "tool_call_ids": ["c5"],
         "agent": "main", "message_type": "observation"},
    ],
}

SWE_AGENT_TEXT = {
    "info": {"exit_status": "submitted"},
    "history": [
        {"role": "system", "content": "Use one command per reply.",
         "message_type": "system_prompt"},
        {"role": "user", "content": "Fix add in /testbed.", "message_type": "observation"},
        {"role": "assistant", "content": "DISCUSSION\nView it.\n\n```\nstr_replace_editor view "
                                         "/testbed/calculator/operations.py --view_range 1 5\n```",
         "thought": "DISCUSSION\nView it.", "message_type": "action",
         "action": "str_replace_editor view /testbed/calculator/operations.py "
                   "--view_range '1 5'"},
        {"role": "user", "content": "     1\tdef add(a, b):", "message_type": "observation"},
        {"role": "assistant", "content": "...", "thought": "Search.", "message_type": "action",
         "action": "grep -rn 'def add' /testbed"},
        {"role": "user", "content": "/testbed/calculator/operations.py:1:def add",
         "message_type": "observation"},
        {"role": "assistant", "content": "...", "thought": "Done.", "message_type": "action",
         "action": "submit"},
        {"role": "user", "content": "diff", "message_type": "observation"},
    ],
}


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def calls_of(messages: list[dict]) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], c["function"]["arguments"])
            for m in messages for c in m.get("tool_calls") or []]


def test_mini_swe_agent_v1_and_v2_become_rows_in_our_tool_protocol(tmp_path: Path,
                                                                   model_ready: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer

    folder = tmp_path / "mini"
    write_json(folder / "calc-1" / "calc-1.traj.json", MINI_V1)
    write_json(folder / "calc-2" / "calc-2.traj.json", MINI_V2)
    out = tmp_path / "mini.jsonl"
    proc = run_cli("trajectories", "import", "--format", "mini-swe-agent", str(folder),
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 2 sft rows" in proc.stdout
    rows = {r["task"]: r for r in load_dataset("json", data_files=str(out), split="train")}
    v1 = rows["calc-1"]
    assert v1["model"] == "anthropic/claude-sonnet-4" and v1["reward"] is None
    roles = [m["role"] for m in v1["messages"]]  # the format error and its feedback: dropped
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant",
                     "tool"]
    assert "I will fix it now" not in json.dumps(v1["messages"])
    assert "EXACTLY ONE action" not in json.dumps(v1["messages"])
    calls = calls_of(v1["messages"])
    assert calls[0] == ("bash", {"command": "cat /workspace/calculator/operations.py"})
    assert calls[1][0] == "bash" and "a + b" in calls[1][1]["command"]
    assert calls[2] == ("finish", {"summary": "THOUGHT: done, submit."})
    assert v1["messages"][2]["content"] == "THOUGHT: look at it."
    assert v1["messages"][-1]["content"] == "Finished: THOUGHT: done, submit."
    assert "/testbed" not in json.dumps(v1["messages"])
    v2 = rows["calc-2"]
    assert [m["role"] for m in v2["messages"]] == ["system", "user", "assistant", "tool", "tool",
                                                   "assistant", "tool"]
    assert v2["messages"][3]["tool_call_id"] == "toolu_1"
    assert v2["messages"][3]["content"].endswith("def add") and v2["messages"][3]["name"] == "bash"
    assert calls_of(v2["messages"])[-1][0] == "finish"
    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    names = [t["function"]["name"] for t in json.loads(v1["tools"])]
    assert names[0] == "bash" and "finish" in names
    for row in (v1, v2):
        text = tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]),
                                             tokenize=False)
        assert "Finished:" in text


def test_swe_agent_trajectories_become_rows_and_unmappable_ones_are_skipped(
        tmp_path: Path, model_ready: Path) -> None:
    from transformers import AutoTokenizer

    write_json(tmp_path / "runs" / "calc-7.traj", SWE_AGENT)
    write_json(tmp_path / "runs" / "calc-8.traj", SWE_AGENT_TEXT)
    legacy = {**SWE_AGENT_TEXT, "history": [*SWE_AGENT_TEXT["history"][:2], {
        "role": "assistant", "content": "...", "thought": "Look.", "action": "decompile foo",
        "message_type": "action"}]}
    write_json(tmp_path / "runs" / "calc-9.traj", legacy)
    write_json(tmp_path / "report.json", {"resolved_ids": ["example__calc-7"]})
    out = tmp_path / "swe.jsonl"
    proc = run_cli("trajectories", "import", "--format", "swe-agent", str(tmp_path / "runs"),
                   "--out", str(out), "--resolved", str(tmp_path / "report.json"),
                   "--include-failures")
    assert proc.returncode == 0, proc.stderr
    assert "calc-9.traj: skipped: SWE-agent command 'decompile' has no counterpart" \
        in proc.stderr
    rows = {r["task"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"example__calc-7", "calc-8"}
    fc = rows["example__calc-7"]
    assert fc["reward"] == 1 and fc["model"] == "claude-3-7-sonnet"
    assert fc["session_id"] == "swe-agent:example__calc-7"
    assert "demonstration" not in json.dumps(fc["messages"])
    assert [name for name, _ in calls_of(fc["messages"])] == ["view", "str_replace", "bash",
                                                              "finish"]
    view, replace, bash, finish = (args for _, args in calls_of(fc["messages"]))
    assert view == {"path": "/workspace/calculator/operations.py", "view_range": [1, 10]}
    assert replace == {"path": "/workspace/calculator/operations.py", "old_str": "a - b",
                       "new_str": "a + b"}
    assert bash == {"command": "cd /workspace && pytest -q"}
    assert finish == {"summary": "All good."}
    assert "Please review the diff" not in json.dumps(fc["messages"])
    assert fc["messages"][-1] == {"role": "tool", "name": "finish", "tool_call_id": "c5",
                                  "content": "Finished: All good."}
    text_mode = rows["calc-8"]
    assert text_mode["reward"] == 0
    assert calls_of(text_mode["messages"]) == [
        ("view", {"path": "/testbed/calculator/operations.py", "view_range": [1, 5]}),
        ("bash", {"command": "grep -rn 'def add' /testbed"}), ("finish", {"summary": "Done."})]
    assert text_mode["messages"][2]["content"] == "DISCUSSION\nView it."
    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    for row in rows.values():
        tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]),
                                      tokenize=False)
    proc = run_cli("trajectories", "import", "--format", "swe-agent", str(tmp_path / "runs"),
                   "--out", str(out), "--resolved", str(tmp_path / "report.json"))
    assert "wrote 1 sft rows" in proc.stdout


def test_import_of_a_missing_path_or_wrong_format_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("trajectories", "import", "--format", "openhands", str(tmp_path),
                   "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1 and "mini-swe-agent, swe-agent" in proc.stderr
    proc = run_cli("trajectories", "import", "--format", "swe-agent", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1 and "not found" in proc.stderr
    write_json(tmp_path / "mini.traj.json", MINI_V1)
    proc = run_cli("trajectories", "import", "--format", "swe-agent",
                   str(tmp_path / "mini.traj.json"), "--out", str(tmp_path / "o.jsonl"))
    assert "no `history` list (not a SWE-agent trajectory)" in proc.stderr
    assert "wrote 0 sft rows" in proc.stdout and proc.returncode == 1


# --- token ids ------------------------------------------------------------------------------


def test_token_id_deltas_rebuild_exactly_even_across_compaction_and_loss() -> None:
    compactor, expander = TokenIdsCompactor(), TokenIdsExpander()
    prompts = [[1, 2, 3], [1, 2, 3, 9, 9, 4, 5], [1, 2, 3, 9, 8, 4, 5, 6], [7, 7], [7, 7, 9, 9, 1]]
    records = [{"prompt_ids": p, "completion_ids": [9, 9], "completion_logprobs": [-0.5, -0.1],
                "model_path": "m"} for p in prompts]
    stored = [compactor.compact(r) for r in records]
    assert [s["prompt_shared"] for s in stored] == [0, 5, 4, 0, 4]
    assert all("prompt_ids" not in s for s in stored)
    assert [expander.expand(s) for s in stored] == records
    # a lost record breaks the chain until a record that shares nothing
    lossy = TokenIdsExpander()
    rebuilt = [lossy.expand(s) for s in (stored[0], stored[2], stored[3], stored[4])]
    assert rebuilt[0]["prompt_ids"] == prompts[0]
    assert rebuilt[1]["prompt_ids"] is None and "missing" in rebuilt[1]["prompt_ids_error"]
    assert rebuilt[2]["prompt_ids"] == prompts[3] and rebuilt[3]["prompt_ids"] == prompts[4]


def test_recorded_token_ids_rebuild_exact_prompts_and_grow_linearly(tmp_path: Path,
                                                                    model_ready: Path) -> None:
    from transformers import AutoTokenizer

    from agent.tool_protocol import render_chat_tokens

    tokenizer = AutoTokenizer.from_pretrained(model_ready)
    tools = [{"type": "function", "function": {"name": "bash", "description": "Run it.",
                                                "parameters": {"type": "object", "properties": {
                                                    "command": {"type": "string"}}}}}]
    path = tmp_path / "episode.jsonl"
    recorder = TrajectoryRecorder(path, durability="fsync")
    messages: list[dict] = [{"role": "system", "content": "You fix bugs."}]
    recorder(SessionStarted(session_id="s", software_version="0", task={}, model="local/x",
                            system_prompt="You fix bugs.", tools=tools, repo="/r",
                            base_commit="b", branch="agent/s"))
    expected: list[list[int]] = []
    for step in range(1, 31):
        content = f"Step {step}: please look at file_{step}.py and tell me what you see."
        recorder(UserMessage(session_id="s", step=step, content=content))
        messages.append({"role": "user", "content": content})
        prompt = render_chat_tokens(messages, tools, tokenizer)
        reply = f"I looked at file_{step}.py; it defines f{step}()."
        completion = tokenizer(reply, add_special_tokens=False)["input_ids"]
        expected.append(prompt)
        recorder(AssistantMessage(session_id="s", step=step, content=reply, token_ids={
            "prompt_ids": prompt, "completion_ids": completion,
            "completion_logprobs": [-0.25] * len(completion)}))
        messages.append({"role": "assistant", "content": reply})
        if step == 1:
            first_size = path.stat().st_size
    recorder.close()
    calls = rebuild_calls(read_trajectory(path).events)
    assert [c["token_ids"]["prompt_ids"] for c in calls] == expected
    assert calls[-1]["token_ids"]["completion_logprobs"][0] == -0.25
    whole = sum(len(json.dumps(p)) for p in expected)
    assert path.stat().st_size < whole / 4
    assert path.stat().st_size < 40 * first_size


# --- schema versions ------------------------------------------------------------------------


def test_a_file_from_a_future_schema_version_gives_a_clear_message(tmp_path: Path,
                                                                   apprentice_home: Path) -> None:
    header = SessionStarted(session_id="future-1", software_version="9.0", task={},
                            model="m", system_prompt="s", tools=[], repo="/r", base_commit="b",
                            branch="agent/future-1").model_dump(mode="json")
    header.update(schema_version=99, new_field={"x": 1})
    runs = apprentice_home / "runs" / "future-1"
    runs.mkdir(parents=True)
    path = runs / "future-1.jsonl"
    path.write_text(json.dumps(header) + "\n" + json.dumps(
        ToolResult(session_id="future-1", tool_call_id="c", name="bash", output="x")
        .model_dump(mode="json")) + "\n")
    with pytest.raises(UnsupportedSchemaError, match="schema version 99"):
        read_trajectory(path)
    proc = run_cli("trajectories", "show", str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "schema version 99" in proc.stderr
    assert f"reads versions 1 to {SCHEMA_VERSION}" in proc.stderr
    assert "upgrade apprentice" in proc.stderr
    proc = run_cli("trajectories", "reindex")
    assert proc.returncode == 0 and "indexed 0 episodes" in proc.stdout
    assert "schema version 99" in proc.stderr
    # files from the previous version still read
    path.write_text(json.dumps({**header, "schema_version": 1}) + "\n")
    assert read_trajectory(path).header.session_id == "future-1"



# Lines as the recorder wrote them while tool calls were dicts and usage three loose fields.
RECORDED_LINES = [
    r'{"session_id": "s1", "step": 2, "timestamp": 1700000000.5, "type": "assistant_message", "content": "Let me look.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "view", "arguments": "{\"path\": \"calculator/operations.py\"}"}}, {"id": "call_2", "type": "function", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}}], "prompt_tokens": 812, "completion_tokens": 31, "cost_usd": 0.00125, "latency_s": 0.4, "token_ids": null}',  # noqa: E501
    r'{"session_id": "s1", "step": 3, "timestamp": 1700000005.0, "type": "compaction", "reason": "threshold", "stage": "masked", "context": [{"keep": 0}], "removed": [], "masked": [], "summary": null, "summary_error": null, "tokens_before": 0, "tokens_after": 0, "window": 0, "prompt_tokens": 500, "completion_tokens": 60, "cost_usd": 0.001}',  # noqa: E501
    r'{"session_id": "s1", "step": 4, "timestamp": 1700000009.0, "type": "finished", "exit_status": "finished", "summary": "Fixed add.", "patch": "diff --git a/x b/x\n", "steps": 4, "prompt_tokens": 3300, "completion_tokens": 120, "cost_usd": 0.005}',  # noqa: E501
]


def test_typed_tool_calls_and_usage_keep_the_recorded_format(tmp_path: Path) -> None:
    reply, compaction, finished = events = [parse_event(line) for line in RECORDED_LINES]
    assert isinstance(reply, AssistantMessage) and isinstance(compaction, Compaction)
    assert isinstance(finished, Finished)
    assert [(c.id, c.name) for c in reply.tool_calls] == [("call_1", "view"), ("call_2", "bash")]
    assert json.loads(reply.tool_calls[0].arguments) == {"path": "calculator/operations.py"}
    assert (reply.usage + compaction.usage).tokens == 812 + 31 + 500 + 60
    assert finished.usage == Usage(steps=4, prompt_tokens=3300, completion_tokens=120,
                                   cost_usd=0.005)
    # the model is sent the calls in OpenAI's format, as recorded
    message = message_of(reply)
    assert message is not None
    assert message["tool_calls"] == json.loads(RECORDED_LINES[0])["tool_calls"]
    # and the recorder writes every line back byte for byte, under the same schema version
    recorder = TrajectoryRecorder(tmp_path / "again.jsonl")
    for event in events:
        recorder(event)
    recorder.close()
    assert (tmp_path / "again.jsonl").read_text().splitlines() == RECORDED_LINES
    assert SCHEMA_VERSION == 3
