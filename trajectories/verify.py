"""The reward: apply a patch to a fresh copy at the base commit and run the tests in a fresh
sandbox. It never trusts what the episode claimed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools.host_git import isolated_env
from tools.process_owner import ProcessOwner
from tools.sandbox import SandboxConfig, make_sandbox
from trajectories.test_runners import runner_for_command

VERIFY_TIMEOUT_S = 900.0
VERIFY_PREFIX = "apprentice-verify-"
"""Verify folders are `<tmp>/apprentice-verify-<pid>-<random>`, holding the tree and OWNER_NOTE."""
OWNER_NOTE = "owner.json"


@dataclass
class VerifyResult:
    """The verdict and the evidence."""

    reward: int
    test_command: str
    test_output: str
    exit_code: int | None
    image: str
    duration_s: float


def test_invocation(test_command: str, fail_to_pass: list[str], pass_to_pass: list[str]) -> str:
    """The command that judges the patch: the listed tests when there are lists, else all.

    The ids are SWE-bench's, turned into the arguments of the runner `test_command` is
    (`runner_for_command`): Django labels for runtests.py, node ids for pytest."""
    runner = runner_for_command(test_command)
    return runner.invocation(test_command, [*fail_to_pass, *pass_to_pass])


def export_tree(repo: Path, commit: str, dest: Path) -> None:
    """Write the files of `commit` into `dest` as a fresh git repository at that commit."""
    env = isolated_env({"user.name": "apprentice", "user.email": "agent@apprentice.invalid"})
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit], env=env,
                             capture_output=True, check=True, timeout=300)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=300)
    # The tree is the repository's (perhaps hostile) content: git runs with `isolated_env`, so
    # its .gitattributes cannot name a filter of the user's global config.
    env_git = ["git", "-C", str(dest)]
    subprocess.run([*env_git, "init", "-q", "--template="], check=True, timeout=60, env=env)
    subprocess.run([*env_git, "add", "-A"], check=True, timeout=300, env=env)
    subprocess.run([*env_git, "commit", "-q", "--no-verify", "-m", f"base {commit}"],
                   check=True, timeout=300, capture_output=True, env=env)


def apply_diff(tree: Path, diff: str) -> str | None:
    """Apply `diff` to the git tree at `tree` (git's own environment shut out); the reason
    when it does not apply, else None."""
    applied = subprocess.run(["git", "-C", str(tree), "apply", "--whitespace=nowarn", "-"],
                             input=diff.encode(), capture_output=True, timeout=120,
                             env=isolated_env())
    if applied.returncode == 0:
        return None
    return applied.stderr.decode(errors="replace").strip() or "git apply failed"


def verify_patch(
    repo: Path,
    base_commit: str,
    patch: str,
    test_command: str,
    fail_to_pass: list[str] | None = None,
    pass_to_pass: list[str] | None = None,
    sandbox: SandboxConfig | None = None,
    timeout: float = VERIFY_TIMEOUT_S,
    test_patch: str = "",
) -> VerifyResult:
    """Reward 1 iff the patch applies and the tests pass on it in a fresh sandbox, else 0.

    `test_patch` (SWE-bench's) is applied after the model's patch, so the tests it adds or
    changes judge the model's code, as the SWE-bench harness does."""
    config = sandbox or SandboxConfig()
    command = test_invocation(test_command, fail_to_pass or [], pass_to_pass or [])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{VERIFY_PREFIX}{os.getpid()}-") as tmp:
        ProcessOwner.current().write(Path(tmp) / OWNER_NOTE)  # outside what the sandbox sees
        tree = Path(tmp) / "workspace"
        tree.mkdir()
        export_tree(Path(repo), base_commit, tree)
        for name, diff in (("the patch", patch), ("the test patch", test_patch)):
            if not diff.strip():
                continue
            reason = apply_diff(tree, diff)
            if reason is not None:
                return VerifyResult(0, command, f"{name} does not apply: {reason}", None,
                                    config.image, time.monotonic() - started)
        box = make_sandbox(config, tree)
        try:
            box.start()
            result = box.run(command, timeout=timeout)
        finally:
            box.close()
    reward = int(result.exit_code == 0 and not result.timed_out)
    return VerifyResult(reward, command, result.output, result.exit_code, config.image,
                        time.monotonic() - started)


def orphaned_verify_folders(root: Path | None = None) -> list[Path]:
    """Verify folders under `root` (default: the temp folder) whose owner process is gone,
    left by a verify that was killed. A folder without a readable owner note is left alone."""
    base = Path(root or tempfile.gettempdir())
    found = []
    for folder in sorted(base.glob(f"{VERIFY_PREFIX}*")):
        owner = ProcessOwner.read(folder / OWNER_NOTE)
        if folder.is_dir() and owner is not None and owner.gone():
            found.append(folder)
    return found


def remove_folder(folder: Path) -> str | None:
    """Delete `folder` and everything in it; the reason it could not, or None."""
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        return str(exc)
    return None
