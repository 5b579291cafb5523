"""Per-repository sandbox images: a repository's setup command, run once, kept as an image.

A repository may carry `.apprentice.toml`:

    [sandbox]
    image = "apprentice-sandbox:latest"        # base image (default: the configured one)
    setup = "pip install -r requirements.txt"  # run once, as root, in /workspace
    setup_files = ["requirements.txt"]         # what the setup reads (default: lockfiles found)

The setup runs in a throwaway container from the base image with the repository's files (at
the session's base commit) in /workspace, with no network unless the user allows it
(`SandboxConfig.setup_network`). The container is committed as `apprentice-setup:<key>`, where
the key hashes the base image's id, the setup command and the setup files' contents; later
sessions with the same key start from that image at once. /workspace is emptied before the
commit: episodes mount the session's working tree there.

A task (a SWE-bench instance's `setup`, `agent solve --setup CMD`) may give the setup command
instead, since it cannot add a file to the base commit: it replaces the toml's command and is
built and cached the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound
from pydantic import BaseModel, Field, ValidationError
from requests.exceptions import ReadTimeout

from tools.file_lock import exclusive_lock
from tools.sandbox.base import (
    DEFAULT_IMAGE,
    SETUP_NETWORK_ENV,
    WORKSPACE,
    SandboxConfig,
    SandboxError,
)
from tools.sandbox.image import connect_docker, image_exists

logger = logging.getLogger(__name__)

SETUP_FILE = ".apprentice.toml"
SETUP_REPOSITORY = "apprentice-setup"
SETUP_LABEL = "apprentice.setup"
LOCKFILES = (
    "requirements.txt", "requirements-dev.txt", "pyproject.toml", "setup.py", "setup.cfg",
    "poetry.lock", "uv.lock", "Pipfile.lock", "package.json", "package-lock.json", "yarn.lock",
    "pnpm-lock.yaml", "Cargo.lock", "go.sum", "Gemfile.lock",
)
"""Files whose content keys the setup image when `setup_files` is not given."""

# Run the setup in /workspace, then empty /workspace so the image does not keep the files.
_SETUP_SCRIPT = (
    'cd "$0" && bash -ec "$1"; status=$?; cd / && find "$0" -mindepth 1 -delete; exit $status'
)

Log = Callable[[str], None]


class RepoSetup(BaseModel):
    """The `[sandbox]` table of a repository's .apprentice.toml."""

    image: str | None = Field(default=None, description="Base image for this repository.")
    setup: str | None = Field(
        default=None, description="Shell command run once to prepare the image."
    )
    setup_files: list[str] | None = Field(
        default=None,
        description="Files the setup depends on; their content keys the cached image.",
    )
    setup_timeout: float = Field(default=1800.0, description="Seconds the setup may take.")


