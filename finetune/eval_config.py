"""What an evaluation is: `EvalOptions` (the policy, the tasks, the episodes). Light to
import, so `agent eval` reads its options' defaults and help from here; `finetune.evaluate`
runs it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from agent.episode_config import DEFAULT_MODEL, EpisodeConfig, LLMConfig
from agent.executor_config import ExecutorConfig
from agent.samples_config import SAMPLED_TEMPERATURE


def _eval_episode() -> EpisodeConfig:
    return EpisodeConfig(max_steps=8, llm=LLMConfig(max_tokens=256))


class EvalOptions(BaseModel):
    """How a suite is evaluated: which policy, which tasks, how many at once; the rest of what
    an episode is (steps, reply tokens, sandbox, tools) is `episode`."""

    model: str = Field(DEFAULT_MODEL, description="litellm model, or `oracle` for the "
                       "scripted policy that knows each task's fix.")
    api_base: str | None = Field(None, description="OpenAI-compatible server URL.")
    adapter: str | None = Field(None, description="PEFT adapter directory (local models).")
    temperature: float | None = Field(None, ge=0, description="Sampling temperature; default "
                                      "0 (greedy) for one episode per task, else "
                                      f"{SAMPLED_TEMPERATURE}.")
    split: str | None = Field("test", description="Which split; None for every task.")
    episodes: int = Field(1, ge=1, description="Episodes per task (K of pass@K).")
    limit: int | None = Field(None, ge=1, description="Only the first N tasks of the split.")
    workers: int = Field(4, ge=1, description="Episodes at once (one sandbox each); 1 is "
                         "fastest for an in-process local model.")
    output_dir: Path | None = Field(None, description="Where trajectories and the report go.")
    samples: int | None = Field(None, ge=1, description="Attempts per task, one picked by "
                                "the selector (as `agent solve --samples`): reports single "
                                "pass@1, selected pass@1 and pass@N. Instead of --episodes.")
    judge: bool = Field(False, description="With --samples: the model breaks the selector's "
                        "last ties.")
    stop_when_agree: int | None = Field(None, ge=2, description="With --samples: a task stops "
                                        "once this many attempts made the same change.")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="Where the "
                                     "episodes run: this process, or a Ray cluster.")
    episode: EpisodeConfig = Field(default_factory=_eval_episode, description="Each "
                                   "episode's settings; its model fields come from the above.")

    @model_validator(mode="after")
    def _check(self) -> EvalOptions:
        if self.samples is not None and self.episodes > 1:
            raise ValueError("give --episodes K (pass@K of independent episodes) or --samples "
                             "N (N attempts and the one selected), not both")
        if self.samples and self.executor.kind == "ray" and self.model == "oracle":
            raise ValueError("--samples with --executor ray runs the attempts of a model the "
                             "workers reach (an API or a server); the oracle's attempts run "
                             "here: drop --executor ray")
        if self.stop_when_agree is not None and (self.samples or 1) < self.stop_when_agree:
            raise ValueError(f"--stop-when-agree {self.stop_when_agree} needs --samples of at "
                             "least as many")
        return self

    @property
    def attempts(self) -> int:
        """Episodes per task: `samples` or `episodes`."""
        return self.samples or self.episodes

    def llm(self) -> LLMConfig:
        """The policy's model settings (not used for the oracle)."""
        temperature = self.temperature
        if temperature is None:
            temperature = 0.0 if self.attempts == 1 else SAMPLED_TEMPERATURE
        local = self.model.startswith("local/")
        return self.episode.llm.model_copy(update={
            "model": self.model, "api_base": self.api_base, "adapter": self.adapter,
            "temperature": temperature, "tool_choice": "required" if local else None})
