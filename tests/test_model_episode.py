"""The real embedded model (SmolLM2-135M, CPU) runs a short `agent solve` episode end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trajectories.reader import read_trajectory

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("docker_ready", "model_ready")]


def test_smollm2_runs_a_short_episode_with_an_honest_verdict(example) -> None:
    repo, issue = example
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "solve", str(issue), "--repo", str(repo),
         "--max-steps", "2", "--max-tokens", "48", "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == "local/apprentice-135m"
    assert result["reward"] in (0, 1) and result["test_output"]
    assert result["exit_status"] in ("finished", "max_steps", "no_tool_call")
    assert 1 <= result["steps"] <= 2 and result["completion_tokens"] > 0
    trajectory = read_trajectory(Path(result["trajectory_path"]))
    replies = [e for e in trajectory.events if e.type == "assistant_message"]
    assert replies and all(r.token_ids and r.token_ids["completion_ids"] for r in replies)
    assert trajectory.events[-1].type == "verified"
    # The reward is the tests' verdict on the patch, not the model's claim.
    assert result["reward"] == (1 if "failed" not in result["test_output"] else 0)
