"""`agent eval`: run every task of a suite split K times in parallel sandboxes and measure.

Each episode is a real `agent.solve` run (recorded as a trajectory, judged by the tests) on a
fresh clone of the task's repository. Reported: pass@1 (mean reward), pass@K (a task counts if
any of its K episodes passed), the format-error rate (model replies without a valid call to a
known tool), mean steps and tokens per episode. A task that cannot even be set up (a missing
bundle, an unknown base commit) is reported under `broken` and left out of the rates; it never
stops the run.

With `samples` N, each task is instead one group of N attempts (`agent.samples`, as `agent
solve --samples N`), the tasks one after another and each group's attempts `workers` at a
time; reported as well, per task and overall: the selected patch's pass@1 (best-of-N by the
selector, which never sees the rewards), pass@N (the oracle's upper bound) and what the
selector would have picked with the tests only and with the vote (`selectors`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.episode import Episode, EpisodeConfig
from agent.executor import EpisodeExecutor, open_executor
from agent.samples import AttemptRunner, SamplesConfig, SamplesResult, run_samples
from agent.selection import selector_signals
from agent.solve import SolveResult, solve
from agent.tasks import Task
from finetune.episode_jobs import suite_job
from finetune.eval_config import EvalOptions
from finetune.oracle import ORACLE_MODEL, ORACLE_TOOL_SET, ScriptedPolicyServer
from finetune.suite import Suite, SuiteError, SuiteTask, checkout_task
from tools.base import ToolBox
from tools.control import default_tools
from tools.locations import data_dir
from tools.sandbox.pool import SandboxPool
from trajectories.events import AssistantMessage, ExitStatus, SessionStarted, ToolCall
from trajectories.reader import read_trajectory


@dataclass
class EpisodeOutcome:
    """One episode of one task, or why it could not run."""

    instance_id: str
    attempt: int
    reward: int | None = None
    exit_status: ExitStatus = "error"
    steps: int = 0
    model_calls: int = 0
    format_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    trajectory_path: str | None = None
    error: str | None = None
    broken: bool = False
    """The task itself could not be set up (reported, left out of the rates)."""


@dataclass
class GroupOutcome:
    """One task's group of attempts (`EvalOptions.samples`): what each selector picked."""

    instance_id: str
    samples: int
    ran: int = 0
    rewards: list[int] = field(default_factory=list)
    selected: int | None = None
    selected_reward: int = 0
    picks: dict[str, int | None] = field(default_factory=dict)
    """Selector (`tests`, `tests+vote`, `tests+vote+judge`) -> the reward of its pick."""
    selection_path: str | None = None
    duration_s: float = 0.0
    error: str | None = None
    broken: bool = False


