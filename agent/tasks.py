"""A task: a repository at a base commit, a problem statement and the test command that judges it.

The fields follow SWE-bench, so a SWE-bench instance is a valid task.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tools.workspace_fs import WorkspaceFS
from trajectories.test_runners import PYTEST, runner_for_repo


class TaskError(ValueError):
    """A task cannot be built from what was given; the message says what to pass."""


class Task(BaseModel):
    """What an episode must do and how its result is judged."""

    instance_id: str = Field(description="A name for the task (the issue file's stem by default).")
    repo: str = Field(description="Path of the repository (a git work tree).")
    base_commit: str | None = Field(None, description="Commit to start from (default: HEAD).")
    problem_statement: str = Field(description="The issue text the agent is given.")
    test_command: str = Field(description="Shell command run in the sandbox; exit 0 = pass.")
    FAIL_TO_PASS: list[str] = Field(default_factory=list,
                                    description="Tests that must start passing.")
    PASS_TO_PASS: list[str] = Field(default_factory=list,
                                    description="Tests that must keep passing.")
    image: str | None = Field(None, description="Sandbox image for this task (default: global).")
    test_patch: str = Field(default="", description="Applied on top of the model's patch "
                            "before the tests run (SWE-bench); never shown to the agent.")
    setup: str | None = Field(None, description="Shell command run once, as root, to prepare "
                              "the sandbox image (like .apprentice.toml's `setup`, which it "
                              "replaces); the result is cached as an image. Every episode "
                              "applies it (`agent.episode`).")

    @classmethod
    def from_issue_file(cls, issue: Path, repo: Path, test_command: str | None = None) -> Task:
        issue = Path(issue)
        if not issue.is_file():
            raise TaskError(f"issue file {issue} not found; pass the path of a markdown file.")
        text = issue.read_text().strip()
        if not text:
            raise TaskError(f"issue file {issue} is empty; describe the problem in it.")
        command = test_command or suggest_test_command(Path(repo))
        if not command:
            raise TaskError(
                f"could not tell how to run the tests of {repo}; pass --test-cmd 'COMMAND'."
            )
        return cls(instance_id=issue.stem, repo=str(repo), problem_statement=text,
                   test_command=command)

    @classmethod
    def from_swebench(cls, instance: dict[str, Any], repo: Path,
                      test_command: str | None = None) -> Task:
        """A task from a SWE-bench instance, worked on in `repo`, a local clone of the
        instance's repository that holds `base_commit`. The gold `patch` is never used.

        The tests run as SWE-bench runs them for the instance's `repo` (`runner_for_repo`:
        Django's runtests.py, Sympy's bin/test), else as `repo` suggests (pytest, ...)."""
        missing = [k for k in ("instance_id", "base_commit", "problem_statement")
                   if not instance.get(k)]
        if missing:
            raise TaskError(f"the SWE-bench instance lacks {', '.join(missing)}; an instance "
                            "needs instance_id, base_commit and problem_statement.")
        name = instance["instance_id"]
        commit = instance["base_commit"]
        found = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"],
                               capture_output=True, timeout=60)
        if found.returncode != 0:
            raise TaskError(
                f"base commit {commit} of {name} is not in {repo}; pass --repo with a clone of "
                f"{instance.get('repo') or 'its repository'} (or run `git fetch origin {commit}`)."
            )
        command = test_command or _swebench_test_command(instance, Path(repo))
        if not command:
            raise TaskError(f"could not tell how to run the tests of {repo}; pass --test-cmd.")
        setup = instance.get("setup")
        if setup is not None and not isinstance(setup, str):
            raise TaskError(f"setup of {name} must be a shell command (a string)")
        return cls(instance_id=name, repo=str(repo), base_commit=commit, setup=setup or None,
                   problem_statement=instance["problem_statement"], test_command=command,
                   FAIL_TO_PASS=_test_list(instance, "FAIL_TO_PASS"),
                   PASS_TO_PASS=_test_list(instance, "PASS_TO_PASS"),
                   test_patch=instance.get("test_patch") or "",
                   image=instance.get("image") or None)


def _swebench_test_command(instance: dict[str, Any], repo: Path) -> str | None:
    """The test command SWE-bench uses for the instance's repository, else `repo`'s own."""
    runner = runner_for_repo(instance.get("repo"))
    if runner is PYTEST:
        return suggest_test_command(repo)
    return runner.task_command(instance.get("test_patch") or "")


def _test_list(instance: dict[str, Any], key: str) -> list[str]:
    """SWE-bench stores test lists as JSON strings in its datasets and as lists elsewhere."""
    value = instance.get(key) or []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise TaskError(f"{key} of {instance.get('instance_id')} is not a JSON list") from None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise TaskError(f"{key} of {instance.get('instance_id')} must be a list of test names")
    return value


def load_swebench_instance(path: Path, instance_id: str | None = None) -> dict[str, Any]:
    """One instance from a JSON file (an object or a list) or a JSONL file, picked by id when
    the file holds several."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"instance file {path} not found; pass a SWE-bench JSON or JSONL file.")
    text = path.read_text()
    try:
        data = json.loads(text)
        instances = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        try:
            instances = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path} is neither JSON nor JSONL ({exc})") from None
    if not all(isinstance(i, dict) for i in instances):
        raise TaskError(f"{path} does not hold SWE-bench instances (JSON objects).")
    if instance_id is not None:
        instances = [i for i in instances if i.get("instance_id") == instance_id]
        if not instances:
            raise TaskError(f"{path} has no instance {instance_id!r}.")
        if len(instances) > 1:
            raise TaskError(f"{path}: {len(instances)} instances share id {instance_id!r}; "
                            "keep one of them in the file (ids must be unique).")
    if len(instances) != 1:
        ids = ", ".join(str(i.get("instance_id")) for i in instances[:5])
        raise TaskError(f"{path} holds {len(instances)} instances ({ids}, ...); pick one with "
                        "--instance-id.")
    return instances[0]


def suggest_test_command(repo: Path) -> str | None:
    """The test command a repository suggests by its layout, or None."""
    fs = WorkspaceFS(repo)
    names = {entry.name for entry in fs.list_dir()}

    def has(name: str) -> bool:
        return name in names

    def text(name: str) -> str:
        """A top-level file's text, read without leaving the repository ('' if it cannot be)."""
        try:
            return fs.read_bytes(name, 1_000_000).decode(errors="replace") if has(name) else ""
        except OSError:
            return ""

    python_tests = any(fnmatch.fnmatch(n, "test_*.py") or fnmatch.fnmatch(n, "*_test.py")
                       for n in names) or has("tests") or has("test") or has("pytest.ini") \
        or has("conftest.py")
    if python_tests or "pytest" in text("pyproject.toml"):
        return "python3 -m pytest -q"
    if has("package.json"):
        try:
            scripts = json.loads(text("package.json") or "{}").get("scripts", {})
        except (ValueError, AttributeError):
            scripts = {}
        if isinstance(scripts, dict) and "test" in scripts:
            return "npm test"
    if has("Cargo.toml"):
        return "cargo test"
    if has("go.mod"):
        return "go test ./..."
    if "\ntest:" in "\n" + text("Makefile"):
        return "make test"
    return None
