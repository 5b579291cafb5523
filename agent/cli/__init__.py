"""The `agent` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.finetune import eval_command, finetune_app
from agent.cli.hooks import hooks_app
from agent.cli.mcp import mcp_app
from agent.cli.options import (
    CompactAtOption,
    ContextWindowOption,
    NetworkOption,
    RepoMapTokensOption,
    SandboxOption,
    ToolsOption,
    config_errors,
    config_option,
    limit_problem,
    text_file_problem,
)
from agent.cli.sessions import rewind_command, sessions_app, undo_command
from agent.cli.trajectories import replay_command, trajectories_app, verify_command
from agent.episode_config import DEFAULT_MODEL, LLMConfig
from agent.executor_config import EXECUTOR_KINDS, ExecutorConfig
from agent.samples_config import SAMPLED_TEMPERATURE, SamplesConfig, samples_problem

if TYPE_CHECKING:
    from agent.context import ContextConfig
    from agent.samples import SamplesResult
    from agent.session import Listener
    from agent.stream_json import StreamJsonPrinter

app = typer.Typer(
    help="apprentice: a coding agent that learns from its own work.",
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Local models: list and pull.", no_args_is_help=True)
sandbox_app = typer.Typer(help="The Docker sandbox image.", no_args_is_help=True)
examples_app = typer.Typer(help="Example repositories with a bug to fix.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(examples_app, name="examples")
app.add_typer(trajectories_app, name="trajectories")
app.add_typer(finetune_app, name="finetune")
app.command("eval")(eval_command)
app.add_typer(sessions_app, name="sessions")
app.add_typer(mcp_app, name="mcp")
app.add_typer(hooks_app, name="hooks")
app.command("undo")(undo_command)
app.command("rewind")(rewind_command)
app.command("verify")(verify_command)
app.command("replay")(replay_command)



def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line reason to stderr and return the exit to raise."""
    print(f"agent: error: {' '.join(message.split())}", file=sys.stderr)
    return typer.Exit(code)


def context_config(window: int | None, repo_map_tokens: int, compact_at: float) -> ContextConfig:
    """The context settings of `solve` and `tui`: compaction aims at 5/8 of where it starts."""
    from agent.context import ContextConfig


    return ContextConfig(context_window=window, repo_map_tokens=repo_map_tokens,
                         threshold=compact_at, target=min(0.5, compact_at * 0.625))


@app.callback(invoke_without_command=True)
def default_command(ctx: typer.Context) -> None:
    """With no command, `agent` opens the TUI on the current directory."""
    if not ctx.resilient_parsing and ctx.invoked_subcommand != "sessions":  # prune has its own
        from agent.cli.sessions import remove_orphans_at_start

        remove_orphans_at_start()
    if ctx.invoked_subcommand is None:
        tui()


@app.command()
def tui(
    repo: Annotated[Path, typer.Option(help="Git repository to work on.")] = Path("."),
    model: Annotated[str | None, typer.Option(help="litellm model name (default: the "
                                              "resumed session's, else the local model).")]
    = None,
    api_base: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue a recorded session (id).")]
    = None,
    sandbox: SandboxOption = "docker",
    network: NetworkOption = False,
    mode: Annotated[str | None, typer.Option(help="Permissions: auto (default in docker), ask "
                                             "(default in local), read-only.")] = None,
    max_steps: Annotated[int, typer.Option(help="Maximum model calls per message.")] = 30,
    context_window: ContextWindowOption = None,
    repo_map_tokens: RepoMapTokensOption = 512,
    compact_at: CompactAtOption = 0.8,
    tools: ToolsOption = None,
) -> None:
    """Open the interactive terminal app on a repository."""
    from tools.sandbox import SandboxConfig
    from tools.workspace import WorkspaceError, open_repository
    from tui.app import run_tui  # the one place the core reaches the TUI: to start it

    if sandbox not in ("docker", "local"):
        raise fail(f"--sandbox must be docker or local, not {sandbox!r}", 2)
    if mode not in (None, "auto", "ask", "read-only"):
        raise fail(f"--mode must be auto, ask or read-only, not {mode!r}", 2)
    problem = limit_problem(max_steps, context_window, repo_map_tokens)
    if problem:
        raise fail(problem, 2)
    try:
        open_repository(repo)
    except WorkspaceError as exc:
        raise fail(str(exc)) from None
    run_tui(repo, model=model, api_base=api_base, resume=resume, mode=mode, max_steps=max_steps,
            sandbox=SandboxConfig(kind=sandbox, network=network),
            context=context_config(context_window, repo_map_tokens, compact_at), tools=tools)


