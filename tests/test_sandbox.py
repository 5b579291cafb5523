"""The sandboxes, for real: a Docker container (marked `docker`) and a local bash.

Docker tests skip when the engine or the image is missing, unless APPRENTICE_REQUIRE_DOCKER=1
(CI), where they fail instead. As root with debootstrap, a missing image is built (a minute).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.sandbox import (
    DEFAULT_IMAGE,
    DockerSandbox,
    Sandbox,
    SandboxConfig,
    SandboxError,
    build_image,
    connect_docker,
    image_exists,
    make_sandbox,
)
from tools.sandbox.image import DOCKERFILE, PACKAGES
from tools.sandbox.isolation import isolation_problems, memory_bytes
from tools.sandbox.repo_image import SETUP_FILE, SETUP_LABEL, image_for_repository
from tools.sandbox.shell_protocol import OutputCollector

REQUIRE_DOCKER = "APPRENTICE_REQUIRE_DOCKER"
SECRET = "s3cret-value-never-inside"
CONFIG = SandboxConfig(
    memory="512m", pids=128, cpus=1.0, command_timeout=30.0, max_output_chars=2000
)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_DOCKER) == "1":
        pytest.fail(f"{reason} ({REQUIRE_DOCKER}=1 forbids skipping Docker tests)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    """The sandbox image, built offline if missing and possible; else skip (or fail in CI)."""
    try:
        client = connect_docker(timeout=5)
    except SandboxError as exc:
        _unavailable(str(exc))
    if not image_exists(client, DEFAULT_IMAGE):
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            _unavailable(
                f"Sandbox image {DEFAULT_IMAGE} missing: run `agent sandbox build --offline`"
            )
        try:
            build_image(DEFAULT_IMAGE, offline=True)
        except SandboxError as exc:
            _unavailable(f"Sandbox image {DEFAULT_IMAGE} missing and could not be built: {exc}")
    return DEFAULT_IMAGE


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


def _open(kind: str, workspace: Path, request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    if kind == "docker":
        request.getfixturevalue("sandbox_image")
    box = make_sandbox(CONFIG.model_copy(update={"kind": kind}), workspace)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox(
    request: pytest.FixtureRequest, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    """Each kind of sandbox, started on a fresh workspace, with a secret in the host env."""
    monkeypatch.setenv("APPRENTICE_TEST_SECRET", SECRET)
    yield from _open(request.param, workspace, request)


@pytest.fixture
def docker_box(
    request: pytest.FixtureRequest, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    monkeypatch.setenv("APPRENTICE_TEST_SECRET", SECRET)
    yield from _open("docker", workspace, request)


def _no_process(sandbox: Sandbox, pattern: str) -> bool:
    return sandbox.run(f"pgrep -f {pattern!r}").exit_code == 1


# --- both sandboxes -------------------------------------------------------------------------


def test_cwd_and_environment_persist(sandbox: Sandbox) -> None:
    assert sandbox.run("mkdir -p sub/dir && cd sub/dir && export GREETING=hello").exit_code == 0
    result = sandbox.run('echo "$GREETING from $(pwd)"')
    assert result.exit_code == 0
    assert result.output.strip().startswith("hello from ")
    assert result.output.strip().endswith("/sub/dir")


def test_exit_codes_and_merged_stderr(sandbox: Sandbox) -> None:
    assert sandbox.run("true").exit_code == 0
    assert sandbox.run("false").exit_code == 1
    assert sandbox.run("sh -c 'exit 42'").exit_code == 42
    result = sandbox.run("echo out; echo err >&2; ls /no/such/path")
    assert result.exit_code == 2
    assert "out" in result.output and "err" in result.output and "No such file" in result.output


def test_stdin_is_empty_and_quoting_survives(sandbox: Sandbox) -> None:
    assert sandbox.run("cat; read line", timeout=5).exit_code == 1  # EOF at once, no hang
    script = "cat <<'EOF' > note.txt\nit's \"quoted\" $HOME \\ `x`\nEOF\ncat note.txt"
    result = sandbox.run(script)
    assert result.output == 'it\'s "quoted" $HOME \\ `x`\n'
    assert sandbox.run("echo 'unterminated").exit_code == 2  # a syntax error, not a hang
    assert sandbox.run("echo fine").output == "fine\n"


def test_timeout_kills_process_group_and_shell_survives(sandbox: Sandbox) -> None:
    sandbox.run("export KEPT=yes")
    result = sandbox.run("sleep 4243 & sleep 4242; echo never", timeout=1)
    assert result.timed_out and result.exit_code is None
    assert not result.shell_restarted
    assert "never" not in result.output
    assert result.duration_s < 6
    after = sandbox.run("echo ok $KEPT")
    assert after.output == "ok yes\n" and after.exit_code == 0
    assert _no_process(sandbox, "^sleep 424")


def test_timeout_interrupts_a_loop_in_the_shell_itself(sandbox: Sandbox) -> None:
    sandbox.run("cd / && export KEPT=yes")
    result = sandbox.run("while :; do :; done", timeout=1)
    assert result.timed_out and not result.shell_restarted
    assert sandbox.run("echo $KEPT $(pwd)").output == "yes /\n"


def test_long_output_is_cut_in_the_middle(sandbox: Sandbox) -> None:
    result = sandbox.run("yes | head -c 200000")
    assert result.exit_code == 0
    assert result.truncated_chars == 200_000 - CONFIG.max_output_chars
    assert len(result.output) < CONFIG.max_output_chars + 100
    assert "characters cut" in result.output
    assert result.output.startswith("y\ny\n") and result.output.endswith("y\ny\n")


def test_endless_output_is_bounded_and_timed_out(sandbox: Sandbox) -> None:
    result = sandbox.run("yes", timeout=2)
    assert result.timed_out
    assert result.truncated_chars > 100_000
    assert len(result.output) < CONFIG.max_output_chars + 200
    assert sandbox.run("echo ok").output == "ok\n"
    assert _no_process(sandbox, "^yes$")


def test_shell_that_kills_itself_is_restarted(sandbox: Sandbox) -> None:
    sandbox.run("export LOST=1 && cd /")
    result = sandbox.run("echo before; kill -9 $$")
    assert result.shell_restarted and result.exit_code == 137
    assert "before" in result.output
    after = sandbox.run('echo "[$LOST]" && pwd')
    assert not after.shell_restarted
    assert after.output.splitlines()[0] == "[]"
    assert after.output.splitlines()[1] != "/"  # back in the workspace


def test_exit_restarts_the_shell(sandbox: Sandbox) -> None:
    result = sandbox.run("exit 3")
    assert result.shell_restarted and result.exit_code == 3
    assert sandbox.run("echo again").output == "again\n"


def test_files_written_in_the_workspace_appear_on_the_host(
    sandbox: Sandbox, workspace: Path
) -> None:
    assert sandbox.run("mkdir -p pkg && printf 'print(1)\\n' > pkg/mod.py").exit_code == 0
    assert (workspace / "pkg" / "mod.py").read_text() == "print(1)\n"
    (workspace / "from_host.txt").write_text("hi\n")
    assert sandbox.run("cat from_host.txt").output == "hi\n"


def test_host_secrets_stay_outside(sandbox: Sandbox) -> None:
    assert os.environ["APPRENTICE_TEST_SECRET"] == SECRET
    result = sandbox.run("env")
    assert result.exit_code == 0 and "PATH=" in result.output
    assert SECRET not in result.output and "APPRENTICE_TEST_SECRET" not in result.output


def test_close_is_safe_twice_and_run_after_close_fails(sandbox: Sandbox) -> None:
    sandbox.close()
    sandbox.close()
    with pytest.raises(SandboxError, match="not started"):
        sandbox.run("true")


# --- Docker only ----------------------------------------------------------------------------


@pytest.mark.docker
def test_docker_has_no_network(docker_box: Sandbox) -> None:
    assert docker_box.run("ls /sys/class/net").output.split() == ["lo"]
    devices = docker_box.run("tail -n +3 /proc/net/dev").output.split("\n")
    assert [line.split(":")[0].strip() for line in devices if line.strip()] == ["lo"]


@pytest.mark.docker
def test_docker_user_is_not_root_and_has_no_capabilities(docker_box: Sandbox) -> None:
    assert docker_box.run("id -u").output.strip() != "0"
    status = docker_box.run("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status").output
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status


@pytest.mark.docker
def test_docker_root_filesystem_is_read_only(docker_box: Sandbox) -> None:
    assert docker_box.run("touch /etc/evil").exit_code != 0
    assert docker_box.run("touch /usr/bin/evil").exit_code != 0
    assert docker_box.run("echo x > /tmp/scratch && cat /tmp/scratch").output == "x\n"


@pytest.mark.docker
def test_docker_container_is_locked_down(docker_box: Sandbox) -> None:
    assert isinstance(docker_box, DockerSandbox) and docker_box.container_id
    host = connect_docker().api.inspect_container(docker_box.container_id)
    settings = host["HostConfig"]
    assert settings["NetworkMode"] == "none"
    assert settings["PidsLimit"] == CONFIG.pids
    assert settings["Memory"] == 512 * 1024 * 1024 == settings["MemorySwap"]
    assert settings["NanoCpus"] == 1_000_000_000
    assert settings["CapDrop"] == ["ALL"] and settings["ReadonlyRootfs"]
    assert "no-new-privileges" in settings["SecurityOpt"]
    assert host["Config"]["Labels"]["apprentice.sandbox"] == "1"


@pytest.mark.docker
def test_docker_fork_bomb_is_contained(docker_box: Sandbox) -> None:
    result = docker_box.run("bomb() { bomb | bomb & }; bomb; sleep 30", timeout=5)
    assert result.timed_out
    after = docker_box.run("echo alive")
    assert after.output == "alive\n" and after.exit_code == 0
    count = docker_box.run("ls -d /proc/[0-9]* | wc -l").output
    assert int(count) < 12  # init, sleep, the two shells and this pipeline


@pytest.mark.docker
def test_docker_memory_bomb_is_contained(docker_box: Sandbox) -> None:
    docker_box.run("export KEPT=yes")
    bomb = "python3 -c 'b = []\nwhile True: b.append(bytearray(64 << 20))'"
    result = docker_box.run(bomb, timeout=60)
    assert result.exit_code == 137 and not result.timed_out  # SIGKILL from the OOM killer
    assert "Killed" in result.output and not result.shell_restarted
    after = docker_box.run("echo $KEPT")
    assert after.output == "yes\n" and after.exit_code == 0


@pytest.mark.docker
def test_docker_sees_nothing_of_the_host_but_the_workspace(docker_box: Sandbox) -> None:
    disk_backed = r"' - (ext[234]|xfs|btrfs|zfs|f2fs|9p|virtiofs|nfs4?|fuse[.a-z]*) '"
    listed = docker_box.run(f"grep -E {disk_backed} /proc/self/mountinfo | cut -d' ' -f5")
    from_host = set(listed.output.split())
    assert "/workspace" in from_host
    # Besides the workspace: Docker's own read-only files, its init binary (`init=True`) and
    # the owner's heartbeat folder, read-only and holding nothing but the heartbeat.
    docker_files = {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/usr/sbin/docker-init",
                    "/run/apprentice-owner"}
    assert from_host - {"/workspace"} <= docker_files
    assert docker_box.run("ls /run/apprentice-owner").output.split() == ["alive"]
    assert docker_box.run("touch /run/apprentice-owner/x").exit_code != 0
    assert docker_box.run("ls /var/run/docker.sock /run/docker.sock").exit_code != 0
    for target in ("/etc/evil", "/home/agent/evil", "/var/tmp/evil", "/opt/evil", "/evil"):
        assert docker_box.run(f"touch {target}").exit_code != 0, target
    assert docker_box.run("touch /workspace/ok /tmp/ok").exit_code == 0


class _LooseSandbox(DockerSandbox):
    """A sandbox whose container is, by mistake, not locked down as configured."""

    host: dict[str, object] = {}
    container: dict[str, object] = {}
    created: list[str] = []

    def _container_user(self) -> str:
        return str(self.container.get("user") or super()._container_user())

    def _host_options(self) -> dict[str, object]:
        return {**super()._host_options(), **self.host}

    def _container_options(self, user: str) -> dict[str, object]:
        return {**super()._container_options(user), **self.container}

    def _create_container(self, client: object, user: str) -> str:
        self.created.append(super()._create_container(client, user))  # type: ignore[arg-type]
        return self.created[-1]


@pytest.mark.docker
@pytest.mark.parametrize(
    ("host", "container", "reason"),
    [
        ({"cap_drop": None}, {}, "capabilities are not all dropped"),
        ({}, {"user": "0:0"}, "commands run as root"),
        ({"read_only": False}, {}, "root filesystem is writable"),
        ({"pids_limit": None}, {}, "no limit of 128 processes"),
    ],
)
def test_docker_fails_closed_without_its_isolation(
    workspace: Path,
    request: pytest.FixtureRequest,
    host: dict[str, object],
    container: dict[str, object],
    reason: str,
) -> None:
    request.getfixturevalue("sandbox_image")
    loose = type("Loose", (_LooseSandbox,), {"host": host, "container": container, "created": []})
    box = loose(CONFIG, workspace)
    try:
        with pytest.raises(SandboxError, match="not isolated as configured") as caught:
            box.start()
    finally:
        box.close()  # only needed if it wrongly started
    assert reason in str(caught.value)
    assert box.created and not connect_docker().containers.list(
        all=True, filters={"id": box.created[0]})
    with pytest.raises(SandboxError, match="not started"):
        box.run("true")


def test_isolation_check_names_each_missing_piece() -> None:
    good = {"uid": "1000", "CapEff": "0" * 16, "CapPrm": "0" * 16, "CapBnd": "0" * 16,
            "CapAmb": "0" * 16, "NoNewPrivs": "1", "net": "lo", "root": "ro,relatime",
            "tmp": "tmpfs", "workspace": "rw", "memory": str(512 << 20), "pids": "128"}
    assert isolation_problems(good, CONFIG) == []
    bad = {**good, "net": "eth0 lo", "memory": "9223372036854771712", "socket": "/run/x.sock"}
    del bad["workspace"]
    found = " | ".join(isolation_problems(bad, CONFIG))
    for words in ("network interfaces besides loopback: eth0 lo", "no memory limit of 512m",
                  "Docker socket is inside", "/workspace is not mounted"):
        assert words in found
    assert isolation_problems({**good, "net": "eth0 lo"},
                              CONFIG.model_copy(update={"network": True})) == []
    assert memory_bytes("2g") == 2 << 30 and memory_bytes("512m") == 512 << 20


@pytest.mark.docker
def test_docker_sandbox_close_removes_the_container(
    workspace: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("sandbox_image")
    with DockerSandbox(CONFIG, workspace) as box:
        container_id = box.container_id
        assert box.run("echo in").output == "in\n"
    assert container_id is not None
    assert not connect_docker().containers.list(all=True, filters={"id": container_id})


@pytest.mark.docker
def test_missing_image_says_how_to_build_it(
    workspace: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("sandbox_image")
    config = CONFIG.model_copy(update={"image": "apprentice-sandbox:no-such-tag"})
    with pytest.raises(SandboxError, match="agent sandbox build --offline"):
        make_sandbox(config, workspace)


@pytest.mark.docker
def test_docker_session_survives_a_container_restart(docker_box: Sandbox) -> None:
    assert isinstance(docker_box, DockerSandbox) and docker_box.container_id
    docker_box.run("export LOST=1")
    connect_docker().containers.get(docker_box.container_id).restart(timeout=0)
    result = docker_box.run('echo "[$LOST]"')
    assert result.shell_restarted and result.output == "[]\n"
    assert docker_box.run("sleep 4242", timeout=1).timed_out  # the control shell is back too
    assert docker_box.run("echo ok").output == "ok\n"


def test_unreachable_docker_says_what_to_do(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    started = time.monotonic()
    with pytest.raises(SandboxError) as caught:
        make_sandbox(CONFIG, workspace)
    message = str(caught.value)
    assert "not reachable at unix:///nonexistent" in message
    assert "--sandbox local" in message and "dockerd" in message
    assert time.monotonic() - started < 10


def test_unknown_kind_is_refused(workspace: Path) -> None:
    with pytest.raises(SandboxError, match="Unknown sandbox kind 'vm'"):
        make_sandbox(CONFIG.model_copy(update={"kind": "vm"}), workspace)


# --- the protocol and the image recipe ------------------------------------------------------


def test_sentinel_is_found_across_any_chunking() -> None:
    stream = b"partial output" + b"\x1etok:7\x1f" + b"-3\n"
    for size in (1, 2, 5, len(stream)):
        collector = OutputCollector(b"\x1etok:7\x1f", head_bytes=100, tail_bytes=100)
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert [collector.feed(chunk) for chunk in chunks][-1]
        assert collector.status == -3
        assert collector.render(1000) == ("partial output", 0)


def test_collector_memory_is_bounded_and_cut_is_counted() -> None:
    collector = OutputCollector(b"\x1eend\x1f", head_bytes=50, tail_bytes=50)
    for i in range(10_000):
        collector.feed(f"{i:09d}\n".encode())
    assert collector.feed(b"\x1eend\x1f0\n")
    text, cut = collector.render(40)
    assert text.startswith("000000000\n0000000") and text.endswith("09999\n")
    assert cut == 100_000 - 40


def test_dockerfile_matches_the_offline_recipe() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM debian:bookworm-slim" in text
    assert all(package in text for package in PACKAGES)
    assert "--uid 1000" in text and "USER agent" in text and "WORKDIR /workspace" in text


# --- per-repository and per-task images -----------------------------------------------------


def _repository(path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A git repository at `path` holding `files`; returns it and its HEAD."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    run = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*run, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*run, "add", "-A"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "files"], check=True)
    head = subprocess.run([*run, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return path, head.stdout.strip()


SETUP = """[sandbox]
setup = '''
mkdir -p /opt/setup
cp requirements.txt /opt/setup/
date +%s%N > /opt/setup/stamp
ls /sys/class/net > /opt/setup/net
'''
"""


@pytest.mark.docker
def test_repository_setup_runs_once_into_a_cached_image(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("sandbox_image")
    client = connect_docker()
    repo, head = _repository(tmp_path / "repo", {SETUP_FILE: SETUP, "requirements.txt": "a\n"})
    made: set[str] = set()
    try:
        config = image_for_repository(repo, head, CONFIG)
        made.add(config.image)
        assert config.image.startswith("apprentice-setup:")
        again = image_for_repository(repo, head, CONFIG)
        assert again.image == config.image
        assert client.images.get(again.image).id == client.images.get(config.image).id
        workspace = tmp_path / "workspace"
        workspace.mkdir()
        with DockerSandbox(config, workspace) as box:
            seen = box.run("cat /opt/setup/requirements.txt /opt/setup/net; ls -A /workspace")
            assert seen.output == "a\nlo\n"  # no network in the setup; /workspace is ours
            assert box.run("touch /opt/setup/x").exit_code != 0  # still read-only
            assert box.run("id -u").output.strip() != "0"
        (repo / "requirements.txt").write_text("b\n")
        _, changed = _repository(repo, {})
        made.add(image_for_repository(repo, changed, CONFIG).image)
        assert len(made) == 2  # a new lockfile content, a new image
        other = CONFIG.model_copy(update={"image": "some/task-image:1"})
        assert image_for_repository(repo, head, other) == other  # a task's own image wins
    finally:
        for tag in made:
            client.images.remove(tag, force=True)


@pytest.mark.docker
def test_a_failing_setup_says_why_and_leaves_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("sandbox_image")
    setup = "[sandbox]\nsetup = 'echo going wrong; exit 3'\n"
    repo, head = _repository(tmp_path / "repo", {SETUP_FILE: setup})
    client = connect_docker()
    images_before = {i.id for i in client.images.list("apprentice-setup")}
    with pytest.raises(SandboxError) as caught:
        image_for_repository(repo, head, CONFIG)
    message = str(caught.value)
    assert "failed (exit 3)" in message and "going wrong" in message
    assert "APPRENTICE_SETUP_NETWORK=1" in message
    assert not client.containers.list(all=True, filters={"label": SETUP_LABEL})
    assert {i.id for i in client.images.list("apprentice-setup")} == images_before


@pytest.mark.docker
def test_a_task_image_reaches_the_sandbox_and_the_verifier(example, scripted) -> None:
    from agent.episode import EpisodeConfig
    from agent.llm import LLMConfig
    from agent.scripted_model import tool_call
    from agent.solve import solve
    from agent.tasks import Task
    from trajectories.reader import read_trajectory

    client = connect_docker()
    alias = "apprentice-sandbox:task-image-test"
    client.images.get(DEFAULT_IMAGE).tag(alias)
    repo, issue = example
    try:
        task = Task.from_issue_file(issue, repo).model_copy(update={"image": alias})
        scripted.script = [{"tool_calls": [tool_call("bash", {"command": "echo hi"})]},
                           {"tool_calls": [tool_call("finish", {"summary": "done"})]}]
        options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=scripted.url),
                               sandbox=CONFIG, max_steps=3)
        result = solve(task, options)
        events = read_trajectory(Path(result.trajectory_path)).events
        assert events[0].sandbox["image"] == alias
        assert [e.image for e in events if e.type == "verified"] == [alias]
        missing = task.model_copy(update={"image": "apprentice-sandbox:no-such-task-image"})
        with pytest.raises(SandboxError, match="no-such-task-image"):
            solve(missing, options)
    finally:
        client.images.remove(alias)
