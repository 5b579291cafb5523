"""Episodes per minute with the local executor and with Ray, and Ray's overhead per episode.

Every episode is a real `agent eval` episode (`finetune.evaluate`: a clone of the task's
bundle, a Docker sandbox, the oracle's scripted model, the recorder, verify in a fresh
sandbox) on curriculum test tasks. For 1, 2 and 4 workers:

- local: `--executor local --workers W` (threads of this process, one warm sandbox pool);
- ray: a Ray cluster of this machine with W CPUs (`ray.init(num_cpus=W)`), one CPU per
  episode, the workers warmed up first (their start-up, importing apprentice, is reported
  apart: a long-lived cluster pays it once).

Overhead per episode: Ray episodes run one at a time; the time from `submit` to the landed
result (trajectory written and indexed on the driver) minus the time the episode's function
ran on the worker is scheduling + transfer + landing. Target: under 5 % of an episode.

    python bench/bench_executor.py --tasks 4 --episodes 2 --out bench/results/executor/run.json

With `--synthesis REPO` it also validates `--candidates` candidate bugs of REPO (a git
repository or unpacked sdist: `agent finetune synthesize`'s validation) with each executor:
candidates per minute, and the same kept/rejected counts from both.

Plan for 1,000 parallel episodes (the figures measured here are the inputs; see the README's
"Episodes on a Ray cluster"): each episode reserves 1 CPU and its sandbox's memory (2 GiB by
default), so 1,000 at once need ~1,000 CPUs and ~2 TiB of memory for the sandboxes, e.g. 32
nodes of 32 vCPUs / 128 GiB at 31 episodes per node (the node's own agent processes take the
rest), each node running its own Docker engine with the sandbox image built once. The driver
only lands results: at the measured landing cost per episode and a 60 s episode it is busy
well under 1 % of the time even at 1,000 episodes at once; the trajectories (tens of KB each)
cross the object store once. The model is the bottleneck: 1,000 agents with one call in flight
each need a vLLM fleet sized by tokens per second (one call every few seconds per agent), not
the Ray cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agent.executor_config import ExecutorConfig  # noqa: E402
from finetune.curriculum import generate_curriculum  # noqa: E402
from finetune.episode_jobs import suite_job  # noqa: E402
from finetune.evaluate import EvalOptions, evaluate  # noqa: E402
from finetune.suite import Suite, load_suite  # noqa: E402


def _warm_up(workers: int) -> float:
    """Start `workers` Ray workers and import apprentice's episode code in each; seconds."""
    import ray

    @ray.remote(num_cpus=1)
    def ready() -> int:
        import finetune.episode_jobs  # noqa: F401

        time.sleep(0.5)  # keep the worker busy so the next task gets another one
        return os.getpid()

    started = time.monotonic()
    ray.get([ready.remote() for _ in range(workers)])
    return time.monotonic() - started


def _throughput(suite: Suite, kind: str, workers: int, episodes: int,
                out: Path) -> dict[str, Any]:
    options = EvalOptions(model="oracle", split="test", workers=workers, episodes=episodes,
                          output_dir=out, executor=ExecutorConfig(kind=kind))  # type: ignore[arg-type]
    started = time.monotonic()
    report = evaluate(suite, options)
    wall = time.monotonic() - started
    ran = report.episodes
    return {"executor": kind, "workers": workers, "episodes": len(ran),
            "pass@1": report.summary["pass@1"], "errors": report.summary["errors"],
            "wall_s": round(wall, 2), "episodes_per_min": round(60 * len(ran) / wall, 1),
            "mean_episode_s": round(sum(e.duration_s for e in ran) / len(ran), 2)}


