"""Where the model's shell commands run: a Docker container (default) or, if asked, this host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tools.sandbox.base import (
    DEFAULT_IMAGE,
    WORKSPACE,
    CommandResult,
    Sandbox,
    SandboxConfig,
    SandboxError,
    truncate_middle,
)
from tools.sandbox.docker_sandbox import DockerSandbox
from tools.sandbox.image import build_image, connect_docker, image_exists
from tools.sandbox.local_sandbox import LocalSandbox
from tools.sandbox.pool import SandboxPool
from tools.sandbox.repo_image import image_for_repository

SANDBOX_KINDS: dict[str, Callable[[SandboxConfig, Path], Sandbox]] = {
    "docker": DockerSandbox,
    "local": LocalSandbox,
}
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


def make_sandbox(config: SandboxConfig, host_workspace: Path) -> Sandbox:
    """A started sandbox of the kind `config.kind` names, working on `host_workspace`.

    Raises SandboxError (saying what to do) if it cannot start; close it when done.
    """
    try:
        kind = SANDBOX_KINDS[config.kind]
    except KeyError:
        known = ", ".join(sorted(SANDBOX_KINDS))
        raise SandboxError(
            f"Unknown sandbox kind {config.kind!r}: use one of {known} (--sandbox)."
        ) from None
    sandbox: Sandbox = kind(config, host_workspace)
    sandbox.start()
    return sandbox
