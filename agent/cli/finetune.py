"""`agent eval` and `agent finetune ...`: task suites, the curriculum, oracle data, SFT, GRPO,
merging and reports. The training code lives in `finetune/`, imported only when a command runs,
so the agent itself never needs the training extras."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli.options import ToolsOption, check_tools

finetune_app = typer.Typer(help="Train the agent's model on its own verified work (TRL + PEFT).",
                           no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"agent: error: {' '.join(message.split())}", file=sys.stderr)
    return typer.Exit(code)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load_suite(path: Path) -> Any:
    from finetune.suite import SuiteError, load_suite

    try:
        suite = load_suite(path)
    except SuiteError as exc:
        raise _fail(str(exc)) from None
    for problem in suite.problems:
        _note(f"agent: warning: {problem}")
    return suite


def _print_episode(outcome: Any) -> None:
    verdict = "error" if outcome.reward is None else f"reward {outcome.reward}"
    detail = f" ({outcome.error})" if outcome.error else ""
    _note(f"{outcome.instance_id}#{outcome.attempt}: {verdict}, {outcome.exit_status}, "
          f"{outcome.steps} steps, {outcome.duration_s:.0f}s{detail}")


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"tasks {summary['tasks']}  episodes {summary['episodes']}  "
          f"pass@1 {summary['pass@1']:.3f}  pass@k {summary['pass@k']:.3f}  "
          f"format errors {summary['format_error_rate']:.3f}  "
          f"mean steps {summary['mean_steps']:.1f}  mean tokens {summary['mean_tokens']:.0f}  "
          f"({summary.get('wall_time_s', 0):.0f}s)")
    if summary["broken_tasks"]:
        print(f"broken tasks (not counted): {', '.join(summary['broken_tasks'])}")
    if summary["errors"]:
        print(f"episodes that failed to run (not counted): {summary['errors']}")


def eval_command(
    suite: Annotated[Path, typer.Argument(help="Suite directory (holds tasks.jsonl).")],
    model: Annotated[str, typer.Option(help="litellm model, or `oracle` (the scripted policy "
                                       "that knows each fix).")] = "local/smollm2-135m",
    api_base: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT adapter dir (local models).")] = None,
    episodes: Annotated[int, typer.Option(help="Episodes per task (K of pass@K).")] = 1,
    split: Annotated[str, typer.Option(help="train, test, or all.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first N tasks.")] = None,
    workers: Annotated[int, typer.Option(help="Episodes at once (one sandbox each); 1 is "
                                         "fastest for an in-process local model.")] = 4,
    max_steps: Annotated[int, typer.Option(help="Model calls per episode.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Tokens per model reply.")] = 256,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature (default 0, or 0.7 when --episodes > 1).")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Trajectories and report.json.")]
    = None,
    save: Annotated[Path | None, typer.Option(help="Also write the report JSON here.")] = None,
    tools: ToolsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Evaluate a model on a task suite: pass@1, pass@K, format errors, steps, tokens.

    Every task of the split runs K times, in parallel sandboxes; every episode is recorded as
    a trajectory."""
    from agent.episode import EpisodeConfig
    from agent.llm import LLMConfig
    from finetune.evaluate import EvalOptions, evaluate

    loaded = _load_suite(suite)
    episode = EpisodeConfig(max_steps=max_steps, llm=LLMConfig(max_tokens=max_tokens),
                            tools=tools)
    options = EvalOptions(model=model, api_base=api_base, adapter=adapter, episodes=episodes,
                          split=None if split == "all" else split, limit=limit, workers=workers,
                          temperature=temperature, output_dir=output_dir, episode=episode)
    if not loaded.split(options.split):
        raise _fail(f"suite {loaded.path} has no tasks in split {split!r}")
    try:
        report = evaluate(loaded, options, on_episode=_print_episode)
    except KeyboardInterrupt:
        raise _fail("interrupted", 130) from None
    if save:
        report.save(save)
    if as_json:
        print(report.to_json())
    else:
        _print_summary(report.summary)
        print(f"report: {Path(report.output_dir) / 'report.json'}")


@finetune_app.command("curriculum")
def curriculum_command(
    dest: Annotated[Path, typer.Argument(help="Directory to write the suite into.")],
    train: Annotated[int, typer.Option(help="Tasks in the train split.")] = 64,
    test: Annotated[int, typer.Option(help="Tasks in the held-out test split.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing suite.")] = False,
) -> None:
    """Generate the built-in curriculum: small repositories with one failing test each."""
    from finetune.curriculum import generate_curriculum

    try:
        path = generate_curriculum(dest, train=train, test=test, seed=seed, force=force)
    except FileExistsError as exc:
        raise _fail(str(exc)) from None
    print(path)


