"""Repository map: apprentice's `tools.repo_map` side by side with Aider's RepoMap.

    .venv/bin/python bench/bench_repo_map.py [--trees transformers networkx] [--tokens 1024]

Both build a 1,024-token map of the same files (copies under /tmp, so Aider's cache folder does
not land in the venv) three ways, each in a fresh process:
- cold: no cache at all;
- warm: a new process with the disk cache both keep;
- refresh: in the warm process, one file gains a function, then the map is made again
  (Aider with refresh="always", or it would hand back its stale map).

Aider is installed into its own venv (AIDER_VENV, default /tmp/aider-venv) on first use, never
into apprentice's. Its model is a stub counting tokens with the same cl100k encoding ours uses,
so no network is touched. Times are seconds inside the process (imports excluded): wall clock,
and for cold builds also CPU time (the process and its workers), which a busy machine disturbs
less. Runs of the tools are interleaved, `--repeat` times, and the best of each figure counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AIDER_VENV = Path(os.environ.get("AIDER_VENV", "/tmp/aider-venv"))
WORK = Path(tempfile.gettempdir()) / "bench-repo-map"
SITE = Path(sysconfig.get_paths()["purelib"])
TREES = {"transformers": SITE / "transformers", "networkx": SITE / "networkx",
         "apprentice": ROOT}
ADDED = b"\n\ndef bench_added_function():\n    return 1\n"

OURS = r"""
import json, resource, sys, time
from pathlib import Path
from tools.repo_map import RepoMap, estimate_tokens

def cpu():
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)

estimate_tokens("warm up the tokenizer, as the Aider side does before its clock starts")
root, db, tokens, workers, changed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]
start, start_cpu = time.perf_counter(), cpu()
repo = RepoMap(root, cache_path=db, workers=workers)
repo.refresh()
text = repo.render(tokens)
build, build_cpu = time.perf_counter() - start, cpu() - start_cpu
refresh = None
if changed:
    path = root / changed
    original = path.read_bytes()
    path.write_bytes(original + ADDED)
    try:
        start = time.perf_counter()
        repo.refresh()
        text2 = repo.render(tokens)
        refresh = time.perf_counter() - start
    finally:
        path.write_bytes(original)
print(json.dumps({"build": build, "cpu": build_cpu, "refresh": refresh,
                  "files": len(repo.entries), "text": text}))
""".replace("ADDED", repr(ADDED))

AIDER = r"""
import json, os, resource, sys, time
os.environ["TIKTOKEN_CACHE_DIR"] = sys.argv[5]

def cpu():
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)

import tiktoken
from aider.io import InputOutput
from aider.repomap import RepoMap
root, tokens, changed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = json.loads(open(sys.argv[4]).read())
encoder = tiktoken.get_encoding("cl100k_base")

class Model:
    def token_count(self, text):
        return len(encoder.encode(text, disallowed_special=()))

io = InputOutput(pretty=False, yes=True, fancy_input=False)
other = [os.path.join(root, f) for f in files]
start, start_cpu = time.perf_counter(), cpu()
repo = RepoMap(map_tokens=tokens, root=root, main_model=Model(), io=io, refresh="always")
text = repo.get_repo_map([], other) or ""
build, build_cpu = time.perf_counter() - start, cpu() - start_cpu
refresh = None
if changed:
    path = os.path.join(root, changed)
    original = open(path, "rb").read()
    open(path, "wb").write(original + ADDED)
    try:
        start = time.perf_counter()
        repo.get_repo_map([], other, force_refresh=True)
        refresh = time.perf_counter() - start
    finally:
        open(path, "wb").write(original)
print(json.dumps({"build": build, "cpu": build_cpu, "refresh": refresh, "files": len(other),
                  "text": text}))
""".replace("ADDED", repr(ADDED))


def ensure_aider() -> Path:
    """The Python of a venv holding aider-chat (created and installed on first use)."""
    python = AIDER_VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import aider.repomap"],
                                          capture_output=True).returncode == 0:
        return python
    print(f"installing aider-chat into {AIDER_VENV} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", AIDER_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "aider-chat"], check=True)
    return python


def tiktoken_cache() -> str:
    """litellm's bundled copy of the cl100k encoding (found without importing litellm)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin, "litellm is not installed"
    return str(Path(spec.origin).parent / "litellm_core_utils" / "tokenizers")


def copy_tree(name: str) -> Path:
    source, target = TREES[name], WORK / name
    if not target.exists():
        ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc",
                                        ".aider.tags.cache*")
        shutil.copytree(source, target, ignore=ignore)
    return target


def run(command: list[str], cwd: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(runs: list[tuple[dict, dict]], tree: str, tool: str) -> dict:
    """The fastest of repeated (cold, warm) runs, each figure on its own."""
    return {"tree": tree, "tool": tool, "files": runs[0][0]["files"],
            "cold": min(c["build"] for c, _ in runs), "cold_cpu": min(c["cpu"] for c, _ in runs),
            "warm": min(w["build"] for _, w in runs), "refresh": min(w["refresh"] for _, w in runs),
            "text": runs[-1][1]["text"]}


def bench_tree(name: str, tokens: int, aider: Path, workers: list[int],
               repeat: int) -> list[dict]:
    """Cold then warm runs of each tool, interleaved so that a busy moment of the machine
    falls on all of them alike."""
    from tools.repo_map import source_files

    tree = copy_tree(name)
    files = source_files(tree)
    changed = next(f for f in files if f.endswith(".py") and "__init__" not in f)
    listing = WORK / f"{name}-files.json"
    listing.write_text(json.dumps(files))
    runs: dict[str, list[tuple[dict, dict]]] = {}
    for _ in range(repeat):
        for count in workers:
            db = WORK / f"{name}-{count}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            ours = [sys.executable, "-c", OURS, str(tree), str(db), str(tokens), str(count)]
            runs.setdefault(f"apprentice ({count} proc)", []).append(
                (run([*ours, ""]), run([*ours, changed])))
        shutil.rmtree(tree / ".aider.tags.cache.v4", ignore_errors=True)
        theirs = [str(aider), "-c", AIDER, str(tree), str(tokens)]
        runs.setdefault("aider", []).append(
            (run([*theirs, "", str(listing), tiktoken_cache()], cwd=tree),
             run([*theirs, changed, str(listing), tiktoken_cache()], cwd=tree)))
    return [best(tool_runs, name, tool) for tool, tool_runs in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", nargs="+", default=["transformers", "networkx"],
                        choices=sorted(TREES))
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="Runs per figure; the best counts.")
    parser.add_argument("--show", action="store_true", help="Print each map's first lines.")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    aider = ensure_aider()
    rows = [row for name in args.trees
            for row in bench_tree(name, args.tokens, aider, args.workers, args.repeat)]
    print(f"\n{'tree':13} {'tool':18} {'files':>6} {'cold s':>7} {'cold cpu s':>10} "
          f"{'warm s':>7} {'refresh ms':>10} {'cold speed-up':>13}")
    for row in rows:
        aider_cold = next(r["cold"] for r in rows if r["tree"] == row["tree"]
                          and r["tool"] == "aider")
        print(f"{row['tree']:13} {row['tool']:18} {row['files']:>6} {row['cold']:>7.2f} "
              f"{row['cold_cpu']:>10.2f} {row['warm']:>7.2f} {row['refresh'] * 1000:>10.0f} "
              f"{aider_cold / row['cold']:>12.1f}x")
    if args.show:
        for row in rows:
            print(f"\n--- {row['tree']} / {row['tool']} ---")
            print("\n".join(row["text"].splitlines()[:25]))


if __name__ == "__main__":
    main()
