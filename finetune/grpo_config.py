"""What a GRPO run is: `GRPORunConfig` (tasks, episodes, optimisation) and its TRL
`GRPOConfig`. Light to import, so the CLI reads its option defaults and help from here;
`finetune.grpo` trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.episode_config import ToolGrammar
from agent.executor_config import ExecutorConfig
from finetune.sft_config import LoraSettings, trl_config
from tools.sandbox import SandboxConfig


class GRPORunConfig(BaseModel):
    """What GRPO trains on, how episodes run, and the optimisation. A field named as one of
    TRL's `GRPOConfig` reaches it as is (`trl_args`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    suite: Path = Field(description="Task suite directory.")
    split: str = Field("train", description="Split whose tasks are the prompts.")
    skip: int = Field(0, ge=0, description="Leave out the split's first N tasks (e.g. the "
                      "ones SFT trained on, so GRPO explores tasks it has not memorised).")
    limit: int | None = Field(None, ge=1, description="Only the first N tasks (after skip).")
    model: str = Field("smollm2-135m", description="Known model name or model directory.")
    adapter: Path | None = Field(None, description="Start from this adapter (e.g. SFT's).")
    output_dir: Path = Field(description="Adapter, manifest, curves and rollouts go here.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    num_generations: int = Field(4, ge=2, description="Episodes per task and step (G).")
    max_steps: int = Field(10, ge=1, description="Optimizer steps; one task group each.")
    learning_rate: float = Field(2e-5, gt=0, description="AdamW learning rate.")
    beta: float = Field(0.0, ge=0, description="KL to the initial policy (0: no reference).")
    epsilon: float = Field(0.2, gt=0, description="PPO-style clipping of the ratio.")
    loss_type: str = Field("dapo", description="TRL loss aggregation (dapo, grpo, dr_grpo...).")
    format_reward_weight: float = Field(0.1, ge=0, description="Weight of the format reward.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of episodes.")
    episode_max_steps: int = Field(6, ge=1, description="Model calls per episode.")
    max_tokens: int = Field(128, ge=1, description="Tokens per model reply.")
    repo_map_tokens: int = Field(512, ge=0, description="Repository map in the episodes' "
                                 "system prompt (tokens; 0: none): as the policy was trained "
                                 "and will be evaluated.")
    max_completion_tokens: int = Field(3072, ge=16, description="Episode tokens after the "
                                       "prompt that train; longer episodes are cut.")
    workers: int | None = Field(None, ge=1, description="Episodes at once (default: G). "
                                "In-process local models generate one call at a time and keep "
                                "one key/value cache, so 1 is fastest on a CPU: the G episodes "
                                "of a group share their prompt and each step only appends.")
    dynamic_sampling: bool = Field(True, description="Redraw a task whose recent rewards "
                                   "are all 0 or all 1 before its group is spent (DAPO).")
    task_history: Path | None = Field(None, description="An `agent eval` report of the "
                                      "starting policy on these tasks (e.g. --episodes 4): "
                                      "its rewards seed dynamic sampling's history.")
    rollout_server: str | None = Field(None, description="Base URL of a vLLM server that "
                                       "generates the episodes (`trl vllm-serve`, e.g. "
                                       "http://gpu-host:8000); default: the policy in "
                                       "process. Token ids and logprobs come from its replies.")
    rollout_model: str | None = Field(None, description="The served model's name; default: "
                                      "the first the server lists.")
    rollout_tool_choice: str = Field("none", description="tool_choice sent to the rollout "
                                     "server. none: it renders the tools, the calls are read "
                                     "from the model's text here (no tool parser needed, and "
                                     "the next prompt holds the generated tokens); auto needs "
                                     "vLLM's --enable-auto-tool-choice --tool-call-parser.")
    rollout_server_sync: bool = Field(True, description="Push the trained weights to the "
                                      "rollout server before each step (TRL's use_vllm, server "
                                      "mode; needs vllm here); off: the served policy is fixed.")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="Where "
                                     "the episodes run: this process, or a Ray cluster (with "
                                     "--rollout-server, which every node must reach).")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    tools: str | None = Field(None, description="Tool set or names; default: the model's.")
    tool_grammar: ToolGrammar = Field(
        "calls", description="How the policy in process decodes its tool calls in the "
        "rollouts, as `agent eval --tool-grammar`: train under the decoding it is evaluated "
        "with. The recorded logprobs are the model's own, before the grammar.")
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPUs); float32 when off.")
    gradient_checkpointing: bool = Field(False, description="Less memory, ~30% more compute.")
    seed: int = Field(0, description="Random seed (adapter initialisation, sampling).")

    @model_validator(mode="after")
    def _check(self) -> GRPORunConfig:
        if self.executor.kind == "ray" and not self.rollout_server:
            raise ValueError("--executor ray runs the episodes on other processes, which cannot "
                             "reach the policy in this one: serve it (`trl vllm-serve`) and give "
                             "--rollout-server URL, or drop --executor ray")
        return self

    def trl_args(self, extra_rewards: int = 0) -> Any:
        """TRL's `GRPOConfig` for this run: one episode per micro-batch, a group per step;
        `extra_rewards` more reward functions after verify and format, weighted 1."""
        from trl import GRPOConfig

        served: dict[str, Any] = {}
        if self.rollout_server and self.rollout_server_sync:
            served = {"use_vllm": True, "vllm_mode": "server",
                      "vllm_server_base_url": self.rollout_server.rstrip("/").removesuffix("/v1")}
        return trl_config(
            GRPOConfig, self, **served, output_dir=str(self.output_dir),
            per_device_train_batch_size=1,
            gradient_accumulation_steps=self.num_generations,
            max_completion_length=self.max_completion_tokens,
            reward_weights=[1.0, self.format_reward_weight, *[1.0] * extra_rewards],
            disable_dropout=True, logging_steps=1, log_completions=False)
