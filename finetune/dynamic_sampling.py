"""DAPO's dynamic sampling, decided before a group is spent: a task whose recent rewards are all
0 or all 1 gives a group with no advantage to learn from, so it is redrawn.

A task's history is its last `window` rewards: seeded from an evaluation report of the starting
policy (`agent eval SUITE --split train --episodes 4 --save REPORT`, for instance), then
extended with the rewards of every group the run spends. A task with fewer than two known
rewards is informative (nothing says otherwise). When no informative task is left the drawn
task runs anyway, and that is counted too.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from finetune.suite import SuiteTask


def history_from_report(path: Path) -> dict[str, list[float]]:
    """Rewards per task from an `agent eval` report (episodes without a reward are left out)."""
    report = json.loads(Path(path).read_text())
    history: dict[str, list[float]] = {}
    for episode in report.get("episodes", []):
        if episode.get("reward") is not None:
            history.setdefault(episode["instance_id"], []).append(float(episode["reward"]))
    return history


@dataclass
class DynamicSampler:
    """Chooses the task a group is spent on and keeps the counts the run reports."""

    tasks: list[SuiteTask]
    history: dict[str, list[float]] = field(default_factory=dict)
    window: int = 4
    seed: int = 0
    redrawn: int = 0
    """Groups moved from an all-equal task to an informative one."""
    exhausted: int = 0
    """Groups spent on an all-equal task because no informative task was left."""
    spent: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def recent(self, task: SuiteTask) -> list[float]:
        return self.history.get(task.instance_id, [])[-self.window:]

    def informative(self, task: SuiteTask) -> bool:
        """False when the task's recent rewards (two or more) are all equal."""
        rewards = self.recent(task)
        return len(rewards) < 2 or len(set(rewards)) > 1

    def choose(self, drawn: SuiteTask) -> SuiteTask:
        """`drawn`, or an informative task in its place (the least spent, then at random)."""
        if self.informative(drawn):
            return drawn
        candidates = [t for t in self.tasks if self.informative(t)]
        if not candidates:
            self.exhausted += 1
            return drawn
        fewest = min(self.spent.get(t.instance_id, 0) for t in candidates)
        least = [t for t in candidates if self.spent.get(t.instance_id, 0) == fewest]
        self.redrawn += 1
        return self._rng.choice(least)

    def record(self, task: SuiteTask, rewards: list[float | None]) -> None:
        """Add a spent group's rewards (unscored episodes left out) to the task's history."""
        self.spent[task.instance_id] = self.spent.get(task.instance_id, 0) + 1
        self.history.setdefault(task.instance_id, []).extend(
            float(r) for r in rewards if r is not None)

    def counts(self) -> dict[str, int]:
        return {"groups_redrawn": self.redrawn, "groups_without_informative_task": self.exhausted}