@finetune_app.command("oracle")
def oracle_command(
    suite: Annotated[Path, typer.Argument(help="Suite whose tasks carry oracle scripts.")],
    output: Annotated[Path, typer.Option(help="Episodes and sft.jsonl go here.")],
    split: Annotated[str, typer.Option(help="Which split.")] = "train",
    limit: Annotated[int | None, typer.Option(help="Only the first N tasks.")] = None,
    workers: Annotated[int, typer.Option(help="Episodes at once.")] = 4,
    tools: Annotated[str | None, typer.Option(
        callback=check_tools, help="The tools of the model the data will train: full, core "
        "(small local models) or names. Default: core.")] = None,
) -> None:
    """Warm-start data: the oracle policy solves the split through the real agent loop.

    The verified trajectories become SFT rows in OUTPUT/sft.jsonl."""
    from finetune.warm_start import SFT_FILE, oracle_trajectories

    loaded = _load_suite(suite)
    report, rows = oracle_trajectories(loaded, output, split=split, workers=workers,
                                       limit=limit, tools=tools, on_episode=_print_episode)
    _print_summary(report.summary)
    print(f"{len(rows)} verified conversations: {Path(output) / SFT_FILE}")


@finetune_app.command("sft")
def sft_command(
    output: Annotated[Path, typer.Option(help="Output directory (adapter, manifest, curves).")],
    data: Annotated[Path | None, typer.Option(help="SFT JSONL (from `agent finetune oracle` "
                                              "or `agent trajectories export`).")] = None,
    from_store: Annotated[bool, typer.Option(help="Use the indexed trajectories with "
                                             "reward 1.")] = False,
    store_model: Annotated[str | None, typer.Option(help="--from-store: only this model.")]
    = None,
    store_task: Annotated[str | None, typer.Option(help="--from-store: only this task.")]
    = None,
    store_limit: Annotated[int | None, typer.Option(help="--from-store: at most N.")] = None,
    model: Annotated[str, typer.Option(help="Base model: known name or directory.")]
    = "smollm2-135m",
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    lora_layers: Annotated[int | None, typer.Option(help="Adapt only the last N blocks "
                                                    "(faster on a CPU).")] = None,
    learning_rate: Annotated[float, typer.Option(help="Learning rate.")] = 2e-4,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps (-1: --epochs).")] = -1,
    epochs: Annotated[float, typer.Option(help="Epochs when --max-steps is -1.")] = 1.0,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    max_length: Annotated[int | None, typer.Option(help="Cut longer conversations.")] = None,
    truncation: Annotated[str, typer.Option(help="keep_start or keep_end (with --max-length)."
                                            )] = "keep_start",
    bf16: Annotated[bool, typer.Option(help="bfloat16 (GPUs); float32 otherwise.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    include_unverified: Annotated[bool, typer.Option(
        help="--data: also train on rows with no reward yet (reward null, e.g. imported from "
        "other agents).")] = False,
) -> None:
    """Supervised fine-tuning (LoRA) on verified trajectories, loss on assistant tokens only."""
    from pydantic import ValidationError

    from finetune.sft import LoraSettings, SFTRunConfig, run_sft
    from finetune.sft_data import DataError, load_rows, rows_from_store
    from trajectories.store import TrajectoryStore

    if (data is None) == (not from_store):
        raise _fail("give exactly one of --data FILE and --from-store", 2)
    try:
        if data is not None:
            rows, source = load_rows(data, include_unverified=include_unverified), str(data)
        else:
            store = TrajectoryStore()
            try:
                rows = rows_from_store(store, model=store_model, task=store_task,
                                       limit=store_limit)
            finally:
                store.close()
            source = f"store:{store.path}"
        lora = LoraSettings(r=lora_r, alpha=lora_alpha, last_layers=lora_layers)
        config = SFTRunConfig(
            model=model, output_dir=output, lora=lora, learning_rate=learning_rate,
            max_steps=max_steps, epochs=epochs, gradient_accumulation_steps=grad_accum,
            max_length=max_length, truncation_mode=truncation, bf16=bf16, seed=seed)
        _note(f"training on {len(rows)} conversations")
        metrics = run_sft(rows, config, source=source)
    except (DataError, LookupError, FileNotFoundError, ValidationError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps(metrics))
    print(f"adapter: {output}  (use: agent eval SUITE --adapter {output})")


