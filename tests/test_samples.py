"""Several attempts at one task and the patch picked by running them (`agent solve --samples`).

A scripted model gives each attempt its own script (`ScriptedConversationsServer`); Docker,
git, the tools, the recorder, the verifier and the selector's sandboxes are real."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.samples import SamplesConfig, SamplesResult, run_samples
from agent.scripted_model import ScriptedConversationsServer, tool_call
from agent.selection import VisibleTask
from agent.tasks import Task
from tests.test_solve import NEW, OLD, run_cli
from tools.sandbox import SandboxConfig
from trajectories.events import Selection, parse_event
from trajectories.reader import read_trajectory

OPS = "calculator/operations.py"
FINISH = {"tool_calls": [tool_call("finish", {"summary": "done"})]}
REPRO_TEST = ("from calculator import add\n\n\ndef test_add_from_the_issue():\n"
              "    assert add(2, 3) == 5\n")


def edit(old: str, new: str) -> dict:
    return {"tool_calls": [tool_call("str_replace", {"path": OPS, "old_str": old,
                                                      "new_str": new})]}


RIGHT = [edit(OLD, NEW),
         {"tool_calls": [tool_call("create", {"path": "tests/test_issue.py",
                                              "file_text": REPRO_TEST})]}, FINISH]
"""Fixes add and writes a reproduction test."""
EMPTY = [{"tool_calls": [tool_call("view", {"path": OPS})]}, FINISH]
BREAKS_MULTIPLY = [edit(OLD, NEW), edit("return a * b", "return a ** b"), FINISH]
RIGHT_WRITTEN_DIFFERENTLY = [
    edit(OLD, '"""Return the sum of a and b."""\n    return (a+b)  # it subtracted before'),
    FINISH]
RIGHT_OTHER_CHANGE = [edit(OLD, '"""Return the sum of a and b."""\n    return b + a'), FINISH]


def config(server: ScriptedConversationsServer, **episode) -> EpisodeConfig:
    return EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=server.url,
                                       api_key="none", retries=0, temperature=0.7),
                         sandbox=SandboxConfig(), max_steps=6, **episode)


def run(task: Task, scripts: list[list[dict]], **sampling) -> SamplesResult:
    sampling.setdefault("samples", len(scripts))
    with ScriptedConversationsServer(scripts) as server:
        return run_samples(task, config(server), SamplesConfig(**sampling))


def by_patch(group: SamplesResult) -> dict[str, dict]:
    """The candidate rows keyed by what their patch does to add / multiply."""
    rows = {}
    for row in group.candidates():
        patch = row["patch"]
        key = ("empty" if "operations.py" not in patch else "breaks" if "a ** b" in patch
               else "different" if "(a+b)" in patch else "other" if "b + a" in patch
               else "right")
        rows[key] = row
    return rows


@pytest.mark.usefixtures("docker_ready")
def test_the_right_patch_is_selected_and_the_vote_merges_the_two_right_ones(example) -> None:
    repo, issue = example
    group = run(Task.from_issue_file(issue, repo),
                [RIGHT, EMPTY, BREAKS_MULTIPLY, RIGHT_WRITTEN_DIFFERENTLY], workers=2)
    rows = by_patch(group)
    assert set(rows) == {"right", "empty", "breaks", "different"}
    right, empty, breaks, different = (rows[k] for k in ("right", "empty", "breaks", "different"))
    assert group.selection.selected in (right["attempt"], different["attempt"])
    assert group.selected and group.selected.result and group.selected.result.reward == 1
    # what each signal said
    assert right["signals"]["kept"] == different["signals"]["kept"] == 2
    assert empty["signals"]["kept"] == 0 and empty["signals"]["details"]["empty"]
    assert breaks["signals"]["kept"] == 1
    assert breaks["signals"]["details"]["broken"] == ["tests/test_operations.py::test_multiply"]
    assert right["signals"]["visible_tests"] == different["signals"]["visible_tests"] == 4
    assert breaks["signals"]["visible_tests"] == 3
    # the reproduction test the right attempt wrote fails at the base commit, and is run on
    # every candidate that changes code
    assert right["signals"]["details"]["wrote_tests"] == ["tests/test_issue.py"]
    for row in (right, different, breaks):
        assert row["signals"]["reproduction_tests"] == 1
        assert row["signals"]["details"]["reproduction"] == "1/1"
    # the two right ones are the same change in normal form: one vote of two
    assert right["signals"]["details"]["change_id"] == different["signals"]["details"]["change_id"]
    assert right["signals"]["vote"] == different["signals"]["vote"] == 2
    assert breaks["signals"]["vote"] == 1 and empty["signals"]["vote"] == 0
    assert [r["reward"] for r in (right, empty, breaks, different)] == [1, 0, 0, 1]
    # all four recorded, linked by the group id, and the selection recorded with them
    headers = [read_trajectory(Path(r["trajectory_path"])).header for r in group.candidates()]
    assert all(h is not None for h in headers)
    assert sorted(h.group["attempt"] for h in headers if h) == [0, 1, 2, 3]
    assert {h.group["id"] for h in headers if h} == {group.group_id}
    assert {h.group["samples"] for h in headers if h} == {4}
    assert all(h.model_params["temperature"] == 0.7 for h in headers if h)
    lines = group.selection_path.read_text().splitlines()
    event = parse_event(lines[0])
    assert len(lines) == 1 and isinstance(event, Selection)
    assert event.session_id == group.group_id and event.selected == group.selection.selected
    assert event.signals == ["kept", "visible_tests", "reproduction_tests", "vote"]
    assert sorted(c["session_id"] for c in event.candidates) == sorted(
        h.session_id for h in headers if h)


@pytest.mark.usefixtures("docker_ready")
def test_the_selector_never_reads_the_hidden_tests(example) -> None:
    """The hidden tests (test_patch, FAIL_TO_PASS) say `add` must subtract, the visible ones
    that it must add: the selector follows the visible tests, while the reward follows the
    hidden ones, so the attempt picked is the one whose reward is 0."""
    repo, issue = example
    tests = repo / "tests/test_operations.py"
    visible = tests.read_text()
    tests.write_text(visible.replace("add(2, 3) == 5", "add(2, 3) == -1")
                     .replace("add(-1, 1) == 0", "add(-1, 1) == -2"))
    test_patch = subprocess.run(["git", "-C", str(repo), "diff"], capture_output=True,
                                text=True, check=True).stdout
    tests.write_text(visible)
    assert "+    assert add(2, 3) == -1" in test_patch
    task = Task.from_issue_file(issue, repo).model_copy(update={
        "test_patch": test_patch, "FAIL_TO_PASS": ["tests/test_operations.py::test_add"],
        "PASS_TO_PASS": ["tests/test_operations.py::test_subtract"]})
    assert set(VisibleTask.__dataclass_fields__) == {
        "repo", "base_commit", "problem_statement", "test_command", "sandbox"}
    group = run(task, [RIGHT, EMPTY], workers=2)
    rows = by_patch(group)
    assert rows["right"]["reward"] == 0 and rows["empty"]["reward"] == 1  # the hidden verdict
    assert group.selection.selected == rows["right"]["attempt"]  # the visible one
    commands = " ".join(group.selection.commands)
    assert "::test_add" not in commands and "test_subtract" not in commands
    assert "python3 -m pytest -q" in commands


@pytest.mark.usefixtures("docker_ready")
def test_a_crashed_or_timed_out_attempt_is_a_candidate_that_lost(example) -> None:
    repo, issue = example
    sleeper = [{"tool_calls": [tool_call("bash", {"command": "sleep 300"})]}, FINISH]
    group = run(Task.from_issue_file(issue, repo), [RIGHT, [{"status": 500}], sleeper],
                workers=3, attempt_timeout_s=30)
    lost = sorted(a.lost or "" for a in group.attempts)
    assert lost[0] == "" and lost[1].startswith("the episode ended with an error")
    assert lost[2] == "timed out: still running after 30 s"
    chosen = group.selected
    assert chosen and chosen.lost is None and chosen.result and chosen.result.reward == 1
    assert sorted(r["rank"] for r in group.candidates() if r["lost"]) == [2, 3]


@pytest.mark.usefixtures("docker_ready")
def test_enough_agreeing_attempts_stop_the_rest(example) -> None:
    repo, issue = example
    group = run(Task.from_issue_file(issue, repo), [RIGHT] * 4, workers=2, stop_when_agree=2)
    assert group.stopped_early and 2 <= len(group.attempts) < 4
    agreeing = [a for a in group.attempts if a.lost is None]
    assert len(agreeing) >= 2
    assert all(a.lost == "stopped: enough attempts agreed" for a in group.attempts
               if a not in agreeing)
    assert group.selected in agreeing


@pytest.mark.usefixtures("docker_ready")
def test_the_judge_breaks_a_tie_between_different_changes(example) -> None:
    repo, issue = example
    task = Task.from_issue_file(issue, repo)
    with ScriptedConversationsServer([RIGHT_WRITTEN_DIFFERENTLY, RIGHT_OTHER_CHANGE,
                                      [{"content": "Candidate 2 is better."}]]) as server:
        group = run_samples(task, config(server), SamplesConfig(samples=2, judge=True))
        judge_request = server.requests_by_script[2][0]
    rows = by_patch(group)
    first, second = sorted([rows["different"], rows["other"]], key=lambda r: r["attempt"])
    # tied on every other signal: without the judge the earliest attempt would win
    assert first["signals"]["vote"] == second["signals"]["vote"] == 1
    assert group.selection.pick(["kept", "visible_tests", "reproduction_tests", "vote"]) == \
        first["attempt"]
    assert group.selection.selected == second["attempt"] and second["signals"]["judge"] == 1
    assert "Candidate 2:" in judge_request["messages"][1]["content"]
    assert "tools" not in judge_request
    assert any("judge picked" in n for n in group.selection.notes)


@pytest.mark.usefixtures("docker_ready")
def test_solve_samples_on_the_command_line(example) -> None:
    repo, issue = example
    with ScriptedConversationsServer([RIGHT, EMPTY]) as server:
        proc = run_cli("solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
                       "--api-base", server.url, "--samples", "2", "--output-format",
                       "stream-json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    result = lines[-1]
    assert result["type"] == "result" and lines[-2]["type"] == "selection"
    headers = [line for line in lines if line["type"] == "session_started"]
    assert sorted(line["attempt"] for line in headers) == [0, 1]
    assert all(line["attempt"] == line["group"]["attempt"] for line in headers)
    assert result["reward"] == 1 and "+    return a + b" in result["patch"]
    assert result["samples"] == result["ran"] == 2
    assert result["selected"] in (0, 1) and len(result["candidates"]) == 2
    chosen = result["candidates"][result["selected"]]
    assert chosen["trajectory_path"] == result["trajectory_path"]
    assert chosen["reward"] == 1 and chosen["signals"]["kept"] == 2
    assert {"trajectory_path", "patch", "signals", "reward"} <= set(chosen)
    assert "step 1: model ->" not in proc.stderr  # progress is for the text format only


@pytest.mark.parametrize(("flags", "message"), [
    (["--samples", "0"], "--samples must be at least 1, not 0"),
    (["--samples", "20"], "--samples 20 is more than --max-samples 16"),
    (["--samples", "3", "--stop-when-agree", "4"], "--stop-when-agree must be between 2"),
])
def test_a_bad_number_of_samples_is_a_clear_error(example, flags, message) -> None:
    repo, issue = example
    proc = run_cli("solve", str(issue), "--repo", str(repo), *flags)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr


@pytest.mark.usefixtures("docker_ready")
def test_when_every_attempt_is_lost_solve_says_why(example) -> None:
    repo, issue = example
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--model", "openai/scripted",
                   "--api-base", "http://127.0.0.1:9/v1", "--samples", "2", "--timeout", "5")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("agent: error: every attempt was lost: attempt 0: the episode "
                           "ended with an error")
    assert "(no attempt selected)" in proc.stdout and "ran: 2 of 2 attempts" in proc.stdout


@pytest.mark.usefixtures("docker_ready")
def test_eval_with_samples_reports_single_selected_and_pass_at_n(tmp_path: Path) -> None:
    from finetune.curriculum import generate_curriculum
    from finetune.evaluate import EvalOptions, evaluate
    from finetune.suite import load_suite

    suite = load_suite(generate_curriculum(tmp_path / "suite", train=1, test=1, seed=3))
    task = suite.split("test")[0]
    knows_the_fix = [{"tool_calls": [tool_call(s["name"], s["arguments"])]}
                     for s in task.oracle or []]
    gives_up = [{"tool_calls": [tool_call("finish", {"summary": "cannot tell"})]}]
    with ScriptedConversationsServer([knows_the_fix, gives_up]) as server:
        report = evaluate(suite, EvalOptions(model="openai/scripted", api_base=server.url,
                                             samples=2, workers=2,
                                             output_dir=tmp_path / "eval"))
    summary = report.summary
    assert summary["single_pass@1"] == 0.5 and summary["pass@1"] == 0.5
    assert summary["selected_pass@1"] == 1.0 and summary["pass@n"] == 1.0
    assert summary["selectors"] == {"tests": 1.0, "tests+vote": 1.0}
    assert summary["per_task"][task.instance_id]["selected"] == 1
    assert report.episodes_per_task == 2 and len(report.episodes) == 2
    [group] = report.groups
    assert sorted(group.rewards) == [0, 1] and group.selected_reward == 1
    assert group.selection_path and Path(group.selection_path).is_file()


def test_eval_takes_samples_or_episodes_not_both(tmp_path: Path) -> None:
    proc = run_cli("eval", str(tmp_path), "--samples", "2", "--episodes", "2")
    assert proc.returncode == 2 and "not both" in proc.stderr