@app.command()
def solve(
    issue: Annotated[Path | None, typer.Argument(
        help="Markdown file with the issue to solve (or give --instance).")] = None,
    instance: Annotated[Path | None, typer.Option(
        help="SWE-bench instance file (JSON or JSONL) to solve instead of an issue file.")]
    = None,
    instance_id: Annotated[str | None, typer.Option(
        help="Which instance, when the --instance file holds several.")] = None,
    repo: Annotated[Path, typer.Option(help="Git repository to work on.")] = Path("."),
    model: Annotated[str, typer.Option(help="litellm model name.")] = DEFAULT_MODEL,
    api_base: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT adapter dir (local models).")] = None,
    test_cmd: Annotated[str | None, typer.Option(help="Test command (the reward).")] = None,
    setup: Annotated[str | None, typer.Option(
        help="Shell command run once, as root, to prepare the sandbox image (cached); replaces "
        "the setup of .apprentice.toml and the instance's `setup`.")] = None,
    sandbox: SandboxOption = "docker",
    network: NetworkOption = False,
    max_steps: Annotated[int, typer.Option(help="Maximum model calls.")] = 30,
    max_tokens: Annotated[int, typer.Option(help="Maximum tokens per model reply.")] = 1024,
    temperature: Annotated[float | None, typer.Option(
        help="Sampling temperature; default 0 (greedy) for one attempt, "
        f"{SAMPLED_TEMPERATURE} for --samples N > 1.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per model call.")] = 300.0,
    tool_grammar: str = config_option(LLMConfig, "tool_grammar", "--tool-grammar"),
    context_window: ContextWindowOption = None,
    repo_map_tokens: RepoMapTokensOption = 512,
    compact_at: CompactAtOption = 0.8,
    tools: ToolsOption = None,
    output_dir: Annotated[Path | None, typer.Option(help="Where patch and trajectory go.")]
    = None,
    samples: int = config_option(SamplesConfig, "samples"),
    max_samples: int = config_option(SamplesConfig, "max_samples"),
    workers: int | None = config_option(SamplesConfig, "workers"),
    stop_when_agree: int | None = config_option(SamplesConfig, "stop_when_agree"),
    judge: bool = config_option(SamplesConfig, "judge"),
    attempt_timeout: float | None = config_option(SamplesConfig, "attempt_timeout_s",
                                                  "--attempt-timeout"),
    executor: str = config_option(ExecutorConfig, "kind", "--executor",
                                  help="Where --samples attempts run: local (this process) or "
                                  "ray (a Ray cluster; the selector runs here)."),
    ray_address: str | None = config_option(ExecutorConfig, "ray_address"),
    output_format: Annotated[str, typer.Option(
        "--output-format", help="text (the patch and a summary; progress on stderr), json (one "
        "object at the end) or stream-json (one JSON object per line as the episode runs: its "
        "events, then the result; see the README).")] = "text",
    as_json: Annotated[bool, typer.Option(
        "--json", help="The same as --output-format json.")] = False,
    deltas: Annotated[bool, typer.Option(
        "--deltas", help="stream-json: stream the model's replies and print their pieces "
        "(assistant_delta lines) as they come.")] = False,
) -> None:
    """Solve an issue in a repository: one recorded episode, then the tests as the reward.

    With --samples N, N attempts run (each its own worktree, sandbox and trajectory) and the
    patch is picked by running them: the visible tests, the tests the attempts wrote, a vote
    over equal changes, and with --judge a model call as the last tie-breaker."""
    from agent.episode import EpisodeConfig
    from agent.llm import LLMConfig
    from agent.solve import solve as run_solve
    from agent.stream_json import OUTPUT_FORMATS, StreamJsonPrinter
    from agent.tasks import Task, TaskError, load_swebench_instance
    from tools.sandbox import SandboxConfig, SandboxError
    from tools.workspace import WorkspaceError, open_repository

    if sandbox not in ("docker", "local"):
        raise fail(f"--sandbox must be docker or local, not {sandbox!r}", 2)
    if (issue is None) == (instance is None):
        raise fail("give either an issue file or --instance FILE (a SWE-bench instance)", 2)
    if output_format not in OUTPUT_FORMATS:
        raise fail(f"--output-format must be {', '.join(OUTPUT_FORMATS[:-1])} or "
                   f"{OUTPUT_FORMATS[-1]}, not {output_format!r}", 2)
    if as_json and output_format == "stream-json":
        raise fail("--json means --output-format json; give one of them", 2)
    if deltas and output_format != "stream-json":
        raise fail("--deltas is for --output-format stream-json", 2)
    output_format = "json" if as_json else output_format
    streamed = StreamJsonPrinter(deltas=deltas) if output_format == "stream-json" else None
    if executor not in EXECUTOR_KINDS:
        raise fail(f"--executor must be local or ray, not {executor!r}", 2)
    if executor == "ray" and samples < 2:
        raise fail("--executor ray runs the attempts of --samples N (N > 1) on a Ray cluster; "
                   "one episode runs here", 2)
    if temperature is None:
        temperature = SAMPLED_TEMPERATURE if samples > 1 else 0.0
    problem = (limit_problem(max_steps, context_window, repo_map_tokens, timeout, max_tokens,
                             temperature)
               or samples_problem(samples, max_samples, stop_when_agree, workers)
               or (attempt_timeout is not None and not attempt_timeout > 0
                   and f"--attempt-timeout must be a positive number of seconds, not "
                   f"{attempt_timeout}") or None
               or (text_file_problem(issue, "issue file") if issue else None)
               or (text_file_problem(instance, "--instance file") if instance else None)
               or ("--setup is empty; give the shell command that prepares the image"
                   if setup is not None and not setup.strip() else None))
    if problem:
        raise fail(problem, 2)
    try:
        git_repo = open_repository(repo)
        root = Path(git_repo.working_tree_dir or repo)
        if instance is not None:
            task = Task.from_swebench(load_swebench_instance(instance, instance_id), root,
                                      test_cmd)
        else:
            assert issue is not None
            task = Task.from_issue_file(issue, root, test_cmd)
        if setup is not None:
            task = task.model_copy(update={"setup": setup})
        if sandbox == "local":
            print("agent: warning: --sandbox local runs commands on this machine with no "
                  "isolation", file=sys.stderr)
        if git_repo.is_dirty(untracked_files=True):
            print("agent: note: the repository has uncommitted changes; the session starts "
                  "from HEAD and leaves them untouched", file=sys.stderr)
        with config_errors():
            options = EpisodeConfig(
                llm=LLMConfig(model=model, api_base=api_base, adapter=adapter,
                              max_tokens=max_tokens, temperature=temperature, timeout=timeout,
                              tool_choice="required" if model.startswith("local/") else None,
                              tool_grammar=tool_grammar,
                              **({"stream": True} if deltas else {})),
                sandbox=SandboxConfig(kind=sandbox, network=network),
                max_steps=max_steps, output_dir=output_dir,
                context=context_config(context_window, repo_map_tokens, compact_at),
                tools=tools,
            )
        note = lambda m: print(f"agent: {m}", file=sys.stderr)  # noqa: E731
        group: SamplesResult | None = None
        if samples > 1:
            from agent.executor import open_executor
            from agent.samples import run_samples

            with config_errors():
                sampling = SamplesConfig(samples=samples, max_samples=max_samples,
                                         workers=workers, stop_when_agree=stop_when_agree,
                                         judge=judge, attempt_timeout_s=attempt_timeout)
            with open_executor(ExecutorConfig(kind=executor, ray_address=ray_address),
                               sampling.parallel) as attempts_on:
                group = run_samples(task, options, sampling,
                                    listeners=_listeners(streamed, None, output_format),
                                    attempt_listeners=lambda i: _listeners(streamed, i,
                                                                           output_format),
                                    note=note, executor=attempts_on)
        else:
            result = run_solve(task, options, listeners=_listeners(streamed, None,
                                                                   output_format), note=note)
    except (TaskError, WorkspaceError, SandboxError) as exc:
        raise _failed(streamed, str(exc)) from None
    except KeyboardInterrupt:
        raise _failed(streamed, "interrupted", 130) from None
    except Exception as exc:  # an unexpected failure still gets one readable line
        raise _failed(streamed, f"{type(exc).__name__}: {exc}") from None
    if group is not None:
        _report_samples(group, output_format, streamed)
        return
    if streamed is not None:
        from agent.stream_json import result_object

        streamed.result(result_object(result.to_json()))
    elif output_format == "json":
        print(result.to_json())
    else:
        print(result.redacted().patch or "(no changes)")
        usage = result.usage
        print(f"reward: {result.reward}  exit_status: {result.exit_status}  steps: "
              f"{usage.steps}  tokens: {usage.prompt_tokens}+{usage.completion_tokens}  "
              f"cost: ${usage.cost_usd:.4f}")
        print(f"branch: {result.branch}")
        print(f"patch: {result.patch_path}")
        print(f"trajectory: {result.trajectory_path}")
    if result.exit_status == "error":
        raise fail(result.redacted().error or "the episode ended with an error")


