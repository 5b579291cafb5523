"""Supervised fine-tuning on verified trajectories: TRL's SFTTrainer with a PEFT LoRA adapter.

Conversations are tokenized by `agent.tool_protocol.render_chat_with_mask`, the rendering the
local model uses at inference, and given to SFTTrainer pre-tokenized with `assistant_masks`, so
the loss is on the assistant's tokens only (tool calls and end-of-turn), never on the system
prompt, the task or tool outputs. Float32 on the CPU; `bf16=True` where a GPU supports it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

from finetune.run_dir import base_model_spec, write_manifest
from finetune.sft_config import LoraSettings as LoraSettings
from finetune.sft_config import SFTRunConfig
from finetune.sft_data import DataError, rows_digest, tokenize_row


class PrintLogs(TrainerCallback):
    """Prints the main figures of each logged step on stderr (instead of the whole dict)."""

    @staticmethod
    def attach(trainer: Any) -> None:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(PrintLogs())

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        keys = ("loss", "reward", "grad_norm", "learning_rate", "train_loss",
                "rewards/verify_reward/mean", "frac_reward_zero_std", "episode/steps")
        shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v
                 for k, v in (logs or {}).items() if k in keys}
        if shown:
            print(f"step {state.global_step}: {shown}", file=sys.stderr, flush=True)


def load_base(model_dir: Path) -> tuple[Any, Any]:
    """The base model (float32) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, tokenizer


def _check_truncation(masks: list[list[int]], config: SFTRunConfig) -> None:
    """Refuse a max_length that would leave no assistant token to learn from."""
    if config.max_length is None:
        return
    keep = slice(None, config.max_length) if config.truncation_mode == "keep_start" \
        else slice(-config.max_length, None)
    if not any(sum(mask[keep]) for mask in masks):
        raise DataError(f"max_length {config.max_length} ({config.truncation_mode}) cuts every "
                        "assistant token; raise --max-length or use --truncation keep_end")


def run_sft(rows: list[dict[str, Any]], config: SFTRunConfig,
            source: str = "rows") -> dict[str, Any]:
    """Train an adapter on `rows` (SFT rows with reward 1) and write the output directory.
    Returns the run's metrics."""
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    if not rows:
        raise DataError("no verified-successful conversations to train on; run `agent finetune "
                        "oracle SUITE` or solve tasks first")
    spec, model_dir = base_model_spec(config.model)
    torch.manual_seed(config.seed)
    model, tokenizer = load_base(model_dir)
    dataset = Dataset.from_list([tokenize_row(row, tokenizer) for row in rows])
    _check_truncation(dataset["assistant_masks"], config)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_config = config.lora.peft_config(model)
    if config.init_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
        peft_config = None
    trainer = SFTTrainer(model=model, args=config.trl_args(), train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config)
    PrintLogs.attach(trainer)
    started = time.monotonic()
    output = trainer.train()
    seconds = time.monotonic() - started
    trained: Any = trainer.accelerator.unwrap_model(trainer.model)
    trained.save_pretrained(str(out))
    steps = trainer.state.global_step
    metrics = {"train_loss": output.training_loss, "steps": steps,
               "seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(steps, 1), 2),
               "tokens": sum(len(r) for r in dataset["input_ids"]),
               "assistant_tokens": sum(sum(m) for m in dataset["assistant_masks"])}
    data = {"source": source, "rows": len(rows), "sha256": rows_digest(rows)}
    write_manifest(out, "sft", spec, model_dir, config.model_dump(mode="json"), data, metrics,
                   trainer.state.log_history)
    return metrics
