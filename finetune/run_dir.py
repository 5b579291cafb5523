"""A training output directory: the adapter, what it was trained from, and its curves.

    OUT/
      adapter_config.json, adapter_model.safetensors   the PEFT adapter (`--adapter OUT`)
      apprentice-finetune.json                         base model, data or suite hash, config,
                                                       metrics, library versions
      log_history.json                                 every logged step (loss, reward, ...)
      runs/                                            TensorBoard event files
      evals/*.json                                     `agent eval --save` reports, for `report`
"""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from agent.models import resolve_model_path

MANIFEST = "apprentice-finetune.json"
LOG_HISTORY = "log_history.json"


def base_model_spec(model: str) -> tuple[str, Path]:
    """(name as given without `local/`, its folder) of a known model name or model directory."""
    spec = model.removeprefix("local/")
    return spec, resolve_model_path(spec)


def library_versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_manifest(out: Path, kind: str, base_model: str, base_model_path: Path,
                   config: dict[str, Any], data: dict[str, Any], metrics: dict[str, Any],
                   log_history: list[dict[str, Any]]) -> Path:
    """Write the manifest and the log history of a finished run."""
    out = Path(out)
    manifest = {
        "kind": kind,
        "base_model": base_model,
        "base_model_path": str(base_model_path),
        "adapter": str(out.resolve()),
        "data": data,
        "config": config,
        "metrics": metrics,
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    (out / LOG_HISTORY).write_text(json.dumps(log_history, indent=2) + "\n")
    return out / MANIFEST


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a training output directory (no {MANIFEST}); "
                                "give the --output of `agent finetune sft` or `grpo`")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def read_log_history(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / LOG_HISTORY
    return json.loads(path.read_text()) if path.is_file() else []
