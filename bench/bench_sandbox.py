"""How fast the sandbox answers: the persistent shell against `docker exec`, and start-up time.

    python bench/bench_sandbox.py [--persistent 200] [--exec 30] [--starts 5]

Needs a running Docker engine and the sandbox image (`agent sandbox build --offline`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tools.sandbox import DockerSandbox, LocalSandbox, SandboxConfig


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
    return f"| {name:<50} | {len(ordered):>5} | {median * 1e3:>9.2f} | {p90 * 1e3:>9.2f} |"


def start_times(config: SandboxConfig, workspace: Path, times: int) -> list[float]:
    """Seconds from nothing to the first command's answer in a fresh sandbox (close not timed)."""
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        box = DockerSandbox(config, workspace)
        try:
            box.start()
            assert box.run("true").exit_code == 0
            durations.append(time.perf_counter() - started)
        finally:
            box.close()
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persistent", type=int, default=200, help="`true` over the shell")
    parser.add_argument("--exec", type=int, default=30, help="`docker exec <id> true` runs")
    parser.add_argument("--starts", type=int, default=5, help="fresh sandboxes started")
    args = parser.parse_args()
    config = SandboxConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        with DockerSandbox(config, workspace) as box:
            timed(lambda: box.run("true"), 20)  # warm up
            rows.append(
                row(
                    "docker: `true` over the persistent shell",
                    timed(lambda: box.run("true"), args.persistent),
                )
            )
            command = ["docker", "exec", str(box.container_id), "true"]
            rows.append(
                row(
                    "docker: `docker exec <id> true` (subprocess)",
                    timed(lambda: subprocess.run(command, check=True), args.exec),
                )
            )
        with LocalSandbox(config.model_copy(update={"kind": "local"}), workspace) as local:
            rows.append(
                row(
                    "local: `true` over the persistent shell",
                    timed(lambda: local.run("true"), args.persistent),
                )
            )
        rows.append(
            row(
                "docker: fresh sandbox until first `true` answers",
                start_times(config, workspace, args.starts),
            )
        )
    print(f"| {'what':<50} |     n | median ms |    p90 ms |")
    print(f"|{'-' * 52}|------:|----------:|----------:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
