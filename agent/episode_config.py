"""What an episode is: `EpisodeConfig` with the model's settings (`LLMConfig`) and the
context's (`ContextConfig`). Light to import (pydantic only, no litellm), so the CLI reads its
options' defaults and help from here; `agent.episode` runs an episode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.sandbox import SandboxConfig

DEFAULT_MODEL = "local/apprentice-135m"
"""The model every command uses unless told otherwise: the embedded local default."""

ToolGrammar = Literal["edits", "paths", "calls", "off"]
"""How a local model's tool calls are decoded (`LLMConfig.tool_grammar`)."""


class LLMConfig(BaseModel):
    """How the model is called."""

    model: str = Field(DEFAULT_MODEL, description="litellm model name (provider/model).")
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible server.")
    api_key: str | None = Field(None, description="Key for the provider; default: its env var.")
    temperature: float = Field(0.0, description="Sampling temperature (0 = greedy).")
    max_tokens: int = Field(1024, description="Maximum tokens per reply.")
    timeout: float = Field(300.0, description="Seconds before one call is abandoned.")
    retries: int = Field(3, description="Retries of transient errors (429, 5xx, time-outs).")
    backoff_s: float = Field(1.0, description="First backoff delay; doubles each retry.")
    stream: bool = Field(False, description="Stream the reply (text deltas reach listeners).")
    adapter: str | None = Field(None, description="PEFT adapter directory for local models.")
    tool_choice: str | None = Field(
        None, description="`required` forces a tool call each turn; default: the model decides."
    )
    tool_grammar: ToolGrammar = Field(
        "calls", description="Local models: `calls` generates each tool call under a grammar of "
        "the tools' schemas (always a well-formed call of a known tool); `paths` also keeps path "
        "arguments to the workspace's files and folders, and an edit to whole lines the model "
        "was shown of a file it viewed (`agent.tool_grammar`); `edits` also chooses an edit's "
        "replaced lines by the model's probability of the whole run among those the tool "
        "accepts, and makes the replacement change them (`agent.edit_choice`); `off` decodes "
        "freely.")
    token_ids: bool = Field(
        False, description="Ask the OpenAI-compatible server (vLLM 0.10.2 or later) for each "
        "call's token ids and logprobs, recorded for training (GRPO from a served policy); "
        "such calls are not streamed.")


class ContextConfig(BaseModel):
    """How the model's context is measured, compacted and seeded."""

    context_window: int | None = Field(
        None, gt=0, description="Tokens the model reads; default: the model's metadata.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Compact when a request passes this share of the window.")
    target: float = Field(0.5, gt=0, le=1, description="Share of the window to compact down to.")
    keep_outputs: int = Field(
        3, ge=0, description="Most recent tool outputs kept whole while they fit in "
                             "`keep_recent` of the window (the latest always).")
    keep_recent: float = Field(
        0.25, gt=0, lt=1, description="Share of the window of latest turns kept verbatim when "
                                      "older ones are summarised.")
    summary_tokens: int = Field(600, gt=0, description="Longest summary the model may write.")
    repo_map_tokens: int = Field(
        512, ge=0, description="Repository map in the system prompt (tokens; 0: none).")

    @model_validator(mode="after")
    def _check(self) -> ContextConfig:
        if self.target >= self.threshold:
            raise ValueError(f"target ({self.target}) must be below threshold "
                             f"({self.threshold}): lower target or raise threshold")
        return self


class AttemptGroup(BaseModel):
    """Which of several attempts at one task an episode is (`agent solve --samples N`):
    recorded in its trajectory's header, so the attempts can be found from one another."""

    id: str = Field(description="The group's id, shared by its attempts.")
    attempt: int = Field(ge=0, description="This attempt's number, from 0.")
    samples: int = Field(ge=1, description="How many attempts the group asked for.")


class EpisodeConfig(BaseModel):
    """How an episode runs (what it works on is the `Task`): one model for solve, the TUI,
    eval and rollouts, whose CLI options map onto these fields."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: LLMConfig = Field(default_factory=LLMConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    max_steps: int = Field(30, ge=1, description="Model calls per episode (per turn in a chat).")
    context: ContextConfig = Field(default_factory=ContextConfig)
    tools: str | None = Field(None, description="Tool set (full, core) or tool names; default: "
                              "the model's (`agent.models.default_tool_set`).")
    output_dir: Path | None = Field(None, description="Where the trajectory and patch go; "
                                    "default: $APPRENTICE_HOME/runs/<session-id>.")
    keep_worktree: bool = Field(False, description="Leave the working tree in place at the end.")
    repeat_guard: bool = Field(True, description="Answer, without running it, a call that "
                               "failed and is repeated with nothing changed since.")
    session_id: str | None = Field(None, description="A fixed id (tests); default: a new one.")
    group: AttemptGroup | None = Field(None, description="The attempt group, when the episode "
                                       "is one of several at the same task.")
