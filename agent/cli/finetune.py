"""`agent eval` and `agent finetune ...`: task suites, the curriculum, oracle data, SFT, GRPO,
merging and reports. The training code lives in `finetune/`, imported only when a command runs,
so the agent itself never needs the training extras; only the run configs (pydantic models)
are read here, for the options' defaults and help (`agent.cli.options.config_option`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agent.cli.options import TOOLS_HELP, build_config, check_tools, config_option
from finetune.eval_config import EvalOptions
from finetune.grpo_config import GRPORunConfig
from finetune.sft_config import SFTRunConfig

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
    for key, title in (("by_kind", "by kind"), ("fix_in_view", "fix in view")):
        if summary.get(key):
            print(f"{title}: " + "  ".join(f"{name} {c['passed']}/{c['episodes']}"
                                           for name, c in summary[key].items()))
    if summary["broken_tasks"]:
        print(f"broken tasks (not counted): {', '.join(summary['broken_tasks'])}")
    if summary["errors"]:
        print(f"episodes that failed to run (not counted): {summary['errors']}")
    if "selected_pass@1" in summary:  # --samples N
        selectors = "  ".join(f"{name} {value:.3f}"
                              for name, value in summary["selectors"].items())
        print(f"single pass@1 {summary['single_pass@1']:.3f}  selected pass@1 "
              f"{summary['selected_pass@1']:.3f}  pass@n {summary['pass@n']:.3f}  "
              f"(selectors: {selectors}; {summary['mean_task_s']:.0f}s per task)")


def eval_command(
    ctx: typer.Context,
    suite: Annotated[Path, typer.Argument(help="Suite directory (holds tasks.jsonl).")],
    model: str = config_option(EvalOptions, "model"),
    api_base: str | None = config_option(EvalOptions, "api_base"),
    adapter: str | None = config_option(EvalOptions, "adapter"),
    episodes: int = config_option(EvalOptions, "episodes"),
    samples: int | None = config_option(EvalOptions, "samples"),
    judge: bool = config_option(EvalOptions, "judge"),
    stop_when_agree: int | None = config_option(EvalOptions, "stop_when_agree"),
    split: str = config_option(EvalOptions, "split", help="train, test, or all."),
    limit: int | None = config_option(EvalOptions, "limit"),
    workers: int = config_option(EvalOptions, "workers"),
    executor_kind: str = config_option(EvalOptions, "executor.kind", "--executor"),
    executor_ray_address: str | None = config_option(EvalOptions, "executor.ray_address",
                                                     "--ray-address"),
    executor_episode_cpus: float = config_option(EvalOptions, "executor.episode_cpus",
                                                 "--episode-cpus"),
    episode_max_steps: int = config_option(EvalOptions, "episode.max_steps", "--max-steps",
                                           help="Model calls per episode."),
    episode_llm_max_tokens: int = config_option(EvalOptions, "episode.llm.max_tokens",
                                                "--max-tokens"),
    temperature: float | None = config_option(EvalOptions, "temperature"),
    episode_repeat_guard: bool = config_option(EvalOptions, "episode.repeat_guard",
                                               "--repeat-guard/--no-repeat-guard"),
    episode_llm_tool_grammar: str = config_option(EvalOptions, "episode.llm.tool_grammar",
                                                  "--tool-grammar"),
    episode_context_repo_map_tokens: int = config_option(
        EvalOptions, "episode.context.repo_map_tokens", "--repo-map-tokens"),
    output_dir: Path | None = config_option(EvalOptions, "output_dir"),  # noqa: B008
    save: Annotated[Path | None, typer.Option(help="Also write the report JSON here.")] = None,
    episode_tools: str | None = config_option(EvalOptions, "episode.tools", "--tools",
                                              callback=check_tools, help=TOOLS_HELP),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Evaluate a model on a task suite: pass@1, pass@K, format errors, steps, tokens.

    Every task of the split runs K times, in parallel sandboxes (here, or with --executor ray
    on a Ray cluster); every episode is recorded as a trajectory."""
    from finetune.evaluate import evaluate

    if samples is not None and episodes > 1:
        raise _fail("give --episodes K (pass@K of independent episodes) or --samples N (N "
                    "attempts and the one selected), not both", 2)
    if stop_when_agree is not None and not 2 <= stop_when_agree <= (samples or 1):
        raise _fail(f"--stop-when-agree must be between 2 and --samples, not {stop_when_agree}",
                    2)
    options = build_config(EvalOptions, ctx, split=None if split == "all" else split)
    loaded = _load_suite(suite)
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
    vary_names: Annotated[bool, typer.Option(
        help="Train tasks get varied names, issue-like statements and twins of the buggy "
             "line.")] = True,
    vary_packages: Annotated[bool, typer.Option(
        help="Train tasks get package names drawn from a wide pool, not their domain's.")] = False,
    mistake_share: Annotated[float, typer.Option(
        help="Share of train tasks whose oracle first makes a refused edit and recovers.")
    ] = 0.0,
) -> None:
    """Generate the built-in curriculum: small repositories with one failing test each.

    The test split is the same task for task whatever the train split's options."""
    from finetune.curriculum import generate_curriculum

    try:
        path = generate_curriculum(dest, train=train, test=test, seed=seed, force=force,
                                   vary_train=vary_names, vary_packages=vary_packages,
                                   mistake_share=mistake_share)
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


