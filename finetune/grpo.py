"""Online RL with a verifiable reward: TRL's GRPOTrainer, one whole agent episode per completion.

For every task of the split, GRPO samples G episodes (`finetune.rollout.EpisodeRollout`, TRL's
`rollout_func`), each in its own sandbox, scores them with the sandbox's tests (`verify_reward`)
and, as a separate logged reward, with the share of well-formed tool calls (`format_reward`,
weight `format_reward_weight`; 0 logs it without shaping). Tool outputs are masked out of the
loss by the rollout's `env_mask`. Groups whose rewards are all equal carry no signal; they are
counted and reported.

CPU settings (the defaults): float32, no gradient checkpointing, one episode per micro-batch,
G micro-batches per optimizer step. On GPUs: `--bf16`, and launch with accelerate (DeepSpeed
ZeRO configs ship with TRL: `trl/accelerate_configs/`); see the README's Fine-tuning section.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from finetune.rollout import EpisodeRollout, InferencePolicy, prompt_text, rollout_episode
from finetune.run_dir import base_model_spec, write_manifest
from finetune.sft import LoraSettings, PrintLogs, load_base
from finetune.suite import SuiteError, load_suite
from tools.sandbox import SandboxConfig

ROLLOUT_ADAPTER = "rollout-adapter"


class GRPORunConfig(BaseModel):
    """What GRPO trains on, how episodes run, and the optimisation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    suite: Path = Field(description="Task suite directory.")
    split: str = Field("train", description="Split whose tasks are the prompts.")
    skip: int = Field(0, ge=0, description="Leave out the split's first N tasks (e.g. the "
                      "ones SFT trained on, so GRPO explores tasks it has not memorised).")
    limit: int | None = Field(None, ge=1, description="Only the first N tasks (after skip).")
    model: str = Field("smollm2-135m", description="Known model name or model directory.")
    adapter: Path | None = Field(None, description="Start from this adapter (e.g. SFT's).")
    output_dir: Path
    lora: LoraSettings = Field(default_factory=LoraSettings)
    num_generations: int = Field(4, ge=2, description="Episodes per task and step (G).")
    max_steps: int = Field(10, ge=1, description="Optimizer steps; one task group each.")
    learning_rate: float = Field(2e-5, gt=0)
    beta: float = Field(0.0, ge=0, description="KL to the initial policy (0: no reference).")
    epsilon: float = Field(0.2, gt=0, description="PPO-style clipping of the ratio.")
    loss_type: str = Field("dapo", description="TRL loss aggregation (dapo, grpo, dr_grpo...).")
    format_reward_weight: float = Field(0.1, ge=0, description="Weight of the format reward.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of episodes.")
    episode_max_steps: int = Field(6, ge=1, description="Model calls per episode.")
    max_tokens: int = Field(128, ge=1, description="Tokens per model reply.")
    max_completion_tokens: int = Field(3072, ge=16, description="Episode tokens after the "
                                       "prompt that train; longer episodes are cut.")
    workers: int | None = Field(None, ge=1, description="Episodes at once (default: G). "
                                "In-process local models generate one call at a time and keep "
                                "one key/value cache, so 1 is fastest on a CPU: the G episodes "
                                "of a group share their prompt and each step only appends.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    tools: str | None = Field(None, description="Tool set or names; default: the model's.")
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0


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


def run_grpo(config: GRPORunConfig,
             extra_rewards: list[Callable[..., list[float]]] | None = None) -> dict[str, Any]:
    """Train with GRPO on the suite's split; write the adapter and manifest to output_dir."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

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
    episode = rollout_episode(config.episode_max_steps, config.max_tokens, config.temperature,
                              config.sandbox, config.tools)
    rollout = EpisodeRollout(suite, tasks, episode, out / "rollouts", workers=config.workers or g,
                             max_completion_tokens=config.max_completion_tokens)
    stats = GroupStats(g)
    rewards: list[Any] = [stats.verify_reward, stats.format_reward, *(extra_rewards or [])]
    args = GRPOConfig(
        output_dir=str(out), max_steps=config.max_steps, learning_rate=config.learning_rate,
        per_device_train_batch_size=1, gradient_accumulation_steps=g, num_generations=g,
        beta=config.beta, epsilon=config.epsilon, loss_type=config.loss_type,
        temperature=config.temperature, max_completion_length=config.max_completion_tokens,
        reward_weights=[1.0, config.format_reward_weight, *[1.0] * len(extra_rewards or [])],
        bf16=config.bf16, fp16=False, use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=config.gradient_checkpointing, disable_dropout=True,
        seed=config.seed, logging_steps=1, report_to=["tensorboard"], save_strategy="no",
        dataloader_pin_memory=False, disable_tqdm=True, log_completions=False,
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": prompt_text(t)}],
                                  "instance_id": t.instance_id} for t in tasks])
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config,
                          rollout_func=rollout)
    PrintLogs.attach(trainer)
    policy_model = trainer.accelerator.unwrap_model(trainer.model)
    policy_model.save_pretrained(str(out / ROLLOUT_ADAPTER))
    rollout.policy = InferencePolicy(spec, out / ROLLOUT_ADAPTER)
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
               "episodes": stats.groups * g}
    data = {"suite": str(suite.path), "suite_sha256": suite.digest(), "split": config.split,
            "tasks": len(tasks), "init_adapter": str(config.adapter) if config.adapter else None}
    write_manifest(out, "grpo", spec, model_dir, config.model_dump(mode="json"), data, metrics,
                   trainer.state.log_history)
    return metrics
