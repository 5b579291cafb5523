"""`bench/bench_resample.py`: the selector run again on the first k attempts of a recorded
`--samples N` evaluation (scripted model; real Docker, git, verifier and selector)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.scripted_model import ScriptedConversationsServer, tool_call

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.usefixtures("docker_ready")
def test_best_of_k_from_a_recorded_run_reselects_from_its_first_attempts(tmp_path: Path) -> None:
    from finetune.curriculum import generate_curriculum
    from finetune.evaluate import EvalOptions, evaluate
    from finetune.suite import load_suite

    suite_dir = generate_curriculum(tmp_path / "suite", train=1, test=1, seed=3)
    suite = load_suite(suite_dir)
    task = suite.split("test")[0]
    fixes = [{"tool_calls": [tool_call(s["name"], s["arguments"])]} for s in task.oracle or []]
    gives_up = [{"tool_calls": [tool_call("finish", {"summary": "cannot tell"})]}]
    with ScriptedConversationsServer([fixes, gives_up, gives_up]) as server:
        report = evaluate(suite, EvalOptions(model="openai/scripted", api_base=server.url,
                                             samples=3, workers=2,
                                             output_dir=tmp_path / "eval"))
    [group] = report.groups
    assert sorted(group.rewards) == [0, 0, 1]

    def resample(take: int, source: tuple[str, Path] | None = None) -> dict:
        out = tmp_path / f"k{take}.json"
        flag, path = source or ("--report", Path(report.output_dir) / "report.json")
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "bench_resample.py"), "--suite",
             str(suite_dir), flag, str(path), "--take", str(take), "--out", str(out)],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(out.read_text())

    everything = resample(3)
    assert everything["per_task"][task.instance_id]["rewards"] == group.rewards
    assert everything["selected_pass@1"] == 1.0 and everything["pass@n"] == 1.0
    assert everything["gap_closed"] == 1.0
    first = resample(1)
    [only] = first["per_task"].values()
    assert only["rewards"] == group.rewards[:1]
    assert first["selected_pass@1"] == first["pass@n"] == group.rewards[0]

    # A run cut off before its report: the same groups, rewards read from the trajectories.
    (Path(report.output_dir) / "report.json").rename(tmp_path / "report.json")
    folder = resample(3, ("--groups", Path(report.output_dir)))
    assert folder["per_task"][task.instance_id]["rewards"] == group.rewards
    assert folder["selected_pass@1"] == everything["selected_pass@1"]
    assert 0 < folder["mean_recorded_task_s"] <= everything["mean_recorded_task_s"] + 1
    assert everything["mean_recorded_task_s"] == round(group.duration_s, 1)