@finetune_app.command("locate-oracles")
def locate_oracles_command(
    suite: Annotated[Path, typer.Argument(help="A synthesized suite (its tasks name the "
                                          "changed path and function).")],
    out: Annotated[Path, typer.Option(help="The suite with locate-first oracles goes here.")],
    max_rank: Annotated[int, typer.Option(help="Rewrite the oracle when `locate` ranks the "
                                          "changed function at most this far down.")] = 5,
    workers: Annotated[int, typer.Option(help="Sandboxes at once.")] = 2,
) -> None:
    """Oracles that find the bug with `locate` (fault localisation) instead of a grep for a
    name the statement may not give; train with `--tools core,locate`."""
    from finetune.locate_oracles import locate_suite, with_locate_oracles

    loaded = _load_suite(suite)

    def show(run: Any) -> None:
        print(f"{run.instance_id}: rank {run.rank}  {run.seconds:.1f}s  {run.error[:120]}",
              flush=True)

    runs = locate_suite(loaded, workers=workers, on_task=show)
    folder, changed = with_locate_oracles(loaded, runs, out, max_rank)
    listed = [r.rank for r in runs if r.rank is not None]
    print(f"{len(runs)} tasks: rank 1 {listed.count(1)}, listed {len(listed)}; "
          f"{changed} oracles now start with locate: {folder}")


@finetune_app.command("sft")
def sft_command(
    ctx: typer.Context,
    output_dir: Annotated[Path, config_option(SFTRunConfig, "output_dir", "--output")],
    data: Annotated[Path | None, typer.Option(help="SFT JSONL (from `agent finetune oracle` "
                                              "or `agent trajectories export`).")] = None,
    from_store: Annotated[bool, typer.Option(help="Use the indexed trajectories with "
                                             "reward 1.")] = False,
    store_model: Annotated[str | None, typer.Option(help="--from-store: only this model.")]
    = None,
    store_task: Annotated[str | None, typer.Option(help="--from-store: only this task.")]
    = None,
    store_limit: Annotated[int | None, typer.Option(help="--from-store: at most N.")] = None,
    include_unverified: Annotated[bool, typer.Option(
        help="--data: also train on rows with no reward yet (reward null, e.g. imported from "
        "other agents).")] = False,
    through_edit: Annotated[bool, typer.Option(
        help="Train on each conversation up to its last edit only (the repair; rows without "
        "an edit are dropped).")] = False,
    model: str = config_option(SFTRunConfig, "model"),
    init_adapter: Path | None = config_option(SFTRunConfig, "init_adapter"),  # noqa: B008
    lora_r: int = config_option(SFTRunConfig, "lora.r"),
    lora_alpha: int = config_option(SFTRunConfig, "lora.alpha"),
    lora_last_layers: int | None = config_option(SFTRunConfig, "lora.last_layers",
                                                 "--lora-layers"),
    learning_rate: float = config_option(SFTRunConfig, "learning_rate"),
    max_steps: int = config_option(SFTRunConfig, "max_steps"),
    epochs: float = config_option(SFTRunConfig, "epochs"),
    gradient_accumulation_steps: int = config_option(SFTRunConfig,
                                                     "gradient_accumulation_steps",
                                                     "--grad-accum"),
    max_length: int | None = config_option(SFTRunConfig, "max_length"),
    truncation_mode: str = config_option(SFTRunConfig, "truncation_mode", "--truncation",
                                         help="keep_start or keep_end (with --max-length)."),
    bf16: bool = config_option(SFTRunConfig, "bf16"),
    seed: int = config_option(SFTRunConfig, "seed"),
) -> None:
    """Supervised fine-tuning (LoRA) on verified trajectories, loss on assistant tokens only."""
    config = build_config(SFTRunConfig, ctx)
    from finetune.sft import run_sft
    from finetune.sft_data import DataError, load_rows, rows_from_store, through_last_edit
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
        if through_edit:
            cut = [r for r in map(through_last_edit, rows) if r is not None]
            _note(f"{len(rows) - len(cut)} conversations without an edit dropped")
            rows, source = cut, f"{source}, through the last edit"
        _note(f"training on {len(rows)} conversations")
        metrics = run_sft(rows, config, source=source)
    except (DataError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps(metrics))
    print(f"adapter: {output_dir}  (use: agent eval SUITE --adapter {output_dir})")