@dataclass
class EvalReport:
    """The figures of one evaluation, with every episode."""

    suite: str
    suite_digest: str
    split: str | None
    model: str
    adapter: str | None
    episodes_per_task: int
    summary: dict[str, Any]
    episodes: list[EpisodeOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    output_dir: str = ""
    groups: list[GroupOutcome] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path


_TOOLS = ToolBox(default_tools())


def is_valid_call(call: ToolCall, offered: Collection[str] | None = None) -> bool:
    """A call to a known tool (one of `offered`, when given) whose arguments are a JSON object
    its schema accepts (`ToolBox.validate`, the check every call goes through)."""
    if offered is not None and call.name not in offered:
        return False
    return not isinstance(_TOOLS.validate(call.name, call.arguments), str)


def format_errors(path: Path) -> tuple[int, int]:
    """(model calls, replies that were format errors) of a recorded episode."""
    events = read_trajectory(path).events
    started = next((e for e in events if isinstance(e, SessionStarted)), None)
    offered = {t.get("function", t).get("name") for t in started.tools} if started else None
    replies = [e for e in events if isinstance(e, AssistantMessage)]
    bad = [r for r in replies if not r.tool_calls or not all(is_valid_call(c, offered)
                                                              for c in r.tool_calls)]
    return len(replies), len(bad)


def run_task_episode(suite: Suite, task: SuiteTask, config: EpisodeConfig,
                     pool: SandboxPool | None = None) -> SolveResult:
    """One recorded, verified episode on a fresh clone of the task's repository (with a
    sandbox from `pool` when given)."""
    with tempfile.TemporaryDirectory(prefix="apprentice-episode-") as tmp:
        return solve(checkout_task(suite, task, Path(tmp) / "repo"), config, pool=pool)


def _episode_config(options: EvalOptions, out_dir: Path) -> EpisodeConfig:
    """Each episode's settings: the policy's model, unless the oracle serves each one."""
    config = options.episode.model_copy(update={"output_dir": out_dir})
    if options.model == ORACLE_MODEL:
        return config
    return config.model_copy(update={"llm": options.llm()})


def _outcome(task: SuiteTask, attempt: int, running: Future[SolveResult],
             started: float) -> EpisodeOutcome:
    """The outcome of a finished episode, or why it could not run."""
    outcome = EpisodeOutcome(task.instance_id, attempt)
    try:
        result = running.result()
    except SuiteError as exc:
        outcome.error, outcome.broken = str(exc), True
        return outcome
    except Exception as exc:  # one failing episode must not end the evaluation
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    finally:
        outcome.duration_s = round(time.monotonic() - started, 2)
    outcome.duration_s = round(result.duration_s, 2)
    return _with_result(outcome, result)


def _run_episodes(suite: Suite, jobs: list[tuple[SuiteTask, int]], options: EvalOptions,
                  out_dir: Path, on_episode: Callable[[EpisodeOutcome], None] | None
                  ) -> list[EpisodeOutcome]:
    """Every (task, attempt) through the executor (`options.executor`), as they finish."""
    remote = options.executor.kind != "local"
    oracle = options.model == ORACLE_MODEL
    episodes: list[EpisodeOutcome] = []
    with contextlib.ExitStack() as stack:
        warm = None if remote else stack.enter_context(SandboxPool(
            options.episode.sandbox, size=min(options.workers, len(jobs) or 1)))
        executor = stack.enter_context(open_executor(options.executor, options.workers, warm))
        running: dict[Future[SolveResult], tuple[SuiteTask, int, float]] = {}
        for task, attempt in jobs:
            where = out_dir / task.instance_id / str(attempt)
            job = suite_job(suite, task, _episode_config(options, where), where, oracle,
                            portable=remote)
            running[executor.submit(job).future] = (task, attempt, time.monotonic())
        for future in as_completed(running):
            outcome = _outcome(*running[future][:2], future, running[future][2])
            episodes.append(outcome)
            if on_episode:
                on_episode(outcome)
    return episodes


def _with_result(outcome: EpisodeOutcome, result: SolveResult) -> EpisodeOutcome:
    """`outcome` filled in from the episode's result and its trajectory."""
    calls, bad = format_errors(Path(result.trajectory_path))
    outcome.reward, outcome.exit_status, outcome.steps = result.reward, result.exit_status, \
        result.usage.steps
    outcome.model_calls, outcome.format_errors = calls, bad
    outcome.prompt_tokens, outcome.completion_tokens = result.usage.prompt_tokens, \
        result.usage.completion_tokens
    outcome.trajectory_path = result.trajectory_path
    outcome.error = result.error
    return outcome


def attempt_runner(task: SuiteTask, options: EvalOptions,
                   pool: SandboxPool | None) -> AttemptRunner:
    """How each attempt of a group runs: `solve` with the policy, or with a fresh oracle
    server per attempt (its script is spent by one episode)."""
    def run(repo_task: Task, config: EpisodeConfig,
            on_open: Callable[[Episode], None]) -> SolveResult:
        if options.model != ORACLE_MODEL:
            return solve(repo_task, config, pool=pool, on_open=on_open)
        if not task.oracle:
            raise SuiteError(f"task {task.instance_id} has no oracle script")
        with ScriptedPolicyServer(task.oracle) as server:
            return solve(repo_task, config.model_copy(update={
                "llm": server.llm_config(), "tools": config.tools or ORACLE_TOOL_SET}),
                pool=pool, on_open=on_open)
    return run


def selector_picks(group: SamplesResult) -> dict[str, int | None]:
    """The reward each selector's pick has, from the same runs: the tests only, + the vote,
    and + the judge where it was asked."""
    rewards = dict(zip([a.attempt for a in group.attempts], group.rewards, strict=True))
    used = group.selection.used
    selectors = {"tests": selector_signals(vote=False),
                 "tests+vote": selector_signals(vote=True)}
    if "judge" in used:
        selectors["tests+vote+judge"] = used
    picks: dict[str, int | None] = {}
    for name, signals in selectors.items():
        pick = group.selection.pick(signals)
        picks[name] = None if pick is None else rewards[pick]
    return picks


RunnerFactory = Callable[[SuiteTask, EvalOptions, SandboxPool | None], AttemptRunner]
"""Makes the attempt runner of a task's group; `attempt_runner` unless a bench brings one."""


def _group(suite: Suite, task: SuiteTask, options: EvalOptions, out_dir: Path,
           pool: SandboxPool | None, runners: RunnerFactory = attempt_runner,
           executor: EpisodeExecutor | None = None
           ) -> tuple[GroupOutcome, list[EpisodeOutcome]]:
    """One task's attempts and their selection (`options.samples`)."""
    samples = options.samples or 1
    outcome = GroupOutcome(task.instance_id, samples)
    started = time.monotonic()
    config = options.episode.model_copy(update={"output_dir": out_dir})
    if options.model != ORACLE_MODEL:
        config = config.model_copy(update={"llm": options.llm()})
    sampling = SamplesConfig(samples=samples, max_samples=samples, workers=options.workers,
                             stop_when_agree=options.stop_when_agree,
                             judge=options.judge and options.model != ORACLE_MODEL)
    try:
        with tempfile.TemporaryDirectory(prefix="apprentice-group-") as tmp:
            repo_task = checkout_task(suite, task, Path(tmp) / "repo")
            group = run_samples(repo_task, config, sampling, pool=pool,
                                runner=runners(task, options, pool), executor=executor)
    except SuiteError as exc:
        outcome.error, outcome.broken = str(exc), True
        return outcome, []
    except Exception as exc:  # one failing task must not end the evaluation
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome, []
    finally:
        outcome.duration_s = round(time.monotonic() - started, 2)
    episodes = []
    for attempt in group.attempts:
        episode = EpisodeOutcome(task.instance_id, attempt.attempt, duration_s=attempt.duration_s,
                                 error=attempt.lost)
        episodes.append(_with_result(episode, attempt.result) if attempt.result else episode)
    outcome.ran, outcome.rewards = len(group.attempts), group.rewards
    outcome.selected = group.selection.selected
    chosen = group.selected
    outcome.selected_reward = chosen.result.reward if chosen and chosen.result else 0
    outcome.picks, outcome.selection_path = selector_picks(group), str(group.selection_path)
    return outcome, episodes


def summarize_groups(groups: list[GroupOutcome]) -> dict[str, Any]:
    """Single-attempt pass@1, selected pass@1, pass@N and each selector's pass@1, overall and
    per task; a group that could not run counts as a failure, a broken task is left out."""
    scored = [g for g in groups if not g.broken]

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4) if values else 0.0

    selectors = sorted({name for g in scored for name in g.picks})
    return {
        "single_pass@1": mean([mean([float(r) for r in g.rewards]) for g in scored]),
        "selected_pass@1": mean([float(g.selected_reward) for g in scored]),
        "pass@n": mean([float(any(g.rewards)) for g in scored]),
        "selectors": {name: mean([float(g.picks.get(name) or 0) for g in scored])
                      for name in selectors},
        "mean_attempts_ran": mean([float(g.ran) for g in scored]),
        "mean_task_s": mean([g.duration_s for g in scored]),
        "per_task": {g.instance_id: {
            "single_pass@1": mean([float(r) for r in g.rewards]),
            "selected": g.selected_reward, "pass@n": int(any(g.rewards)), "ran": g.ran,
            "duration_s": g.duration_s} for g in scored},
    }


