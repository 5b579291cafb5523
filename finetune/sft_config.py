"""What an SFT run is: `SFTRunConfig` and its LoRA adapter (`LoraSettings`), and how a run
config becomes TRL's trainer config. Light to import (pydantic only), so the CLI reads its
option defaults and help from here; `finetune.sft` trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

TrainerArgs = TypeVar("TrainerArgs")

# The trainer settings every run shares: logs to TensorBoard, no checkpoints, no progress bar.
FIXED_TRAINER_ARGS: dict[str, Any] = {
    "fp16": False, "report_to": ["tensorboard"], "save_strategy": "no",
    "dataloader_pin_memory": False, "disable_tqdm": True,
}


def trl_config(trl_class: type[TrainerArgs], config: BaseModel, **computed: Any) -> TrainerArgs:
    """`trl_class` (SFTConfig, GRPOConfig) from every field of the run `config` that has a
    field of the same name there, the fixed settings, and `computed` (renamed or derived
    values, which win)."""
    import torch

    names = {field.name for field in dataclasses.fields(trl_class)}  # type: ignore[arg-type]
    shared = {name: getattr(config, name) for name in type(config).model_fields if name in names}
    if "activation_checkpointing" in names and "gradient_checkpointing" in shared:
        # transformers 5.x renamed it; the old name still works but warns on every run
        shared["activation_checkpointing"] = shared.pop("gradient_checkpointing")
    fixed = {**FIXED_TRAINER_ARGS, "use_cpu": not torch.cuda.is_available()}
    return trl_class(**{**shared, **fixed, **computed})


class LoraSettings(BaseModel):
    """The LoRA adapter (PEFT `LoraConfig`)."""

    r: int = Field(16, ge=1, description="Rank of the update matrices.")
    alpha: int = Field(32, ge=1, description="Scaling: the update is multiplied by alpha / r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: str | list[str] = Field("all-linear", description="Layers that get an "
                                            "adapter (`all-linear`: every linear layer).")
    last_layers: int | None = Field(None, ge=1, description="Adapt only the last N transformer "
                                    "blocks: backward stops there (several times faster on a "
                                    "CPU); None adapts all.")

    def peft_config(self, model: Any) -> Any:
        import torch
        from peft import LoraConfig

        if self.last_layers is None:
            return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                              target_modules=self.target_modules, task_type="CAUSAL_LM")
        targets = self.target_modules
        if targets == "all-linear":  # PEFT wants names when layers are picked
            targets = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                              if isinstance(module, torch.nn.Linear) and ".layers." in name})
        total = int(model.config.num_hidden_layers)
        first = max(total - self.last_layers, 0)
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, layers_to_transform=list(range(first, total)),
                          task_type="CAUSAL_LM")


class SFTRunConfig(BaseModel):
    """What to train, how, and where the adapter goes. A field named as one of TRL's
    `SFTConfig` reaches it as is (`trl_args`)."""

    model: str = Field("smollm2-135m", description="Known model name or model directory.")
    output_dir: Path = Field(description="Adapter, manifest and curves go here.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    init_adapter: Path | None = Field(None, description="Go on training this adapter (its LoRA "
                                      "settings win over `lora`) instead of a new one.")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate (LoRA).")
    max_steps: int = Field(-1, description="Optimizer steps; -1 trains `epochs` epochs.")
    epochs: float = Field(1.0, gt=0, description="Passes over the data when max_steps is -1.")
    batch_size: int = Field(1, ge=1, description="Conversations per device and step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches whose gradients "
                                             "add up to one optimizer step.")
    max_length: int | None = Field(None, ge=16, description="Cut longer conversations "
                                   "(None: never; they are at most the model's window).")
    truncation_mode: Literal["keep_start", "keep_end"] = Field(
        "keep_start", description="Which end of a cut conversation stays (with max_length).")
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPUs); float32 when off.")
    gradient_checkpointing: bool = Field(False, description="Less memory, ~30% more compute.")
    seed: int = Field(0, description="Random seed (adapter initialisation, data order).")
    logging_steps: int = Field(1, ge=1, description="Log the loss every N steps.")

    def trl_args(self) -> Any:
        """TRL's `SFTConfig` for this run."""
        from trl import SFTConfig

        return trl_config(SFTConfig, self, output_dir=str(self.output_dir),
                          num_train_epochs=self.epochs,
                          per_device_train_batch_size=self.batch_size, assistant_only_loss=False)