def _listeners(streamed: StreamJsonPrinter | None, attempt: int | None,
               output_format: str) -> list[Listener]:
    """What hears `solve`'s events: the stream-json printer, or in text mode the progress
    printer (stderr); nothing else in json mode."""
    from agent.solve import ProgressPrinter

    if streamed is not None:
        return [streamed if attempt is None else streamed.for_attempt(attempt)]
    if output_format != "text":
        return []
    return [ProgressPrinter(prefix="" if attempt is None else f"[attempt {attempt}] ")]


def _failed(streamed: StreamJsonPrinter | None, message: str, code: int = 1) -> typer.Exit:
    """`fail`, after the result line that says so when the output is stream-json."""
    if streamed is not None:
        streamed.failure(message)
    return fail(message, code)


def _report_samples(group: SamplesResult, output_format: str,
                    streamed: StreamJsonPrinter | None) -> None:
    """Print what `solve --samples N` found: the selected patch and every candidate."""
    chosen = group.selected
    if streamed is not None:
        from agent.stream_json import result_object

        streamed.result(result_object(group.to_json()))
    elif output_format == "json":
        print(group.to_json())
    else:
        print(chosen.result.redacted().patch or "(no changes)" if chosen and chosen.result
              else "(no attempt selected)")
        for row in group.candidates():
            signals = row["signals"]
            scores = " ".join(f"{name} {signals.get(name)}" for name in group.selection.used)
            mark = "  <- selected" if row["attempt"] == group.selection.selected else ""
            print(f"attempt {row['attempt']}: reward {row['reward']} {scores}"
                  + (f" (lost: {row['lost']})" if row["lost"] else "") + mark)
        print(f"ran: {len(group.attempts)} of {group.samples} attempts"
              + (" (stopped early: enough agreed)" if group.stopped_early else ""))
        print(f"selection: {group.selection_path}")
        if chosen and chosen.result:
            result = chosen.result
            print(f"reward: {result.reward}  branch: {result.branch}")
            print(f"trajectory: {result.trajectory_path}")
    if chosen is None:
        reasons = "; ".join(f"attempt {a.attempt}: {a.lost}" for a in group.attempts)
        raise fail(f"every attempt was lost: {reasons}")


