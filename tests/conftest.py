"""Shared fixtures: an isolated apprentice home, example repositories, the scripted model, and
checks that Docker and the model are really there (CI fails rather than skips)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.example_repos import init_example
from agent.scripted_model import ScriptedModelServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def apprentice_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own worktrees, runs and trajectories."""
    home = tmp_path / "apprentice-home"
    monkeypatch.setenv("APPRENTICE_HOME", str(home))
    return home


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, Path]:
    """The calculator example: (repo, issue.md), a fresh git repository."""
    return init_example("calculator", tmp_path / "example")


@pytest.fixture
def scripted() -> Iterator[ScriptedModelServer]:
    """A scripted OpenAI-compatible server; set `.script` before the agent runs."""
    with ScriptedModelServer() as server:
        yield server


def _require(flag: str, reason: str) -> None:
    if os.environ.get(flag) == "1":
        pytest.fail(f"{reason} (and {flag}=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Skip (or fail in CI) when the Docker engine or the sandbox image is missing."""
    import docker

    from tools.sandbox import DEFAULT_IMAGE

    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        _require("APPRENTICE_REQUIRE_DOCKER", f"Docker engine not reachable: {exc}")
    try:
        client.images.get(DEFAULT_IMAGE)
    except Exception:
        _require("APPRENTICE_REQUIRE_DOCKER",
                 f"sandbox image {DEFAULT_IMAGE} missing: run `agent sandbox build --offline`")


@pytest.fixture(scope="session")
def model_ready() -> Path:
    """The pulled SmolLM2 folder; skip (or fail in CI) when it is not pulled."""
    from agent.models import resolve_model_path

    try:
        return resolve_model_path("smollm2-135m")
    except Exception as exc:
        _require("APPRENTICE_REQUIRE_MODEL", f"SmolLM2 not pulled: {exc}")
        raise
