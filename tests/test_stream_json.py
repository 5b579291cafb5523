"""`agent solve --output-format stream-json`: the event stream as JSON lines while the episode
runs, read from a real subprocess; the scripted model stands in for the LLM, Docker is real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.stream_json import STREAM_VERSION
from tests.test_solve import FIX_SCRIPT, run_cli
from trajectories.reader import read_trajectory

pytestmark = pytest.mark.usefixtures("docker_ready")


def solve_command(example, scripted, *flags: str) -> list[str]:
    repo, issue = example
    return [sys.executable, "-m", "agent.cli", "solve", str(issue), "--repo", str(repo),
            "--model", "openai/scripted", "--api-base", scripted.url, *flags]


def test_stream_json_prints_each_event_as_it_happens_and_the_result_last(example,
                                                                        scripted) -> None:
    scripted.script = list(FIX_SCRIPT)
    proc = subprocess.Popen(solve_command(example, scripted, "--output-format", "stream-json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    lines: list[dict] = []
    running_at_tool_call = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:  # read line by line while the episode runs
            line = json.loads(raw)
            lines.append(line)
            if line["type"] == "tool_call_started" and running_at_tool_call is None:
                running_at_tool_call = proc.poll() is None
        stderr = proc.stderr.read() if proc.stderr else ""
        assert proc.wait(timeout=300) == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
    assert running_at_tool_call is True  # the first call was on stdout before the run ended
    assert "step 1:" not in stderr  # no progress on stderr outside text mode
    assert all(list(line)[:2] == ["v", "type"] and line["v"] == STREAM_VERSION
               for line in lines)
    types = [line["type"] for line in lines]
    assert types[0] == "session_started" and types[-1] == "result"
    assert types[-3:-1] == ["finished", "verified"]
    assert {"model_call_started", "assistant_message", "tool_call_started", "tool_result",
            "checkpoint", "user_message"} <= set(types)
    assert "assistant_delta" not in types  # only with --deltas
    result = lines[-1]
    assert result["reward"] == 1 and result["exit_status"] == "finished"
    assert result["steps"] == 4 and "+    return a + b" in result["patch"]
    # Each event's line is the event as the trajectory records it, plus `v`.
    recorded = [e.model_dump(mode="json") for e in
                read_trajectory(Path(result["trajectory_path"])).events]
    streamed = [{k: v for k, v in line.items() if k != "v"} for line in lines[:-1]]
    assert streamed == [{k: v for k, v in e.items() if k != "token_ids"} for e in recorded]


def test_stream_json_with_deltas_and_a_failure_still_ends_with_a_result(example,
                                                                      scripted) -> None:
    scripted.script = [{"content": "Looking around first.",
                        "tool_calls": FIX_SCRIPT[0]["tool_calls"]}, {"status": 500}] + \
        [{"status": 500}] * 5
    proc = run_cli(*solve_command(example, scripted, "--output-format", "stream-json",
                                  "--deltas")[3:])
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(raw) for raw in proc.stdout.splitlines()]
    deltas = "".join(line["text"] for line in lines if line["type"] == "assistant_delta")
    assert deltas == "Looking around first."
    assert lines[-1]["type"] == "result" and lines[-1]["exit_status"] == "error"
    assert "failed after" in lines[-1]["error"]


def test_output_format_is_checked_and_json_is_its_alias(example, scripted) -> None:
    proc = run_cli(*solve_command(example, scripted, "--output-format", "yaml")[3:])
    assert proc.returncode == 2 and "--output-format must be text, json or stream-json" \
        in proc.stderr
    proc = run_cli(*solve_command(example, scripted, "--json", "--output-format",
                                  "stream-json")[3:])
    assert proc.returncode == 2 and "--json means --output-format json" in proc.stderr
