"""A training corpus synthesized from real libraries, plus the built-in curriculum, and an
evaluation-only suite from more-itertools; the oracle solves both splits through the real loop.

    nohup python bench/bench_synthesis.py --out runs/synthesis > runs/synthesis.log 2>&1 &

Libraries: small pure-Python ones whose source distributions on PyPI ship pytest suites that run
in the sandbox image (python3 + pytest only, no network). Fetched with
`pip download --no-binary :all: --no-deps NAME==VER`, unpacked, synthesized with
`finetune.synthesis` (held out by repository). humanize has test modules that need packages the
sandbox lacks (freezegun); those fail to collect at the original commit and are excluded, the
rest are used. pyparsing 3.3.3 was left out: its suite takes 87 s a run in the sandbox.
more-itertools is evaluation-only (`--split test`).

Writes OUT/corpus (the suite: synthesized + curriculum tasks), OUT/eval-more-itertools, the
oracle's eval reports, and bench/results/synthesis/results.json + results.md with the
repositories, versions, tasks per repository and kind, rejections, candidates validated per
minute, the time it took, and the oracle's pass@1. The measured figures are in results.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from finetune.curriculum import generate_curriculum
from finetune.suite import load_suite, write_suite
from finetune.synthesis import SynthesisOptions, synthesize

LIBRARIES = {
    "toolz": "1.2.0", "boltons": "26.2.0", "cachetools": "8.0.2", "inflection": "0.5.1",
    "six": "1.17.0", "tabulate": "0.10.0", "humanize": "4.17.0",
}
EVAL_ONLY = {"more-itertools": "11.2.1"}
RESULTS = Path(__file__).parent / "results" / "synthesis"


def fetch(name: str, version: str, sdists: Path) -> Path:
    """The unpacked source distribution of NAME==VERSION (downloaded once)."""
    sdists.mkdir(parents=True, exist_ok=True)
    stem = f"{name.replace('-', '_')}-{version}"
    for folder in (sdists / stem, sdists / f"{name}-{version}"):
        if folder.is_dir():
            return folder
    archives = [p for p in sdists.glob("*.tar.gz")
                if p.name.lower().replace("-", "_").startswith(stem.lower().replace("-", "_"))]
    if not archives:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                        "--no-deps", f"{name}=={version}", "-d", str(sdists)], check=True)
        return fetch(name, version, sdists)
    with tarfile.open(archives[0]) as archive:
        archive.extractall(sdists, filter="data")
    return fetch(name, version, sdists)


def oracle_pass(suite_dir: Path, split: str, workers: int, save: Path) -> dict[str, Any]:
    """`agent eval SUITE --model oracle --split SPLIT`, in its own process, as a user runs it.
    Without the repository map in the prompt: these episodes are the SFT data of the embedded
    model, which runs without one (`.ci/demo`), and the map is a fifth of a conversation."""
    if not load_suite(suite_dir).split(split):
        return {"tasks": 0}
    subprocess.run([sys.executable, "-m", "agent.cli", "eval", str(suite_dir), "--model",
                    "oracle", "--split", split, "--workers", str(workers), "--save", str(save),
                    "--repo-map-tokens", "0"],
                   check=True)
    report = json.loads(save.read_text())
    keys = ("tasks", "episodes", "pass@1", "broken_tasks", "errors", "wall_time_s")
    summary = {k: report["summary"].get(k) for k in keys}
    summary["failed"] = [e["instance_id"] for e in report["episodes"] if e["reward"] == 0]
    summary["errored"] = {e["instance_id"]: e["error"] for e in report["episodes"]
                          if e["reward"] is None}
    return summary


def merge_curriculum(corpus: Path, seed: int) -> int:
    """Add the built-in curriculum's tasks (and bundles) to the corpus; return how many."""
    extra = corpus.parent / "curriculum"
    generate_curriculum(extra, seed=seed, force=True)
    suite, curriculum = load_suite(corpus), load_suite(extra)
    shutil.copytree(extra / "repos", corpus / "repos", dirs_exist_ok=True)
    write_suite(corpus, suite.tasks + curriculum.tasks, suite.meta)
    shutil.rmtree(extra)
    return len(curriculum.tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/synthesis"))
    parser.add_argument("--sdists", type=Path, default=Path("runs/sdists"))
    parser.add_argument("--max-tasks", type=int, default=85, help="per repository")
    parser.add_argument("--eval-max-tasks", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--eval-workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill PID`: sandboxes closed
    started = time.monotonic()
    sources = [fetch(n, v, args.sdists) for n, v in LIBRARIES.items()]
    corpus = args.out / "corpus"
    report = synthesize(SynthesisOptions(
        repos=sources, out=corpus, max_tasks=args.max_tasks, seed=args.seed,
        workers=args.workers, split_by="repo", force=True), log=lambda m: print(m, flush=True))
    curriculum = merge_curriculum(corpus, args.seed)
    held = [fetch(n, v, args.sdists) for n, v in EVAL_ONLY.items()]
    eval_suite = args.out / "eval-more-itertools"
    eval_report = synthesize(SynthesisOptions(
        repos=held, out=eval_suite, max_tasks=args.eval_max_tasks, split="test",
        max_candidates=4 * args.eval_max_tasks, seed=args.seed, workers=args.workers,
        force=True), log=lambda m: print(m, flush=True))
    synthesis_s = time.monotonic() - started
    results: dict[str, Any] = {
        "libraries": LIBRARIES, "eval_only": EVAL_ONLY, "synthesis": report,
        "curriculum_tasks": curriculum, "eval_synthesis": eval_report,
        "synthesis_s": round(synthesis_s, 1),
    }
    if not args.skip_eval:
        results["oracle"] = {
            "train": oracle_pass(corpus, "train", args.eval_workers, args.out / "eval-train.json"),
            "test": oracle_pass(corpus, "test", args.eval_workers, args.out / "eval-test.json"),
            "more-itertools test": oracle_pass(eval_suite, "test", args.eval_workers,
                                               args.out / "eval-more-itertools.json"),
        }
    results["total_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "results.md").write_text(render(results))
    print(render(results))


def render(results: dict[str, Any]) -> str:
    """The results as a Markdown report."""
    lines = ["# Task synthesis bench", "", "| repository | tests | tried | kept | rejected "
             "| candidates/min | time |", "|---|---|---|---|---|---|---|"]
    kinds: dict[str, dict[str, int]] = {}
    for repo in [*results["synthesis"]["repos"], *results["eval_synthesis"]["repos"]]:
        counts = repo["counts"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                             if k not in ("tried", "kept", "sites"))
        lines.append(f"| {repo['repo']} | {repo['tests_passing']} | {counts.get('tried', 0)} "
                     f"| {repo['kept']} | {rejected} | {repo['candidates_per_minute']} "
                     f"| {repo['duration_s']:.0f}s |")
        kinds[repo["repo"]] = repo["kinds"]
    names = sorted({k for row in kinds.values() for k in row})
    lines += ["", "Kept tasks per kind:", "", "| repository | " + " | ".join(names) + " |",
              "|---" * (len(names) + 1) + "|"]
    for repo, row in kinds.items():
        lines.append(f"| {repo} | " + " | ".join(str(row.get(k, 0)) for k in names) + " |")
    syn = results["synthesis"]
    lines += ["", f"Corpus: {syn['tasks']} synthesized tasks {syn['splits']} + "
              f"{results['curriculum_tasks']} curriculum tasks; eval-only more-itertools: "
              f"{results['eval_synthesis']['tasks']} tasks. Synthesis took "
              f"{results['synthesis_s'] / 60:.1f} min."]
    for name, summary in results.get("oracle", {}).items():
        lines.append(f"- oracle, {name}: pass@1 {summary.get('pass@1')} on "
                     f"{summary.get('tasks')} tasks ({summary.get('wall_time_s')}s); "
                     f"failed: {summary.get('failed') or 'none'}; "
                     f"errored: {summary.get('errored') or 'none'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
