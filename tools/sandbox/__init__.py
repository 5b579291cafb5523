"""Where the model's shell commands run: a Docker container (default) or, if asked, this host.

The Docker-backed parts load on first use, so commands that never start a sandbox (listing
trajectories, sessions) do not pay for importing the Docker client.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.sandbox.base import (
    DEFAULT_IMAGE,
    WORKSPACE,
    CommandResult,
    Sandbox,
    SandboxConfig,
    SandboxError,
    truncate_middle,
)

if TYPE_CHECKING:
    from tools.sandbox.docker_sandbox import DockerSandbox
    from tools.sandbox.image import build_image, connect_docker, image_exists
    from tools.sandbox.local_sandbox import LocalSandbox
    from tools.sandbox.pool import SandboxPool
    from tools.sandbox.repo_image import image_for_repository

_LAZY = {
    "DockerSandbox": "tools.sandbox.docker_sandbox",
    "LocalSandbox": "tools.sandbox.local_sandbox",
    "SandboxPool": "tools.sandbox.pool",
    "build_image": "tools.sandbox.image",
    "connect_docker": "tools.sandbox.image",
    "image_exists": "tools.sandbox.image",
    "image_for_repository": "tools.sandbox.repo_image",
}

SANDBOX_KINDS: dict[str, str] = {"docker": "DockerSandbox", "local": "LocalSandbox"}
"""The sandbox classes `SandboxConfig.kind` can name."""

__all__ = [
    "DEFAULT_IMAGE",
    "SANDBOX_KINDS",
    "WORKSPACE",
    "CommandResult",
    "DockerSandbox",
    "LocalSandbox",
    "Sandbox",
    "SandboxConfig",
    "SandboxError",
    "SandboxPool",
    "build_image",
    "connect_docker",
    "image_exists",
    "image_for_repository",
    "make_sandbox",
    "truncate_middle",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_sandbox(config: SandboxConfig, host_workspace: Path) -> Sandbox:
    """A started sandbox of the kind `config.kind` names, working on `host_workspace`.

    Raises SandboxError (saying what to do) if it cannot start; close it when done.
    """
    try:
        kind = __getattr__(SANDBOX_KINDS[config.kind])
    except KeyError:
        known = ", ".join(sorted(SANDBOX_KINDS))
        raise SandboxError(
            f"Unknown sandbox kind {config.kind!r}: use one of {known} (--sandbox)."
        ) from None
    sandbox: Sandbox = kind(config, host_workspace)
    sandbox.start()
    return sandbox
