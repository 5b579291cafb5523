"""How fast the sandbox answers: per-command latency, episode reset, parallel sessions.

    python bench/bench_sandbox.py [--persistent 200] [--exec 30] [--resets 10] [--parallel 8]

- per command: `true` over the persistent shell against `docker exec <id> true` (subprocess),
  side by side in the same run;
- episode reset: from nothing to the first command's answer in a fresh, isolated container
  with the repository at its base commit (git worktree + sandbox git + container + shell):
  one after the other, side by side (`open_session`), and from a warm `SandboxPool`;
- N sessions at once: each opens, runs 20 commands checking its own marker, and closes.

Needs a running Docker engine and the sandbox image (`agent sandbox build --offline`).

Measured 2026-12-02 (2 CPU cores, load average 4.4 from a synthesis run beside it;
`--persistent 20 --exec 5 --resets 10 --parallel 2`): reset from the warm pool median 86 ms
(p90 122), against 510 ms one after the other and 473 ms side by side; `true` over the
persistent shell 0.5 ms, `docker exec` 105 ms. Eval and GRPO rollouts take their sandboxes
from the pool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.example_repos import init_example
from tools.sandbox import LocalSandbox, SandboxConfig, make_sandbox
from tools.sandbox.pool import SandboxPool
from tools.session_setup import open_session
from tools.workspace import Workspace


def timed(action: Callable[[], object], times: int) -> list[float]:
    """Wall-clock seconds of each of `times` calls of `action`."""
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return durations


def row(name: str, durations: list[float]) -> str:
    ordered = sorted(durations)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    median = statistics.median(ordered)
    return f"| {name:<64} | {len(ordered):>5} | {median * 1e3:>9.2f} | {p90 * 1e3:>9.2f} |"


def command_latency(config: SandboxConfig, persistent: int, execs: int) -> list[str]:
    """`true` over the persistent shell vs `docker exec` on the same container, and local."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        box = make_sandbox(config, Path(tmp))
        try:
            timed(lambda: box.run("true"), 20)  # warm up
            rows.append(row("docker: `true` over the persistent shell",
                            timed(lambda: box.run("true"), persistent)))
            command = ["docker", "exec", str(getattr(box, "container_id", "")), "true"]
            rows.append(row("docker: `docker exec <id> true` (subprocess)",
                            timed(lambda: subprocess.run(command, check=True), execs)))
        finally:
            box.close()
        with LocalSandbox(config.model_copy(update={"kind": "local"}), Path(tmp)) as local:
            rows.append(row("local: `true` over the persistent shell",
                            timed(lambda: local.run("true"), persistent)))
    return rows


def reset_times(repo: Path, config: SandboxConfig, times: int) -> list[str]:
    """Seconds from nothing to the first `true` answered in a fresh session (close untimed)."""
    results: dict[str, list[float]] = {"one after the other": [], "side by side": [],
                                       "warm pool": []}
    with SandboxPool(config, size=1) as pool:
        time.sleep(2)  # let the pool start its first container
        for index in range(times):
            for way, durations in results.items():
                session_id = f"bench-{way.replace(' ', '-')}-{index}"
                started = time.perf_counter()
                if way == "one after the other":
                    workspace = Workspace.create(repo, session_id)
                    sandbox = make_sandbox(config, workspace.path)
                else:
                    opened = open_session(repo, session_id, config,
                                          pool=pool if way == "warm pool" else None)
                    workspace, sandbox = opened.workspace, opened.sandbox
                assert sandbox.run("true").exit_code == 0
                durations.append(time.perf_counter() - started)
                sandbox.close()
                workspace.remove(delete_branch=True)
                time.sleep(0.5)  # the pool refills meanwhile, as during an episode
    return [row(f"reset, {way}: worktree + container + first `true`", durations)
            for way, durations in results.items()]


def parallel_sessions(repo: Path, config: SandboxConfig, count: int) -> list[str]:
    """`count` sessions at once: open, 20 commands on an own marker, close."""
    resets: list[float] = []
    failures: list[str] = []

    def episode(index: int) -> None:
        try:
            started = time.perf_counter()
            opened = open_session(repo, f"bench-parallel-{index}", config)
            try:
                assert opened.sandbox.run("true").exit_code == 0
                resets.append(time.perf_counter() - started)
                opened.sandbox.run(f"echo {index} > marker")
                for _ in range(20):
                    seen = opened.sandbox.run("cat marker").output
                    if seen != f"{index}\n":
                        failures.append(f"session {index} read {seen!r}")
            finally:
                opened.close(delete_branch=True)
        except Exception as exc:
            failures.append(f"session {index}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    threads = [threading.Thread(target=episode, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for failure in failures:
        print(f"FAILURE: {failure}")
    return [row(f"{count} sessions at once: each reset (failures: {len(failures)})", resets),
            row(f"{count} sessions at once: wall time, open + 21 commands + close", [wall])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persistent", type=int, default=200, help="`true` over the shell")
    parser.add_argument("--exec", type=int, default=30, help="`docker exec <id> true` runs")
    parser.add_argument("--resets", type=int, default=10, help="resets of each kind")
    parser.add_argument("--parallel", type=int, default=8, help="sessions at once")
    args = parser.parse_args()
    config = SandboxConfig()
    with tempfile.TemporaryDirectory(prefix="apprentice-bench-") as tmp:
        os.environ["APPRENTICE_HOME"] = str(Path(tmp) / "home")
        repo, _ = init_example("calculator", Path(tmp) / "example")
        rows = command_latency(config, args.persistent, args.exec)
        rows += reset_times(repo, config, args.resets)
        rows += parallel_sessions(repo, config, args.parallel)
    print(f"| {'what':<64} |     n | median ms |    p90 ms |")
    print(f"|{'-' * 66}|------:|----------:|----------:|")
    print("\n".join(rows))
    print(f"(load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
