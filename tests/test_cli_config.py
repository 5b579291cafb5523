"""Each setting exists once: the run configs build TRL's configs themselves, the CLI's options
are the config fields (defaults, help, where a value goes), and a value a config refuses is one
line per problem naming the option, with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel, Field

from agent.cli import app
from agent.cli.options import (
    build_config,
    config_default,
    config_errors,
    config_field,
    option_path,
)
from finetune.eval_config import EvalOptions
from finetune.grpo_config import GRPORunConfig
from finetune.sft_config import SFTRunConfig


def command(*names: str) -> Any:
    """The click command typer builds for `agent NAMES...`."""
    found: Any = typer.main.get_command(app)
    for name in names:
        found = found.commands[name]
    return found


def context(*names: str, **params: Any) -> typer.Context:
    """A context of `agent NAMES...` whose parsed options are `params`."""
    ctx = typer.Context(command(*names))
    ctx.params = params
    return ctx


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPRENTICE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_a_run_config_field_named_as_a_trl_field_reaches_it_without_a_copy(
        tmp_path: Path) -> None:
    class WarmSFT(SFTRunConfig):
        warmup_steps: int = Field(7, description="A TRL field no code copies.")

    class WarmGRPO(GRPORunConfig):
        warmup_steps: int = Field(5, description="A TRL field no code copies.")

    sft = WarmSFT(output_dir=tmp_path, max_length=64, truncation_mode="keep_end", seed=3,
                  epochs=2, batch_size=2)
    args = sft.trl_args()
    assert args.warmup_steps == 7 and args.max_length == 64 and args.seed == 3
    assert args.truncation_mode == "keep_end" and args.output_dir == str(tmp_path)
    assert args.num_train_epochs == 2 and args.per_device_train_batch_size == 2
    assert not args.assistant_only_loss and args.save_strategy == "no"
    grpo = WarmGRPO(suite=tmp_path, output_dir=tmp_path, num_generations=3, beta=0.1,
                    loss_type="grpo", max_completion_tokens=100, format_reward_weight=0.5)
    args = grpo.trl_args(extra_rewards=1)
    assert args.warmup_steps == 5 and args.num_generations == 3 and args.beta == 0.1
    assert args.loss_type == "grpo" and args.max_completion_length == 100
    assert args.gradient_accumulation_steps == 3 and args.per_device_train_batch_size == 1
    assert args.reward_weights == [1.0, 0.5, 1.0] and args.logging_steps == 1


# Options of each command that are no config field (all others must be one).
CLI_ONLY = {
    ("finetune", "sft"): {"ctx", "data", "from_store", "store_model", "store_task",
                          "store_limit", "include_unverified", "through_edit"},
    ("finetune", "grpo"): {"ctx"},
    ("eval",): {"ctx", "suite", "save", "as_json"},
}


@pytest.mark.parametrize("names", list(CLI_ONLY), ids="-".join)
def test_every_option_is_a_config_field_with_its_default(names: tuple[str, ...]) -> None:
    model: type[BaseModel] = {"sft": SFTRunConfig, "grpo": GRPORunConfig,
                              "eval": EvalOptions}[names[-1]]
    params = [p for p in command(*names).params if p.name]
    unmapped = {p.name for p in params if option_path(model, p.name or "") is None}
    assert unmapped == CLI_ONLY[names] - {"ctx"}
    for param in params:
        path = option_path(model, param.name or "")
        if path is None:
            continue
        default = config_default(model, path)
        if default is ...:
            assert param.required, param.name
        else:
            assert param.default == default, (param.name, param.default, default)
        assert param.help, f"--{param.name} has no help"
    field = "model" if model is EvalOptions else "learning_rate"  # and the help
    flag = next(p for p in params if p.name == field)
    assert flag.help == config_field(model, field).description


def test_each_option_reaches_its_config_field(tmp_path: Path) -> None:
    sft = build_config(SFTRunConfig, context(
        "finetune", "sft", output_dir=tmp_path, data=tmp_path / "rows.jsonl", lora_r=4,
        lora_last_layers=2, gradient_accumulation_steps=3, truncation_mode="keep_end"))
    assert sft.output_dir == tmp_path and sft.lora.r == 4 and sft.lora.last_layers == 2
    assert sft.gradient_accumulation_steps == 3 and sft.truncation_mode == "keep_end"
    assert sft.lora.alpha == 32  # not given: the config's default
    grpo = build_config(GRPORunConfig, context("finetune", "grpo", suite=tmp_path,
                                               output_dir=tmp_path, lora_r=8, tools="core",
                                               tool_grammar="edits"),
                        lora_alpha=16)
    assert (grpo.lora.r, grpo.lora.alpha, grpo.tools) == (8, 16, "core")
    assert grpo.tool_grammar == "edits"
    options = build_config(EvalOptions, context(
        "eval", suite=tmp_path, episode_max_steps=3, episode_llm_max_tokens=7,
        episode_tools="core", workers=2), split=None)
    assert options.episode.max_steps == 3 and options.episode.llm.max_tokens == 7
    assert options.episode.tools == "core" and options.workers == 2 and options.split is None


def test_config_errors_without_a_command_name_the_field_as_a_flag(
        capsys: pytest.CaptureFixture[str]) -> None:
    from agent.episode import EpisodeConfig

    with pytest.raises(SystemExit) as exited, config_errors():
        EpisodeConfig(max_steps=0)
    assert exited.value.code == 2
    assert capsys.readouterr().err == \
        "agent: error: --max-steps: must be at least 1 (got 0)\n"


def test_grpo_with_one_generation_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    proc = run_cli("finetune", "grpo", "--suite", str(tmp_path / "none"), "--output",
                   str(tmp_path / "out"), "--num-generations", "1", home=tmp_path / "home")
    assert proc.returncode == 2
    assert proc.stderr == "agent: error: --num-generations: must be at least 2 (got 1)\n"
    assert not (tmp_path / "out").exists()


def test_sft_names_every_bad_option_before_reading_data(tmp_path: Path) -> None:
    proc = run_cli("finetune", "sft", "--data", str(tmp_path / "missing.jsonl"), "--output",
                   str(tmp_path / "out"), "--truncation", "middle", "--lora-layers", "0",
                   "--grad-accum", "0", home=tmp_path / "home")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "agent: error: --lora-layers: must be at least 1 (got 0)",
        "agent: error: --grad-accum: must be at least 1 (got 0)",
        "agent: error: --truncation: must be 'keep_start' or 'keep_end' (got 'middle')",
    ]


def test_eval_refuses_zero_workers_before_loading_the_suite(tmp_path: Path) -> None:
    proc = run_cli("eval", str(tmp_path / "no-suite"), "--workers", "0", "--max-steps", "0",
                   home=tmp_path / "home")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "agent: error: --workers: must be at least 1 (got 0)",
        "agent: error: --max-steps: must be at least 1 (got 0)",
    ]