@finetune_app.command("grpo")
def grpo_command(
    ctx: typer.Context,
    suite: Annotated[Path, config_option(GRPORunConfig, "suite")],
    output_dir: Annotated[Path, config_option(GRPORunConfig, "output_dir", "--output")],
    model: str = config_option(GRPORunConfig, "model"),
    adapter: Path | None = config_option(GRPORunConfig, "adapter"),  # noqa: B008
    split: str = config_option(GRPORunConfig, "split"),
    skip: int = config_option(GRPORunConfig, "skip"),
    limit: int | None = config_option(GRPORunConfig, "limit"),
    num_generations: int = config_option(GRPORunConfig, "num_generations"),
    workers: int | None = config_option(GRPORunConfig, "workers"),
    max_steps: int = config_option(GRPORunConfig, "max_steps"),
    learning_rate: float = config_option(GRPORunConfig, "learning_rate"),
    beta: float = config_option(GRPORunConfig, "beta"),
    format_reward_weight: float = config_option(GRPORunConfig, "format_reward_weight"),
    temperature: float = config_option(GRPORunConfig, "temperature"),
    episode_max_steps: int = config_option(GRPORunConfig, "episode_max_steps"),
    max_tokens: int = config_option(GRPORunConfig, "max_tokens"),
    repo_map_tokens: int = config_option(GRPORunConfig, "repo_map_tokens"),
    dynamic_sampling: bool = config_option(GRPORunConfig, "dynamic_sampling"),
    task_history: Path | None = config_option(GRPORunConfig, "task_history"),  # noqa: B008
    lora_r: int = config_option(GRPORunConfig, "lora.r",
                                help="LoRA rank of a new adapter (alpha is twice it)."),
    lora_last_layers: int | None = config_option(GRPORunConfig, "lora.last_layers",
                                                 "--lora-layers"),
    rollout_server: str | None = config_option(GRPORunConfig, "rollout_server"),
    rollout_model: str | None = config_option(GRPORunConfig, "rollout_model"),
    rollout_tool_choice: str = config_option(GRPORunConfig, "rollout_tool_choice"),
    rollout_server_sync: bool = config_option(GRPORunConfig, "rollout_server_sync"),
    executor_kind: str = config_option(GRPORunConfig, "executor.kind", "--executor"),
    executor_ray_address: str | None = config_option(GRPORunConfig, "executor.ray_address",
                                                     "--ray-address"),
    executor_episode_cpus: float = config_option(GRPORunConfig, "executor.episode_cpus",
                                                 "--episode-cpus"),
    bf16: bool = config_option(GRPORunConfig, "bf16"),
    seed: int = config_option(GRPORunConfig, "seed"),
    tools: str | None = config_option(GRPORunConfig, "tools", callback=check_tools,
                                      help=TOOLS_HELP),
    tool_grammar: str = config_option(GRPORunConfig, "tool_grammar"),
) -> None:
    """GRPO: each completion is a whole episode in its own sandbox, rewarded by the tests."""
    config = build_config(GRPORunConfig, ctx, lora_alpha=2 * lora_r)  # alpha / r = 2
    from finetune.grpo import run_grpo
    from finetune.suite import SuiteError

    try:
        metrics = run_grpo(config)
    except (SuiteError, LookupError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    print(json.dumps(metrics))
    print(f"{metrics['groups_all_equal']} of {metrics['groups']} groups had all-equal rewards "
          "(no learning signal)")
    if "groups_redrawn" in metrics:
        print(f"dynamic sampling: {metrics['groups_redrawn']} groups redrawn from an all-equal "
              f"task, {metrics['groups_without_informative_task']} with none left to draw")
    print(f"adapter: {output_dir}")


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