def _synthesis(source: Path, kind: str, workers: int, candidates: int,
               out: Path) -> dict[str, Any]:
    """Synthesis validation of `candidates` candidates of `source` through one executor."""
    from finetune.synthesis import SynthesisOptions, synthesize

    report = synthesize(SynthesisOptions(
        repos=[source], out=out, max_candidates=candidates, workers=workers, split="test",
        force=True, executor=ExecutorConfig(kind=kind)),  # type: ignore[arg-type]
        log=lambda _: None)
    (repo,) = report["repos"]
    return {"synthesis": repo["repo"], "executor": kind, "workers": workers,
            "candidates": repo["counts"].get("tried", 0), "kept": repo["kept"],
            "counts": repo["counts"], "candidates_per_min": repo["candidates_per_minute"],
            "duration_s": repo["duration_s"]}


def _overhead(suite: Suite, out: Path, count: int) -> dict[str, Any]:
    """Ray episodes one at a time: round trip vs the time on the worker."""
    from agent.ray_executor import RayExecutor

    options = EvalOptions(model="oracle")
    rows = []
    with RayExecutor(ExecutorConfig(kind="ray")) as executor:
        for n in range(count):
            task = suite.tasks[n % len(suite.tasks)]
            where = out / f"{n}"
            started = time.monotonic()
            running = executor.submit(suite_job(suite, task, options.episode, where,
                                                oracle=True, portable=True))
            result = running.future.result()
            total = time.monotonic() - started
            remote = executor.remote_seconds[str(where)]
            rows.append({"round_trip_s": round(total, 3), "on_worker_s": round(remote, 3),
                         "overhead_s": round(total - remote, 3), "reward": result.reward,
                         "trajectory_bytes": Path(result.trajectory_path).stat().st_size})
    overhead = [r["overhead_s"] for r in rows]
    episode = [r["round_trip_s"] for r in rows]
    return {"episodes": rows,
            "mean_overhead_s": round(sum(overhead) / len(overhead), 3),
            "mean_episode_s": round(sum(episode) / len(episode), 3),
            "overhead_share": round(sum(overhead) / sum(episode), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=4, help="Curriculum test tasks.")
    parser.add_argument("--episodes", type=int, default=2, help="Episodes per task.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--overhead-episodes", type=int, default=6)
    parser.add_argument("--work", type=Path, default=Path("/tmp/apprentice-bench-executor"))
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    parser.add_argument("--synthesis", type=Path, help="Also time synthesis validation of "
                        "this repository.")
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--skip-episodes", action="store_true")
    args = parser.parse_args()
    import ray

    suite = load_suite(generate_curriculum(args.work / f"suite-{time.time_ns()}", train=0,
                                           test=args.tasks, seed=5))
    rows: list[dict[str, Any]] = []
    overhead: dict[str, Any] = {}
    synthesis: list[dict[str, Any]] = []
    for workers in args.workers:
        if not args.skip_episodes:
            row = _throughput(suite, "local", workers, args.episodes,
                              args.work / f"local-{workers}")
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.synthesis:
            synthesis.append(_synthesis(args.synthesis, "local", workers, args.candidates,
                                        args.work / f"synthesis-local-{workers}"))
            print(json.dumps(synthesis[-1]), flush=True)
        ray.init(address="local", num_cpus=workers, _node_ip_address="127.0.0.1",
                 include_dashboard=False, log_to_driver=False)
        try:
            cold = _warm_up(workers)
            if args.synthesis:
                synthesis.append(_synthesis(args.synthesis, "ray", workers, args.candidates,
                                            args.work / f"synthesis-ray-{workers}"))
                print(json.dumps(synthesis[-1]), flush=True)
            if args.skip_episodes:
                continue
            row = _throughput(suite, "ray", workers, args.episodes, args.work / f"ray-{workers}")
            row["worker_start_s"] = round(cold, 2)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if workers == 1:
                overhead = _overhead(suite, args.work / "overhead", args.overhead_episodes)
                print(json.dumps({k: v for k, v in overhead.items() if k != "episodes"}),
                      flush=True)
        finally:
            ray.shutdown()
    figures = {"measured": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
               "tasks": len(suite.tasks), "throughput": rows, "overhead": overhead,
               "synthesis": synthesis}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
