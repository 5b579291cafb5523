"""The shipped default, `local/apprentice-135m`: its adapter matches its manifest, loads offline,
changes the base model's output, and fixes the README's demo in a real episode."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import models
from agent.episode_config import DEFAULT_MODEL

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("model_ready")]

SHIPPED = models.ADAPTERS_DIR / "apprentice-135m"


def test_the_shipped_adapter_is_the_default_and_matches_its_manifest() -> None:
    assert DEFAULT_MODEL == "local/apprentice-135m"
    manifest = json.loads((SHIPPED / models.ADAPTER_MANIFEST).read_text())
    assert manifest["base_model"] == "smollm2-135m"
    assert manifest["adapter_sha256"] == models.adapter_digest(SHIPPED)
    assert manifest["figures"]["demo"]["reward"] == 1
    assert "more_itertools" not in json.dumps(manifest["sft_sources"])
    assert "more_itertools" not in json.dumps(manifest.get("grpo_sources", {}))
    assert models.known_adapter("apprentice-135m") == SHIPPED


def test_a_changed_adapter_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "adapters" / "apprentice-135m"
    shutil.copytree(SHIPPED, copy)
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(models, "ADAPTERS_DIR", tmp_path / "adapters")
    with pytest.raises(models.ModelNotFoundError, match="does not match its manifest"):
        models.known_adapter("apprentice-135m")


def test_the_adapter_loads_offline_and_changes_the_base_models_output(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from agent.local_model import load_local_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    base = load_local_model("smollm2-135m")
    tuned = load_local_model("apprentice-135m")
    ids = base.tokenizer("Fix the failing test in calculator/operations.py",
                         return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base.model(ids).logits[0, -1]
        tuned_logits = tuned.model(ids).logits[0, -1]
    assert base_logits.shape == tuned_logits.shape
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)


@pytest.mark.usefixtures("docker_ready")
def test_the_demo_is_fixed_by_the_shipped_model(tmp_path: Path) -> None:
    """`.ci/demo` exactly (its flags), through the CLI, with the default model."""
    demo = tmp_path / "demo"
    agent = [sys.executable, "-m", "agent.cli"]
    subprocess.run([*agent, "examples", "init", str(demo), "--force"], check=True,
                   capture_output=True, timeout=120)
    proc = subprocess.run(
        [*agent, "solve", str(demo / "issue.md"), "--repo", str(demo / "repo"),
         "--max-steps", "6", "--max-tokens", "256", "--repo-map-tokens", "0", "--json"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["model"] == "local/apprentice-135m"
    assert result["reward"] == 1, result["test_output"]
    assert "+    return a + b" in result["patch"]
    assert "-    return a - b" in result["patch"]