def summarize(episodes: list[EpisodeOutcome]) -> dict[str, Any]:
    """pass@1, pass@K, format-error rate, mean steps and tokens. An episode that ended in an
    error (no reward) counts as a failure in pass@1 and pass@K; only tasks the suite itself
    cannot run (broken) are left out, and listed."""
    scored = [e for e in episodes if not e.broken]
    ran = [e for e in scored if e.reward is not None]
    by_task: dict[str, list[int]] = {}
    for e in scored:
        by_task.setdefault(e.instance_id, []).append(e.reward or 0)
    calls = sum(e.model_calls for e in ran)

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4) if values else 0.0

    return {
        "tasks": len(by_task),
        "episodes": len(scored),
        "pass@1": mean([float(e.reward or 0) for e in scored]),
        "pass@k": mean([float(any(r)) for r in by_task.values()]),
        "format_error_rate": round(sum(e.format_errors for e in ran) / calls, 4) if calls else 0.0,
        "mean_steps": mean([float(e.steps) for e in ran]),
        "mean_tokens": mean([float(e.prompt_tokens + e.completion_tokens) for e in ran]),
        "mean_completion_tokens": mean([float(e.completion_tokens) for e in ran]),
        "broken_tasks": sorted({e.instance_id for e in episodes if e.broken}),
        "errors": len([e for e in episodes if e.reward is None and not e.broken]),
    }


