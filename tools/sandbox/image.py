"""Build the sandbox image: from the Dockerfile where a registry answers, else with debootstrap.

The offline build needs no registry at all: debootstrap installs Debian bookworm (from a
Debian mirror) into a folder, the `agent` user is added, and the folder is streamed as a tar
into `docker import`. Both ways give an image with the same packages, user and defaults.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
from docker.errors import BuildError, DockerException, ImageNotFound

from tools.sandbox.base import DEFAULT_IMAGE, SANDBOX_UID, WORKSPACE, SandboxError

logger = logging.getLogger(__name__)

DOCKERFILE = Path(__file__).with_name("Dockerfile")
BASE_IMAGE = "debian:bookworm-slim"
SUITE = "bookworm"
PACKAGES = ("bash", "coreutils", "git", "python3", "python3-pytest", "procps", "ca-certificates")
"""What the sandbox image holds, in both builds (keep the Dockerfile in step)."""
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "APPRENTICE_DEBIAN_MIRROR"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IMPORT_CHANGES = [
    "USER agent",
    f"WORKDIR {WORKSPACE}",
    f"ENV PATH={SANDBOX_PATH}",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    'CMD ["bash"]',
]
# What slim images leave out; removed after debootstrap (copyright files are kept).
_SLIMMED = ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")

# debootstrap's one-line-per-package progress, left out of the log.
_PER_PACKAGE = re.compile(r"^I: (Retrieving|Validating) \S+ \S+$|^I: \w+ \S+\.\.\.$")

Log = Callable[[str], None]


def connect_docker(timeout: float = 10.0) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (the local socket by default), checked live."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError) as exc:
        raise SandboxError(
            f"Docker engine not reachable at {where}: start it (`sudo systemctl start docker` or"
            " `sudo dockerd &`), or pass --sandbox local (no isolation)."
        ) from exc
    return client


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    """Whether the engine already has an image called `tag`."""
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def build_image(
    tag: str = DEFAULT_IMAGE,
    offline: bool = False,
    force: bool = False,
    log: Log = logger.info,
    mirror: str | None = None,
) -> str:
    """Make sure the sandbox image `tag` exists (building it unless it does or `force`).

    Online: `docker build` of the Dockerfile, falling back to the offline build when no
    registry answers. Offline: debootstrap + `docker import` (needs root and debootstrap).
    Returns the tag.
    """
    client = connect_docker(timeout=600)
    old_id = client.images.get(tag).id if image_exists(client, tag) else None
    if old_id and not force:
        log(f"Image {tag} already exists (use --force to rebuild).")
        return tag
    started = time.monotonic()
    if not offline:
        try:
            _build_from_dockerfile(client, tag, log)
        except _RegistryUnavailable as exc:
            log(f"No registry answered ({exc}); building offline with debootstrap instead.")
            offline = True
    if offline:
        _build_with_debootstrap(client, tag, log, mirror or os.environ.get(MIRROR_ENV))
    new_id = client.images.get(tag).id
    if old_id and old_id != new_id:
        with contextlib.suppress(DockerException):  # still used by a container: leave it
            client.images.remove(old_id)
    log(f"Built {tag} ({new_id[:19]}) in {time.monotonic() - started:.0f} s.")
    return tag


class _RegistryUnavailable(Exception):
    """The base image is not here and cannot be pulled."""


def _build_from_dockerfile(client: docker.DockerClient, tag: str, log: Log) -> None:
    if not image_exists(client, BASE_IMAGE):
        log(f"Pulling {BASE_IMAGE} ...")
        try:
            client.images.pull(BASE_IMAGE)
        except DockerException as exc:
            raise _RegistryUnavailable(str(exc).splitlines()[0][:200]) from exc
    log(f"Building {tag} from {DOCKERFILE} ...")
    try:
        _, lines = client.images.build(
            fileobj=io.BytesIO(DOCKERFILE.read_bytes()), tag=tag, rm=True, forcerm=True
        )
    except BuildError as exc:
        tail = "".join(str(entry.get("stream", "")) for entry in list(exc.build_log)[-15:])
        raise SandboxError(
            f"Building {tag} from {DOCKERFILE} failed: {exc.msg}\n{tail}\n"
            "If apt cannot reach a mirror, try `agent sandbox build --offline` with "
            f"{MIRROR_ENV} set to a reachable Debian mirror."
        ) from exc
    for entry in lines:
        text = str(entry.get("stream", "")).rstrip()
        if text.startswith("Step "):
            log(text)


def _build_with_debootstrap(
    client: docker.DockerClient, tag: str, log: Log, mirror: str | None
) -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "The offline image build runs debootstrap, which needs root: run "
            "`sudo agent sandbox build --offline` (or build online where a registry is reachable)."
        )
    if shutil.which("debootstrap") is None:
        raise SandboxError(
            "The offline image build needs debootstrap: install it "
            "(`sudo apt-get install debootstrap`, or `dnf install debootstrap`) and retry."
        )
    mirror = mirror or DEFAULT_MIRROR
    scratch = "/var/tmp" if os.path.isdir("/var/tmp") else None  # on disk, unlike many /tmp
    with tempfile.TemporaryDirectory(prefix="apprentice-rootfs-", dir=scratch) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(rootfs, mirror, log)
        _add_agent_user(rootfs)
        _slim(rootfs)
        log(f"Importing the root filesystem into Docker as {tag} ...")
        _import(client, rootfs, tag)


def _debootstrap(rootfs: Path, mirror: str, log: Log) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(rootfs),
        mirror,
    ]
    log(f"Running {' '.join(command)} (about a minute) ...")
    recent: deque[str] = deque(maxlen=30)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            recent.append(line)
            if line and not _PER_PACKAGE.match(line):
                log(f"debootstrap: {line}")
        code = proc.wait()
    if code != 0:
        details = "\n".join(recent)
        raise SandboxError(
            f"debootstrap failed (exit {code}) using mirror {mirror}; set {MIRROR_ENV} to a "
            f"reachable Debian mirror if this one is not.\n{details}"
        )


def _add_agent_user(rootfs: Path) -> None:
    """The non-root `agent` user (uid/gid 1000, with a home) and the workspace it owns."""
    uid = str(SANDBOX_UID)
    subprocess.run(
        ["chroot", str(rootfs), "groupadd", "--gid", uid, "agent"], check=True, timeout=60
    )
    subprocess.run(
        [
            "chroot",
            str(rootfs),
            "useradd",
            "--uid",
            uid,
            "--gid",
            uid,
            "--create-home",
            "--shell",
            "/bin/bash",
            "agent",
        ],
        check=True,
        timeout=60,
    )
    workspace = rootfs / WORKSPACE.lstrip("/")
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, SANDBOX_UID, SANDBOX_UID)


def _slim(rootfs: Path) -> None:
    """Drop package caches, indexes, docs and the host's identity from the root filesystem."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for path in rootfs.glob(pattern):
            if path.is_file():
                path.unlink()
    for folder in _SLIMMED:
        shutil.rmtree(rootfs / folder, ignore_errors=True)
    for doc in (rootfs / "usr/share/doc").glob("*/*"):
        if doc.name != "copyright":
            shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()
    for log_file in (rootfs / "var/log").rglob("*"):
        if log_file.is_file():
            log_file.unlink()
    (rootfs / "etc/hostname").write_text("sandbox\n")
    (rootfs / "etc/resolv.conf").unlink(missing_ok=True)


def _import(client: docker.DockerClient, rootfs: Path, tag: str) -> None:
    """Stream `rootfs` as a tar into `docker import`, with the image's defaults."""
    command = ["tar", "--numeric-owner", "-C", str(rootfs)]
    command += [f"--exclude=./{name}/*" for name in ("dev", "proc", "sys")]
    command += ["-cf", "-", "."]
    repository, colon, version = tag.rpartition(":")
    if not colon or "/" in version:  # no tag given (a colon, if any, is a registry port)
        repository, version = tag, "latest"
    with subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        stream = tar.stdout

        def chunks() -> Iterator[bytes]:
            while block := stream.read(1 << 20):
                yield block

        try:
            client.api.import_image(
                src=chunks(),
                repository=repository,
                tag=version,
                changes=_IMPORT_CHANGES,
                stream_src=True,
            )
        except DockerException as exc:
            tar.kill()
            raise SandboxError(f"docker import of the root filesystem failed: {exc}") from exc
        if tar.wait() != 0:
            raise SandboxError(f"tar of the root filesystem failed (exit {tar.returncode}).")
    if not image_exists(client, tag):
        raise SandboxError(f"docker import finished but image {tag} is missing.")
