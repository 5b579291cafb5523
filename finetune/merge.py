"""`agent finetune merge`: fold a LoRA adapter into its base model, for transformers and vLLM."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.run_dir import MANIFEST

MERGED_MARKER = "apprentice-merged.json"


def adapter_base_path(adapter_dir: Path) -> Path:
    """The base model folder of an adapter: from the run manifest, else from PEFT's config."""
    adapter_dir = Path(adapter_dir)
    manifest = adapter_dir / MANIFEST
    if manifest.is_file():
        return Path(json.loads(manifest.read_text())["base_model_path"])
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter (adapter_config.json); give "
                                "the --output of `agent finetune sft` or `grpo`")
    return Path(json.loads(config.read_text())["base_model_name_or_path"])


def merge_adapter(adapter_dir: Path, out: Path | None = None) -> Path:
    """Write base + adapter as one float32 model (weights, config, tokenizer) into `out`
    (default `adapter_dir/merged`); `local/<out>` and `from_pretrained(out)` load it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter_dir)
    base_path = adapter_base_path(adapter_dir)
    out = Path(out or adapter_dir / "merged")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(out)
    (out / MERGED_MARKER).write_text(json.dumps(
        {"adapter": str(adapter_dir.resolve()), "base_model_path": str(base_path)}, indent=2)
        + "\n")
    return out
