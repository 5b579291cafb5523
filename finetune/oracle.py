"""The oracle: a scripted policy that knows each task's fix, for warm-start trajectories.

The real agent loop (`agent.solve`: worktree, sandbox, tools, recorder, verify) runs against a
small OpenAI-compatible HTTP server (`agent.scripted_model`) that answers each model call with
the next tool call of the task's `oracle` script. The agent reaches it through litellm like any
provider, so the trajectories are the agent's own, and only those the tests verify are kept for
training.
"""

from __future__ import annotations

from typing import Any

from agent.llm import LLMConfig
from agent.scripted_model import ScriptedModelServer, tool_call

ORACLE_MODEL = "oracle"
"""The model name that selects the oracle in `agent eval --model oracle`."""
ORACLE_TOOL_SET = "core"
"""The oracle's default tools: those of the small local models its episodes teach."""


class ScriptedPolicyServer(ScriptedModelServer):
    """Serves the oracle's tool calls (`[{"name": ..., "arguments": {...}}, ...]`), one per
    request, as a model would (`agent.scripted_model`)."""

    def __init__(self, script: list[dict[str, Any]], model: str = ORACLE_MODEL):
        super().__init__([{"tool_calls": [tool_call(step["name"], step["arguments"])]}
                          for step in script], model=model)

    def llm_config(self, **overrides: Any) -> LLMConfig:
        return super().llm_config(retries=0, **overrides)
