"""Interop with other agents' real files (tests/data/interop, sources in its README): importing
mini-swe-agent and SWE-agent trajectories, training on unverified rows, replaying with the
recorded tool set, and SWE-bench instance files with a duplicated id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.solve import solve
from agent.tasks import Task, TaskError, load_swebench_instance
from finetune.sft_data import DataError, load_rows
from tests.test_solve import FIX_SCRIPT, run_cli

DATA = Path(__file__).parent / "data" / "interop"
MINI = DATA / "mini-swe-agent"
SWE = DATA / "swe-agent"
OUR_PROMPT = "You are apprentice, a careful software engineer"


def import_rows_cli(fmt: str, *paths: Path, out: Path, extra: tuple[str, ...] = ()
                    ) -> tuple[dict[str, dict], str]:
    proc = run_cli("trajectories", "import", "--format", fmt, *map(str, paths), "--out",
                   str(out), *extra)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {r["session_id"].split(":", 1)[1] + "|" + r["task"]: r for r in rows}, proc.stdout


def calls(row: dict) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], c["function"]["arguments"])
            for m in row["messages"] for c in m.get("tool_calls") or []]


def tool_names(row: dict) -> list[str]:
    return [t["function"]["name"] for t in json.loads(row["tools"])]


def by_task(rows: dict[str, dict]) -> dict[str, dict]:
    return {r["task"]: r for r in rows.values()}


# --- mini-swe-agent ---------------------------------------------------------------------------


def test_mini_swe_agent_files_in_every_action_format_import_as_tool_calls(tmp_path: Path) -> None:
    rows, stdout = import_rows_cli("mini-swe-agent", MINI, out=tmp_path / "mini.jsonl")
    assert "wrote 6 sft rows" in stdout and "(0 skipped)" in stdout
    rows = by_task(rows)
    v1 = rows["github_issue_v1"]  # a bare message list acting in ```bash blocks
    assert [name for name, _ in calls(v1)] == ["bash"] * 9 + ["finish"]
    assert calls(v1)[0] == ("bash", {"command": "cat /Users/fuchur/Documents/24/git_sync/"
                                                "swe-agent-test-repo/tests/./missing_colon.py"})
    assert all(m.get("tool_calls") for m in v1["messages"] if m["role"] == "assistant")
    # ```mswea_bash_command, <mswea_bash_command> and <bash_code>: the same episode
    same = [calls(rows[name]) for name in ("github_issue_v2", "github_issue_xml",
                                           "github_issue_bash_code")]
    assert same[0] == same[1] == same[2] and len(same[0]) == 10
    assert calls(rows["local"]) == [("bash", {"command": "echo 'hello world'"}),
                                    ("finish", {"summary": "OK, now let me end this run."})]
    for row in rows.values():  # our system prompt for the tools the calls use, not theirs
        assert row["messages"][0]["role"] == "system"
        assert row["messages"][0]["content"].startswith(OUR_PROMPT)
        assert "mswea_bash_command" not in row["messages"][0]["content"]
        assert tool_names(row) == ["bash", "finish"]


def test_a_format_error_and_its_feedback_are_not_trained_on(tmp_path: Path) -> None:
    source = json.loads((MINI / "pvlib__pvlib-python-1606.trimmed.traj.json").read_text())
    feedback = [m for m in source["messages"]
                if (m.get("extra") or {}).get("interrupt_type") == "FormatError"]
    assert len(feedback) == 1
    rows, _ = import_rows_cli("mini-swe-agent", MINI / "pvlib__pvlib-python-1606.trimmed."
                              "traj.json", out=tmp_path / "o.jsonl")
    (row,) = rows.values()
    text = json.dumps(row["messages"])
    assert "Tool call error" not in text and "Unterminated string" not in text
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user"] + ["assistant", "tool"] * 6
    assert calls(row)[-1][0] == "finish"
    assert row["model"] == "deepseek/deepseek-chat" and "/testbed" not in text


# --- SWE-agent ------------------------------------------------------------------------------


def test_swe_agent_0x_commands_become_our_tools(tmp_path: Path) -> None:
    rows, stdout = import_rows_cli("swe-agent", SWE, out=tmp_path / "swe.jsonl")
    assert "wrote 5 sft rows" in stdout and "(0 skipped)" in stdout
    rows = by_task(rows)
    marsh = rows["marshmallow-code__marshmallow-1867"]  # thought/action mode
    assert [name for name, _ in calls(marsh)] == [
        "bash", "view", "bash", "create", "create", "bash", "bash", "bash", "view",
        "str_replace", "str_replace", "bash", "bash", "finish"]
    found = dict(enumerate(args for _, args in calls(marsh)))
    assert found[1] == {"path": "setup.py", "view_range": [1, 94]}  # `open setup.py`
    assert found[3] == {"path": "reproduce.py", "file_text": ""}  # `create reproduce.py`
    assert found[4]["path"] == "/workspace/reproduce.py"  # `edit 1:1` of the empty file
    assert found[4]["file_text"].startswith("from marshmallow.fields import TimeDelta\n")
    assert found[7] == {"command": "find src -type f -name fields.py"}  # `find_file`
    assert found[8] == {"path": "src/marshmallow/fields.py", "view_range": [1459, 1558]}
    old = "        return int(value.total_seconds() / base_unit.total_seconds())"
    assert found[10] == {"path": "/workspace/src/marshmallow/fields.py", "old_str": old,
                         "new_str": "        return int(round(value.total_seconds() / "
                                    "base_unit.total_seconds()))  # round to nearest int"}
    assert tool_names(marsh) == ["bash", "view", "create", "str_replace", "finish"]
    assert marsh["messages"][0]["content"].startswith(OUR_PROMPT)
    assert "marshmallow-code/marshmallow" in marsh["messages"][0]["content"]
    assert "/marshmallow-code__marshmallow/" not in json.dumps(marsh["messages"])
    fixed = rows["humanevalfix-python-0"]  # `edit 15:15` -> the line as last shown
    assert ("str_replace", {"path": "/workspace/main.py",
                            "old_str": "                distance = elem - elem2",
                            "new_str": "                distance = abs(elem - elem2)"}
            ) in calls(fixed)
    fc = rows["SWE-agent__test-repo-i1"]  # function calling: find_file, open, edit
    assert [name for name, _ in calls(fc)] == ["bash", "view", "str_replace", "bash"]
    assert calls(fc)[2][1]["path"] == "/workspace/tests/missing_colon.py"
    flag = rows["networking_1"]  # `submit 'flag{...}'` ends the episode with its value
    assert calls(flag)[-1][0] == "finish"
    assert "flag{d316759c281bf925d600be698a4973d5}" in calls(flag)[-1][1]["summary"]
    assert not any(args.get("command", "").startswith("submit") for _, args in calls(flag))


def test_a_command_with_no_counterpart_skips_the_file_with_the_reason(tmp_path: Path) -> None:
    data = json.loads((SWE / "humanevalfix-python-0.traj").read_text())
    step = next(i for i, h in enumerate(data["history"]) if h["role"] == "assistant")
    data["history"][step]["action"] = "set_cursors 1 5\n"
    (tmp_path / "cursors.traj").write_text(json.dumps(data))
    shutil.copy(SWE / "networking_1.traj", tmp_path)
    proc = run_cli("trajectories", "import", "--format", "swe-agent", str(tmp_path), "--out",
                   str(tmp_path / "o.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "cursors.traj: skipped: SWE-agent command 'set_cursors' has no counterpart" \
        in proc.stderr
    assert "wrote 1 sft rows" in proc.stdout and "(1 skipped)" in proc.stdout


def test_import_fails_when_nothing_is_imported(tmp_path: Path) -> None:
    proc = run_cli("trajectories", "import", "--format", "swe-agent", str(MINI), "--out",
                   str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1
    assert "nothing was imported: every trajectory was skipped" in proc.stderr
    assert "(6 skipped)" in proc.stdout
    (tmp_path / "empty").mkdir()
    proc = run_cli("trajectories", "import", "--format", "swe-agent", str(tmp_path / "empty"),
                   "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1 and "no *.traj or *.traj.json files" in proc.stderr


def test_resolved_counts_the_unresolved_rows_it_drops(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"resolved_ids": ["humanevalfix-python-0"]}))
    rows, stdout = import_rows_cli("swe-agent", SWE, out=tmp_path / "o.jsonl",
                                   extra=("--resolved", str(report)))
    assert [r["task"] for r in rows.values()] == ["humanevalfix-python-0"]
    assert "wrote 1 sft rows" in stdout and "(4 skipped)" in stdout


# --- training on imported rows --------------------------------------------------------------


def test_unverified_rows_train_only_when_asked(tmp_path: Path) -> None:
    data = tmp_path / "imported.jsonl"
    import_rows_cli("mini-swe-agent", MINI, out=data)
    with pytest.raises(DataError, match="--include-unverified"):
        load_rows(data)
    rows = load_rows(data, include_unverified=True)
    assert len(rows) == 6 and {r["reward"] for r in rows} == {None}
    proc = run_cli("finetune", "sft", "--data", str(data), "--output", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert "6 unverified rows" in proc.stderr and "--include-unverified" in proc.stderr


def test_sft_trains_on_imported_rows_with_include_unverified(tmp_path: Path,
                                                             model_ready: Path) -> None:
    data = tmp_path / "imported.jsonl"
    import_rows_cli("mini-swe-agent", MINI / "local.traj.json", out=data)
    proc = run_cli("finetune", "sft", "--data", str(data), "--output", str(tmp_path / "run"),
                   "--include-unverified", "--max-steps", "1", "--lora-layers", "1",
                   "--max-length", "2048")
    assert proc.returncode == 0, proc.stderr
    assert "training on 1 conversations" in proc.stderr


# --- replay and instances -------------------------------------------------------------------


@pytest.mark.usefixtures("docker_ready")
def test_replay_rebuilds_the_recorded_tool_set(example, scripted) -> None:
    repo, issue = example
    scripted.script = list(FIX_SCRIPT)
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url,
                                         backoff_s=0.01), max_steps=8, tools="core")
    result = solve(Task.from_issue_file(issue, repo), options)
    proc = run_cli("replay", result.session_id, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["notes"] == [] and report["reproduced"]


def test_a_duplicated_instance_id_says_so(tmp_path: Path) -> None:
    instance = {"instance_id": "calc-1", "base_commit": "0" * 40, "problem_statement": "x"}
    path = tmp_path / "instances.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in (
        instance, {**instance, "instance_id": "calc-2"}, instance)) + "\n")
    with pytest.raises(TaskError, match="2 instances share id 'calc-1'"):
        load_swebench_instance(path, "calc-1")
    assert load_swebench_instance(path, "calc-2")["instance_id"] == "calc-2"