@finetune_app.command("grpo")
def grpo_command(
    suite: Annotated[Path, typer.Option(help="Task suite directory.")],
    output: Annotated[Path, typer.Option(help="Output directory.")],
    model: Annotated[str, typer.Option(help="Base model: known name or directory.")]
    = "smollm2-135m",
    adapter: Annotated[Path | None, typer.Option(help="Start from this adapter (SFT's).")]
    = None,
    split: Annotated[str, typer.Option(help="Split whose tasks train.")] = "train",
    skip: Annotated[int, typer.Option(help="Leave out the split's first N tasks (e.g. the "
                                      "ones SFT trained on).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Only the first N tasks (after --skip).")]
    = None,
    num_generations: Annotated[int, typer.Option(help="Episodes per task per step (G).")] = 4,
    workers: Annotated[int | None, typer.Option(help="Episodes at once (default G; 1 is "
                                                "fastest with an in-process CPU model).")]
    = None,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps (one group each).")] = 10,
    learning_rate: Annotated[float, typer.Option(help="Learning rate.")] = 2e-5,
    beta: Annotated[float, typer.Option(help="KL coefficient (0: no reference model).")] = 0.0,
    format_reward_weight: Annotated[float, typer.Option(help="Weight of the format reward "
                                                        "(0: logged only).")] = 0.1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    episode_max_steps: Annotated[int, typer.Option(help="Model calls per episode.")] = 6,
    max_tokens: Annotated[int, typer.Option(help="Tokens per model reply.")] = 128,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (new adapters).")] = 16,
    lora_layers: Annotated[int | None, typer.Option(help="Adapt only the last N blocks "
                                                    "(new adapters).")] = None,
    bf16: Annotated[bool, typer.Option(help="bfloat16 (GPUs); float32 otherwise.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    tools: ToolsOption = None,
) -> None:
    """GRPO: each completion is a whole episode in its own sandbox, rewarded by the tests."""
    from finetune.grpo import GRPORunConfig, run_grpo
    from finetune.sft import LoraSettings
    from finetune.suite import SuiteError

    config = GRPORunConfig(
        suite=suite, split=split, skip=skip, limit=limit, model=model, adapter=adapter,
        output_dir=output,
        lora=LoraSettings(r=lora_r, alpha=2 * lora_r, last_layers=lora_layers),
        num_generations=num_generations, max_steps=max_steps, learning_rate=learning_rate,
        beta=beta, format_reward_weight=format_reward_weight, temperature=temperature,
        episode_max_steps=episode_max_steps, max_tokens=max_tokens, workers=workers, bf16=bf16,
        seed=seed, tools=tools)
    try:
        metrics = run_grpo(config)
    except (SuiteError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps(metrics))
    print(f"{metrics['groups_all_equal']} of {metrics['groups']} groups had all-equal rewards "
          "(no learning signal)")
    print(f"adapter: {output}")


@finetune_app.command("merge")
def merge_command(
    run: Annotated[Path, typer.Argument(help="Training output directory (an adapter).")],
    out: Annotated[Path | None, typer.Option(help="Where the merged model goes "
                                             "(default RUN/merged).")] = None,
) -> None:
    """Fold the adapter into its base model: a folder transformers and vLLM load."""
    from finetune.merge import merge_adapter

    try:
        path = merge_adapter(run, out)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from None
    print(path)


@finetune_app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="Training output directory.")],
    eval_reports: Annotated[list[str] | None, typer.Option(
        "--eval", help="LABEL=REPORT.json of an `agent eval` (repeatable); RUN/evals/*.json "
        "are included too.")] = None,
) -> None:
    """Plot a run's curves (RUN/report.png) and write RUN/report.md with the eval table.

    The PNG shows loss, reward and episode length over steps."""
    from finetune.report import write_report

    given: dict[str, Path] = {}
    for item in eval_reports or []:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise _fail(f"--eval {item!r}: give LABEL=PATH of an existing report.json", 2)
        given[label] = Path(path)
    if not Path(run).is_dir():
        raise _fail(f"{run} is not a directory")
    png, md = write_report(run, given)
    print(png)
    print(md)

from agent.cli import synthesis  # noqa: E402,F401  (registers `synthesize`)
