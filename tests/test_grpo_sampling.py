"""Dynamic sampling for GRPO: all-equal tasks are redrawn before a group is spent."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.dynamic_sampling import DynamicSampler, history_from_report
from finetune.suite import SuiteTask


def _task(name: str) -> SuiteTask:
    return SuiteTask(instance_id=name, problem_statement=f"fix {name}", base_commit="abcd",
                     repo_path="repos/x.bundle")


def test_an_all_equal_task_is_redrawn_and_history_grows() -> None:
    solved, failed, mixed, fresh = (_task(n) for n in ("solved", "failed", "mixed", "fresh"))
    sampler = DynamicSampler([solved, failed, mixed, fresh], history={
        "solved": [1, 1, 1, 1], "failed": [0, 0, 0, 0], "mixed": [1, 0, 0, 0]}, seed=1)
    assert not sampler.informative(solved) and not sampler.informative(failed)
    assert sampler.informative(mixed) and sampler.informative(fresh)
    assert sampler.choose(mixed) is mixed
    first = sampler.choose(solved)
    assert first in (mixed, fresh) and sampler.redrawn == 1
    sampler.record(first, [1.0, 0.0, None, 1.0])
    assert sampler.choose(failed) not in (solved, failed, first)  # the least spent goes next
    sampler.record(mixed, [0.0, 0.0, 0.0, 0.0])  # now [.., 0, 0, 0, 0]: all equal
    sampler.record(fresh, [1.0, 1.0])
    assert sampler.choose(failed) is failed and sampler.exhausted == 1
    assert sampler.counts() == {"groups_redrawn": 2, "groups_without_informative_task": 1}


def test_history_from_an_eval_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"episodes": [
        {"instance_id": "a", "reward": 1}, {"instance_id": "a", "reward": 0},
        {"instance_id": "b", "reward": None}, {"instance_id": "b", "reward": 0}]}))
    assert history_from_report(report) == {"a": [1.0, 0.0], "b": [0.0]}
