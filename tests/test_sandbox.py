"""The sandboxes, for real: a Docker container (marked `docker`) and a local bash.

Docker tests skip when the engine or the image is missing, unless APPRENTICE_REQUIRE_DOCKER=1
(CI), where they fail instead. As root with debootstrap, a missing image is built (a minute).
"""

from __future__ import annotations

import os
import shutil
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