def summarize_kinds(tasks: list[SuiteTask], episodes: list[EpisodeOutcome]) -> dict[str, Any]:
    """Passing episodes per kind of synthesized bug (`kind`), and apart for the tasks whose fix
    is in view and those whose fix is not (`finetune.fix_in_view`); empty for suites without
    these fields."""
    extras = {task.instance_id: task.model_extra or {} for task in tasks}
    kinds: dict[str, list[int]] = {}
    in_view: dict[str, list[int]] = {}
    for episode in episodes:
        if episode.broken:
            continue
        extra = extras.get(episode.instance_id, {})
        if extra.get("kind"):
            kinds.setdefault(str(extra["kind"]), []).append(episode.reward or 0)
        if "fix_in_view" in extra:
            side = "in_view" if extra["fix_in_view"] else "not_in_view"
            in_view.setdefault(side, []).append(episode.reward or 0)

    def counted(rewards: dict[str, list[int]]) -> dict[str, dict[str, int]]:
        return {name: {"passed": sum(values), "episodes": len(values)}
                for name, values in sorted(rewards.items())}

    summary: dict[str, Any] = {}
    if kinds:
        summary["by_kind"] = counted(kinds)
    if in_view:
        summary["fix_in_view"] = counted(in_view)
    return summary


def default_output_dir(suite: Suite, split: str | None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return data_dir() / "evals" / f"{suite.name}-{split or 'all'}-{stamp}"


def _run_groups(suite: Suite, tasks: list[SuiteTask], options: EvalOptions, out_dir: Path,
                on_episode: Callable[[EpisodeOutcome], None] | None, runners: RunnerFactory
                ) -> tuple[list[GroupOutcome], list[EpisodeOutcome]]:
    """Each task's group of attempts, one task after another."""
    groups, episodes = [], []
    with SandboxPool(options.episode.sandbox, size=min(options.workers,
                                                        options.samples or 1)) as warm, \
            open_executor(options.executor, options.workers, warm) as executor:
        for task in tasks:
            group, attempts = _group(suite, task, options, out_dir / task.instance_id, warm,
                                     runners, executor)
            groups.append(group)
            episodes.extend(attempts)
            for outcome in attempts:
                if on_episode:
                    on_episode(outcome)
    return groups, episodes


def evaluate(suite: Suite, options: EvalOptions,
             on_episode: Callable[[EpisodeOutcome], None] | None = None,
             runners: RunnerFactory = attempt_runner) -> EvalReport:
    """Run the split's tasks `options.episodes` times each, `options.workers` at a time (or,
    with `options.samples`, as groups of attempts with a selection each, whose attempts
    `runners` makes run)."""
    tasks = suite.split(options.split)[: options.limit]
    out_dir = Path(options.output_dir or default_output_dir(suite, options.split))
    jobs = [(task, attempt) for task in tasks for attempt in range(options.episodes)]
    started = time.monotonic()
    episodes: list[EpisodeOutcome] = []
    groups: list[GroupOutcome] = []
    if options.samples:
        groups, episodes = _run_groups(suite, tasks, options, out_dir, on_episode, runners)
    else:
        episodes = _run_episodes(suite, jobs, options, out_dir, on_episode)
    episodes.sort(key=lambda e: (e.instance_id, e.attempt))
    summary = summarize(episodes)
    summary.update(summarize_kinds(tasks, episodes))
    if options.samples:
        summary.update(summarize_groups(groups))
        summary["broken_tasks"] = sorted({*summary["broken_tasks"],
                                          *(g.instance_id for g in groups if g.broken)})
        summary["tasks"] = len([g for g in groups if not g.broken])
    summary["wall_time_s"] = round(time.monotonic() - started, 1)
    report = EvalReport(
        suite=str(suite.path), suite_digest=suite.digest(), split=options.split,
        model=options.model, adapter=options.adapter, episodes_per_task=options.attempts,
        summary=summary, episodes=episodes, problems=list(suite.problems),
        output_dir=str(out_dir), groups=groups)
    report.save(out_dir / "report.json")
    return report
