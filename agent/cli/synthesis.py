"""`agent finetune synthesize`: tasks from real repositories, by planting bugs their tests notice
(`finetune.synthesis`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli.finetune import _fail, _note, finetune_app


@finetune_app.command("synthesize")
def synthesize_command(
    repos: Annotated[list[Path], typer.Argument(help="Git repositories or unpacked source "
                                                "distributions.")],
    out: Annotated[Path, typer.Option(help="Suite directory to write.")],
    max_tasks: Annotated[int | None, typer.Option(help="At most N tasks per repository.")]
    = None,
    per_file: Annotated[int | None, typer.Option(help="At most K tasks per source file.")]
    = None,
    max_candidates: Annotated[int | None, typer.Option(help="Validate at most N candidates "
                                                       "per repository.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    test_cmd: Annotated[str | None, typer.Option(help="pytest command run in the sandbox "
                                                 "(must accept more arguments).")] = None,
    split_by: Annotated[str, typer.Option(help="Hold out whole `repo`s or `file`s.")] = "repo",
    test_share: Annotated[float, typer.Option(help="Share of tasks held out.")] = 0.2,
    split: Annotated[str | None, typer.Option(help="Put every task in this split (`test`: "
                                              "an evaluation-only suite).")] = None,
    eval_only: Annotated[bool, typer.Option(help="Same as --split test.")] = False,
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds of bug (default: "
                                              "all).")] = None,
    workers: Annotated[int, typer.Option(help="Sandboxes validating at once.")] = 2,
    timeout: Annotated[float | None, typer.Option(help="Seconds per test run (default: 5x "
                                                  "the original run, at least 10).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing suite.")] = False,
    executor: Annotated[str, typer.Option(help="Where candidates are validated: `local` "
                                          "(threads here) or `ray` (a Ray cluster).")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join (default: "
                                                    "start a local one).")] = None,
    episode_cpus: Annotated[float, typer.Option(help="Ray CPUs one validation job "
                                                "reserves.")] = 1.0,
    batch: Annotated[int, typer.Option(help="Candidates per Ray job (one sandbox each).")]
    = 4,
) -> None:
    """Synthesize a task suite: bugs planted in REPO's functions, kept when its tests notice.

    Writes OUT/tasks.jsonl, OUT/repos/*.bundle and OUT/synthesis.json (the counts)."""
    from pydantic import ValidationError

    from agent.executor_config import ExecutorConfig
    from finetune.synthesis import SynthesisError, SynthesisOptions, synthesize
    from tools.sandbox import SandboxError

    try:
        options = SynthesisOptions(
            repos=repos, out=out, max_tasks=max_tasks, per_file=per_file,
            max_candidates=max_candidates, seed=seed, test_command=test_cmd,
            split_by=split_by, test_share=test_share, split="test" if eval_only else split,
            kinds=[k.strip() for k in kinds.split(",") if k.strip()] if kinds else None,
            workers=workers, timeout=timeout, force=force, batch=batch,
            executor=ExecutorConfig(kind=executor, ray_address=ray_address,  # type: ignore[arg-type]
                                    episode_cpus=episode_cpus))
    except ValidationError as exc:
        raise _fail("; ".join(e["msg"] for e in exc.errors()), 2) from None
    try:
        report = synthesize(options, log=_note)
    except (SynthesisError, FileExistsError, SandboxError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    for repo in report["repos"]:
        counts = repo["counts"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                             if k not in ("tried", "kept", "sites"))
        print(f"{repo['repo']}: tried {counts.get('tried', 0)}, kept {repo['kept']} "
              f"({rejected}); {repo['candidates_per_minute']} candidates/min")
    print(f"{report['tasks']} tasks {report['splits']} in {report['duration_s']:.0f}s: {out}")
