"""Where episodes run: `ExecutorConfig`. Light to import (pydantic only), so the CLI reads its
options' defaults from here; `agent.executor` runs the episodes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tools.sandbox import SandboxConfig
from tools.sandbox.isolation import memory_bytes

ExecutorKind = Literal["local", "ray"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("local", "ray")


class ExecutorConfig(BaseModel):
    """Where episodes run and what each one reserves."""

    kind: ExecutorKind = Field("local", description="local (threads of this process) or ray "
                               "(a Ray cluster).")
    ray_address: str | None = Field(None, description="Ray cluster to join (`ray start "
                                    "--head` prints it); default: start a local one.")
    episode_cpus: float = Field(1.0, gt=0, description="Ray CPUs one episode reserves, so a "
                                "node runs no more episodes than it has CPUs for.")
    episode_memory: str | None = Field(None, description="Ray memory one episode reserves "
                                       "(docker syntax); default: the sandbox's limit.")
    max_retries: int = Field(1, ge=0, description="Times Ray reruns an episode whose worker "
                             "died; then it is reported failed.")

    def resources(self, sandbox: SandboxConfig) -> dict[str, float]:
        """The Ray resources (`num_cpus`, `memory` in bytes) of one episode in `sandbox`."""
        return {"num_cpus": self.episode_cpus,
                "memory": float(memory_bytes(self.episode_memory or sandbox.memory))}