def read_files(repo: Path, commit: str, names: list[str]) -> dict[str, bytes | None]:
    """The contents of `names` at `commit` (None for those not there), in one git call."""
    request = "".join(f"{commit}:{name}\n" for name in names).encode()
    done = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch"], input=request,
                          capture_output=True, timeout=60)
    if done.returncode != 0:
        raise SandboxError(f"could not read {repo} at {commit[:12]}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
    out, offset = done.stdout, 0
    found: dict[str, bytes | None] = {}
    for name in names:
        end = out.index(b"\n", offset)
        header = out[offset:end].split()
        offset = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            found[name] = out[offset : offset + size]
            offset += size + 1
        else:
            found[name] = None
            if len(header) == 3:  # a tree or other object: skip its content too
                offset += int(header[2]) + 1
    return found


def read_repo_setup(repo: Path, commit: str) -> RepoSetup | None:
    """The repository's setup at `commit` (from git, not from any working tree), if any."""
    text = read_files(repo, commit, [SETUP_FILE])[SETUP_FILE]
    if text is None:
        return None
    try:
        table = tomllib.loads(text.decode()).get("sandbox", {})
        return RepoSetup.model_validate(table)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise SandboxError(f"{SETUP_FILE} of {repo} at {commit[:12]} is not valid: {exc}") from exc


def setup_key(base_image_id: str, setup: RepoSetup, files: dict[str, bytes | None],
              network: bool) -> str:
    """What names a setup image: the base image, the command, the files it reads."""
    parts = {
        "base": base_image_id,
        "setup": setup.setup,
        "network": network,
        "files": {name: hashlib.sha256(content).hexdigest() if content is not None else None
                  for name, content in sorted(files.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def image_for_repository(repo: Path, commit: str, config: SandboxConfig,
                         log: Log = logger.info, setup: str | None = None) -> SandboxConfig:
    """`config` with the image this repository asks for: its setup image, built if needed.

    `setup` (a task's or the command line's) replaces the setup command of .apprentice.toml
    and runs on top of `config.image`, whichever image that is. Without it, `config` is
    unchanged for repositories without a setup and when `config` names an image other than
    the default (a task's own image wins). Local sandboxes never change (`log` notes that a
    `setup` is not run there).
    """
    if config.kind != "docker":
        if setup is not None:
            log("note: the task's setup is not run: it builds docker sandbox images only")
        return config
    found = read_repo_setup(repo, commit)
    if setup is not None:
        table = found or RepoSetup()
        base = table.image if table.image and config.image == DEFAULT_IMAGE else config.image
        return _setup_image(repo, commit, config, table.model_copy(
            update={"setup": setup, "image": base}), "the task's setup", log)
    if found is None or config.image != DEFAULT_IMAGE:
        return config
    if not found.setup:
        return config.model_copy(update={"image": found.image or config.image})
    return _setup_image(repo, commit, config, found, f"the setup of {SETUP_FILE}", log)


def _setup_image(repo: Path, commit: str, config: SandboxConfig, setup: RepoSetup, what: str,
                 log: Log) -> SandboxConfig:
    """`config` with the image `setup` builds on its base image (built once, then cached)."""
    base = setup.image or config.image
    client = connect_docker()
    try:
        base_id = client.images.get(base).id
    except ImageNotFound:
        raise SandboxError(
            f"Base image {base} for {what} of {repo} not found: build or pull it first "
            "(`agent sandbox build --offline` for the default)."
        ) from None
    names = setup.setup_files if setup.setup_files is not None else list(LOCKFILES)
    files = read_files(repo, commit, names)
    if setup.setup_files is None:
        files = {name: content for name, content in files.items() if content is not None}
    tag = f"{SETUP_REPOSITORY}:{setup_key(base_id, setup, files, config.setup_network)}"
    with exclusive_lock(f"build-{tag.replace(':', '-')}.lock"):  # one build at a time
        if not image_exists(client, tag):
            log(f"Running {what} once, into image {tag} ...")
            _run_setup(client, base, setup, repo, commit, config, tag, what)
    return config.model_copy(update={"image": tag})


def _archive(repo: Path, commit: str) -> bytes:
    done = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                          capture_output=True, timeout=300)
    if done.returncode != 0:
        raise SandboxError(f"git archive of {repo} at {commit[:12]} failed: "
                           f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _run_setup(client: docker.DockerClient, base: str, setup: RepoSetup, repo: Path,
               commit: str, config: SandboxConfig, tag: str, what: str) -> None:
    """Run the setup in a throwaway container from `base`; commit it as `tag` if it passes."""
    api = client.api
    base_config: dict[str, Any] = api.inspect_image(base)["Config"] or {}
    host_config = api.create_host_config(
        network_mode="bridge" if config.setup_network else "none",
        mem_limit=config.memory, memswap_limit=config.memory, pids_limit=config.pids,
        nano_cpus=int(config.cpus * 1e9), init=True,
    )
    container = api.create_container(
        base, command=["bash", "-c", _SETUP_SCRIPT, WORKSPACE, setup.setup or ":"],
        user="0:0", working_dir=WORKSPACE, labels={SETUP_LABEL: tag}, host_config=host_config,
    )["Id"]
    try:
        api.put_archive(container, WORKSPACE, _archive(repo, commit))
        api.start(container)
        try:
            status = api.wait(container, timeout=setup.setup_timeout)["StatusCode"]
        except (ReadTimeout, DockerException):
            status = None
        output = api.logs(container, stdout=True, stderr=True, tail=40).decode(errors="replace")
        if status != 0:
            why = "timed out" if status is None else f"failed (exit {status})"
            hint = "" if config.setup_network else (
                " If it needs the network, allow it for the setup step only with "
                f"{SETUP_NETWORK_ENV}=1 (SandboxConfig.setup_network).")
            raise SandboxError(f"{what[0].upper()}{what[1:]} of {repo} {why}.{hint}\n"
                               f"{output.strip()}")
        changes = [f"WORKDIR {base_config.get('WorkingDir') or WORKSPACE}",
                   f"CMD {json.dumps(base_config.get('Cmd') or ['bash'])}"]
        if base_config.get("User"):
            changes.insert(0, f"USER {base_config['User']}")
        repository, _, version = tag.partition(":")
        api.commit(container, repository=repository, tag=version, changes=changes,
                   message=f"apprentice setup of {repo} at {commit[:12]}")
    finally:
        with contextlib.suppress(DockerException):
            api.remove_container(container, force=True)
