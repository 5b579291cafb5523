"""Warm-start data: the oracle solves the train split through the real agent loop, and its
verified trajectories become SFT rows (as published recipes do for models this small)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.episode import EpisodeConfig
from agent.episode_config import ContextConfig
from finetune.evaluate import EpisodeOutcome, EvalOptions, EvalReport, evaluate
from finetune.oracle import ORACLE_MODEL
from finetune.sft_data import rows_from_trajectories, write_rows
from finetune.suite import Suite
from tools.sandbox import SandboxConfig

SFT_FILE = "sft.jsonl"


def oracle_trajectories(suite: Suite, out_dir: Path, split: str = "train", workers: int = 4,
                        limit: int | None = None, sandbox: SandboxConfig | None = None,
                        on_episode: Any = None, tools: str | None = None,
                        repo_map_tokens: int | None = None,
                        ) -> tuple[EvalReport, list[dict[str, Any]]]:
    """Run the oracle on every task of `split`; write `out_dir/sft.jsonl` with the verified
    conversations. Returns the evaluation report (every episode) and the rows. `tools`: those
    of the model to train (default `ORACLE_TOOL_SET`, a small local model's); `repo_map_tokens`:
    the repository map of the prompts trained on (default: the agent's)."""
    out_dir = Path(out_dir)
    context = ContextConfig() if repo_map_tokens is None else ContextConfig(
        repo_map_tokens=repo_map_tokens)
    episode = EpisodeConfig(max_steps=8, sandbox=sandbox or SandboxConfig(), tools=tools,
                            context=context)
    options = EvalOptions(model=ORACLE_MODEL, split=split, workers=workers, limit=limit,
                          output_dir=out_dir / "episodes", episode=episode)
    report = evaluate(suite, options, on_episode=on_episode)
    passed: list[EpisodeOutcome] = [e for e in report.episodes
                                    if e.reward == 1 and e.trajectory_path]
    rows = rows_from_trajectories(Path(e.trajectory_path or "") for e in passed)
    write_rows(rows, out_dir / SFT_FILE)
    return report, rows