@app.command("map")
def map_command(
    path: Annotated[Path, typer.Argument(help="Directory to map.")] = Path("."),
    tokens: Annotated[int, typer.Option(help="Size of the map in tokens.")] = 1024,
    focus: Annotated[list[str] | None, typer.Option(
        help="A file you are working on (boosts what it uses); repeatable.")] = None,
    mention: Annotated[str, typer.Option(
        help="Text (e.g. an issue) whose identifiers and file names get a boost.")] = "",
) -> None:
    """Print the repository map: the most referred-to definitions, fitted to --tokens."""
    from tools.repo_map import RepoMap

    if not path.is_dir():
        raise fail(f"{path} is not a directory")
    if tokens <= 0:
        raise fail("--tokens must be positive", 2)
    repo = RepoMap(path)
    try:
        stats = repo.refresh()
        text = repo.render(tokens, focus or [], mention)
    finally:
        repo.close()
    print(text or "(no Python, JavaScript, TypeScript, Go, Rust, Java, C or C++ files)")
    print(f"agent: {stats.files} files, {stats.parsed} parsed, {stats.seconds:.2f}s",
          file=sys.stderr)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the embedded models and whether they are pulled."""
    from agent.models import list_models

    rows = list_models()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        state = "pulled" if row.get("pulled") else "not pulled"
        print(f"{row['name']:20} {state:12} {row.get('path', '')}")


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument()] = "apprentice-135m") -> None:
    """Fetch and convert an embedded model (idempotent)."""
    from agent.models import pull_model

    try:
        path = pull_model(name, log=lambda m: print(m, file=sys.stderr))
    except Exception as exc:
        raise fail(str(exc)) from None
    print(path)


@sandbox_app.command("build")
def sandbox_build(
    offline: Annotated[bool, typer.Option(help="Build without a registry (debootstrap).")]
    = False,
    force: Annotated[bool, typer.Option(help="Rebuild even if the image exists.")] = False,
    tag: Annotated[str | None, typer.Option(help="Image tag.")] = None,
) -> None:
    """Build the sandbox image (from the Dockerfile, or offline with debootstrap)."""
    from tools.sandbox import DEFAULT_IMAGE, SandboxError
    from tools.sandbox.image import build_image

    try:
        image = build_image(tag=tag or DEFAULT_IMAGE, offline=offline, force=force,
                            log=lambda m: print(m, file=sys.stderr))
    except SandboxError as exc:
        raise fail(str(exc)) from None
    print(image)


@examples_app.command("init")
def examples_init(
    dest: Annotated[Path, typer.Argument(help="Directory to create the example in.")],
    name: Annotated[str, typer.Option(help="Which example.")] = "calculator",
    force: Annotated[bool, typer.Option(help="Recreate it if it exists.")] = False,
) -> None:
    """Create an example repository (dest/repo) and its issue (dest/issue.md)."""
    from agent.example_repos import init_example

    try:
        repo, issue = init_example(name, dest, force=force)
    except ValueError as exc:
        raise fail(str(exc)) from None
    print(f"repo: {repo}\nissue: {issue}")


def main() -> None:
    """The `agent` console script: the app, with file-system failures as one-line errors."""
    try:
        app()
    except OSError as exc:
        print(f"agent: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

