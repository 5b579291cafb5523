"""Online RL with a verifiable reward: TRL's GRPOTrainer, one whole agent episode per completion.

For every task of the split, GRPO samples G episodes (`finetune.rollout.EpisodeRollout`, TRL's
`rollout_func`), each in its own sandbox, scores them with the sandbox's tests (`verify_reward`)
and, as a separate logged reward, with the share of well-formed tool calls (`format_reward`,
weight `format_reward_weight`; 0 logs it without shaping). Tool outputs are masked out of the
loss by the rollout's `env_mask`. Groups whose rewards are all equal carry no signal; they are
counted and reported, and with dynamic sampling (the default, `finetune.dynamic_sampling`) a
task known to give one is redrawn before its group is spent.

CPU settings (the defaults): float32, no gradient checkpointing, one episode per micro-batch,
G micro-batches per optimizer step. On GPUs: `--bf16`, and launch with accelerate (DeepSpeed
ZeRO configs ship with TRL: `trl/accelerate_configs/`); with `--rollout-server URL` a vLLM server
(`trl vllm-serve`) generates the episodes, and TRL pushes the trained weights to it before each
step; see the README's Fine-tuning section.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.episode import EpisodeConfig
from finetune.dynamic_sampling import DynamicSampler, history_from_report
from finetune.grpo_config import GRPORunConfig
from finetune.rollout import (
    EpisodeRollout,
    InferencePolicy,
    ServedPolicy,
    prompt_text,
    rollout_episode,
)
from finetune.run_dir import base_model_spec, write_manifest
from finetune.sft import PrintLogs, load_base
from finetune.suite import SuiteError, load_suite

ROLLOUT_ADAPTER = "rollout-adapter"


class GroupStats:
    """Reward functions for TRL, counting groups whose verify rewards are all equal."""

    def __init__(self, num_generations: int):
        self.num_generations = num_generations
        self.groups = 0
        self.all_equal = 0

    def verify_reward(self, prompts: list[Any], completions: list[Any],
                      **kwargs: Any) -> list[float | None]:
        """1 when the tests pass on the episode's patch in a fresh sandbox, else 0."""
        rewards: list[float | None] = list(kwargs["verify_reward"])
        size = self.num_generations
        for start in range(0, len(rewards), size):
            group = [r for r in rewards[start:start + size] if r is not None]
            self.groups += 1
            self.all_equal += int(len(set(group)) <= 1)
        log = kwargs.get("log_metric")
        if log:
            log("groups/all_equal_total", float(self.all_equal))
            log("episode/steps", sum(kwargs["episode_steps"]) / len(rewards))
            log("episode/rerendered_tokens", sum(kwargs["rerendered_tokens"]) / len(rewards))
            log("episode/errors", float(sum(e is not None for e in kwargs["episode_error"])))
        return rewards

    def format_reward(self, prompts: list[Any], completions: list[Any],
                      **kwargs: Any) -> list[float]:
        """Share of the episode's replies that were a valid call to a known tool."""
        return list(kwargs["format_score"])


def _policy_model(config: GRPORunConfig, model_dir: Path) -> tuple[Any, Any, Any]:
    """(model for the trainer, its tokenizer, peft_config or None when resuming an adapter)."""
    model, tokenizer = load_base(model_dir)
    tokenizer.padding_side = "left"
    if config.adapter is None:
        return model, tokenizer, config.lora.peft_config(model)
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(config.adapter), is_trainable=True), tokenizer, \
        None


def grpo_episode(config: GRPORunConfig) -> EpisodeConfig:
    """The episode every rollout of `config` runs (the policy is filled in at each step)."""
    return rollout_episode(config.episode_max_steps, config.max_tokens, config.temperature,
                           config.sandbox, config.tools, config.repo_map_tokens,
                           config.tool_grammar)


def run_grpo(config: GRPORunConfig,
             extra_rewards: list[Callable[..., list[float]]] | None = None) -> dict[str, Any]:
    """Train with GRPO on the suite's split; write the adapter and manifest to output_dir."""
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    suite = load_suite(config.suite)
    tasks = suite.split(config.split)[config.skip:]
    tasks = tasks[: config.limit]
    if not tasks:
        raise SuiteError(f"suite {suite.path} has no {config.split!r} tasks after skipping "
                         f"{config.skip}; lower --skip or add tasks")
    spec, model_dir = base_model_spec(config.model)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model, tokenizer, peft_config = _policy_model(config, model_dir)
    g = config.num_generations
    episode = grpo_episode(config)
    sampler = None
    if config.dynamic_sampling:
        history = history_from_report(config.task_history) if config.task_history else {}
        sampler = DynamicSampler(tasks, history, window=g, seed=config.seed)
    rollout = EpisodeRollout(suite, tasks, episode, out / "rollouts", workers=config.workers or g,
                             max_completion_tokens=config.max_completion_tokens,
                             sampler=sampler, executor=config.executor)
    stats = GroupStats(g)
    rewards: list[Any] = [stats.verify_reward, stats.format_reward, *(extra_rewards or [])]
    args = config.trl_args(len(extra_rewards or []))
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": prompt_text(t)}],
                                  "instance_id": t.instance_id} for t in tasks])
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          rollout_func=rollout)
    PrintLogs.attach(trainer)
    policy_model = trainer.accelerator.unwrap_model(trainer.model)
    policy_model.save_pretrained(str(out / ROLLOUT_ADAPTER))
    rollout.policy = ServedPolicy(config.rollout_server, config.rollout_model,
                                  tool_choice=config.rollout_tool_choice) \
        if config.rollout_server else InferencePolicy(spec, out / ROLLOUT_ADAPTER)
    rollout.tokenizer = tokenizer
    started = time.monotonic()
    try:
        trainer.train()
    finally:
        rollout.close()
    seconds = time.monotonic() - started
    policy_model.save_pretrained(str(out))
    steps = trainer.state.global_step
    metrics = {"steps": steps, "seconds": round(seconds, 1),
               "seconds_per_step": round(seconds / max(steps, 1), 1),
               "groups": stats.groups, "groups_all_equal": stats.all_equal,
               "episodes": stats.groups * g,
               "groups_with_signal": stats.groups - stats.all_equal,
               **(sampler.counts() if sampler else {})}
    data = {"suite": str(suite.path), "suite_sha256": suite.digest(), "split": config.split,
            "tasks": len(tasks), "init_adapter": str(config.adapter) if config.adapter else None}
    write_manifest(out, "grpo", spec, model_dir, config.model_dump(mode="json"), data, metrics,
                   trainer.state.log_history)
    return metrics
