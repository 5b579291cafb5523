"""What a killed owner leaves: its sandbox container ends by itself, and the next `agent`
start removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

OWNER = """
import sys, time
from pathlib import Path
from tools.sandbox import heartbeat
heartbeat.STALE_S = 6
heartbeat.POLL_S = 1
heartbeat.BEAT_S = 1
from tools.sandbox import SandboxConfig, make_sandbox
box = make_sandbox(SandboxConfig(memory="256m", pids=64, cpus=0.5), Path(sys.argv[1]))
print(box.container_id, flush=True)
time.sleep(600)
"""


def _state(client: docker.DockerClient, container_id: str) -> dict:
    return client.api.inspect_container(container_id)["State"]


@pytest.mark.docker
def test_a_killed_owners_container_ends_itself_and_is_removed_at_start(
        tmp_path: Path, docker_ready: None) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(workspace)],
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert owner.stdout is not None
    container_id = owner.stdout.readline().strip()
    client = docker.from_env()
    try:
        assert container_id and _state(client, container_id)["Running"]
        time.sleep(8)  # alive and beating: the container stays up past the stale time
        assert _state(client, container_id)["Running"]
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 30
        while _state(client, container_id)["Running"]:
            assert time.monotonic() < deadline, "the orphaned container kept running"
            time.sleep(0.5)
        started = subprocess.run([sys.executable, "-m", "agent.cli", "models", "list"],
                                 capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        assert container_id[:12] in started.stderr and "gone" in started.stderr
        with pytest.raises(docker.errors.NotFound):
            client.api.inspect_container(container_id)
    finally:
        if owner.poll() is None:
            owner.kill()
        with_suppressed = [c for c in client.containers.list(all=True)
                           if c.id == container_id]
        for container in with_suppressed:
            container.remove(force=True)
        client.close()


@pytest.mark.docker
def test_episodes_leave_no_open_files_behind(example, scripted, docker_ready: None) -> None:
    """Each episode used to keep its repo map's database open: a long eval ran out of fds."""
    from agent.episode import EpisodeConfig
    from agent.scripted_model import tool_call
    from agent.solve import solve
    from agent.tasks import Task
    from tools.sandbox import SandboxConfig

    repo, issue = example
    task = Task(instance_id="fd", repo=str(repo), problem_statement=issue.read_text(),
                test_command="true")
    config = EpisodeConfig(llm=scripted.llm_config(), max_steps=2,
                           sandbox=SandboxConfig(memory="256m", pids=64, cpus=0.5))

    def episode() -> None:
        scripted.script = [{"tool_calls": [tool_call("finish", {"summary": "done"})]}]
        assert solve(task, config).exit_status == "finished"

    episode()  # the first one opens what stays for the process (clients, caches)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        episode()
    assert len(os.listdir("/proc/self/fd")) <= before + 1
