"""Task suites: a directory anyone can write, holding tasks the agent is evaluated and trained on.

    SUITE/
      tasks.jsonl     one task per line (SWE-bench instance fields + the fields below)
      suite.json      optional: {"name": ..., "description": ..., ...}
      repos/...       the repositories, as git bundles (`*.bundle`) or plain git repositories

A line of `tasks.jsonl`:

    {"instance_id": "shop-pricing-1", "split": "train",
     "problem_statement": "...", "base_commit": "<sha>",
     "repo_path": "repos/shop-pricing-1.bundle", "test_command": "python3 -m pytest -q",
     "FAIL_TO_PASS": ["tests/test_pricing.py::test_total"], "PASS_TO_PASS": [...]}

`repo_path` is relative to the suite directory (a bundle or a repository folder), so a suite works
offline and can be copied anywhere. Optional fields: `repo` (SWE-bench's owner/name, for
information), `image`, `setup` (a shell command that prepares the sandbox image, as
`agent.tasks.Task.setup`), `test_patch`, `patch` (the gold patch, never shown to the agent) and
`oracle` (the tool calls of a policy that knows the fix, see `finetune.oracle`). FAIL_TO_PASS and
PASS_TO_PASS may be lists or JSON strings of lists, as in SWE-bench's datasets.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.tasks import Task

TASKS_FILE = "tasks.jsonl"
META_FILE = "suite.json"
GIT_TIMEOUT_S = 120


class SuiteError(ValueError):
    """A suite or one of its tasks cannot be used; the message says what to fix."""


class SuiteTask(BaseModel):
    """One line of `tasks.jsonl`."""

    model_config = ConfigDict(extra="allow")

    instance_id: str = Field(min_length=1, description="Unique name of the task.")
    problem_statement: str = Field(min_length=1, description="The issue the agent is given.")
    base_commit: str = Field(min_length=4, description="Commit the episode starts from.")
    repo_path: str = Field(min_length=1, description="Git bundle or repository, relative to "
                           "the suite directory.")
    test_command: str = Field("python3 -m pytest -q", description="Judges the patch.")
    split: str = Field("train", description="`train` or `test` (held out).")
    FAIL_TO_PASS: list[str] = Field(default_factory=list)
    PASS_TO_PASS: list[str] = Field(default_factory=list)
    repo: str | None = Field(None, description="SWE-bench's owner/name, for information.")
    image: str | None = None
    setup: str | None = Field(None, description="Prepares the sandbox image (run once, as "
                              "root, then cached); every episode and verify run in it.")
    test_patch: str = ""
    patch: str = Field("", description="The gold patch; never shown to the agent.")
    oracle: list[dict[str, Any]] = Field(default_factory=list,
                                         description="Tool calls of a policy that knows the fix.")

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class Suite:
    """The tasks of a suite directory, and the lines that could not be read."""

    path: Path
    tasks: list[SuiteTask]
    problems: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    def split(self, name: str | None) -> list[SuiteTask]:
        """The tasks of one split (all tasks when `name` is None)."""
        return [t for t in self.tasks if name is None or t.split == name]

    def task(self, instance_id: str) -> SuiteTask:
        for task in self.tasks:
            if task.instance_id == instance_id:
                return task
        raise SuiteError(f"suite {self.path} has no task {instance_id!r}")

    def digest(self) -> str:
        """sha256 of tasks.jsonl: names exactly this suite (base commits pin the code)."""
        return hashlib.sha256((self.path / TASKS_FILE).read_bytes()).hexdigest()


def load_suite(path: Path) -> Suite:
    """Read a suite directory. Unreadable lines and duplicate ids are reported in `problems`
    and skipped; a missing directory or tasks file raises SuiteError."""
    path = Path(path).expanduser().resolve()
    tasks_file = path / TASKS_FILE
    if not tasks_file.is_file():
        raise SuiteError(f"{path} is not a suite: it has no {TASKS_FILE} (see the README's "
                         "'Fine-tuning' section for the format, or run `agent finetune "
                         "curriculum DIR` to generate one)")
    meta: dict[str, Any] = {}
    if (path / META_FILE).is_file():
        meta = json.loads((path / META_FILE).read_text())
    tasks: list[SuiteTask] = []
    problems: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(tasks_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            task = SuiteTask.model_validate_json(line)
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()
            reason = " ".join(first[:3]) if first else type(exc).__name__
            problems.append(f"{TASKS_FILE}:{number}: skipped: {reason}")
            continue
        if task.instance_id in seen:
            problems.append(f"{TASKS_FILE}:{number}: skipped: duplicate instance_id "
                            f"{task.instance_id!r}")
            continue
        seen.add(task.instance_id)
        tasks.append(task)
    return Suite(path, tasks, problems, meta)


def write_suite(path: Path, tasks: list[SuiteTask], meta: dict[str, Any] | None = None) -> Path:
    """Write `tasks.jsonl` (and `suite.json`) into `path`; repositories are the caller's."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with (path / TASKS_FILE).open("w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(task.model_dump_json(exclude_none=True) + "\n")
    if meta is not None:
        (path / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def checkout_task(suite: Suite, task: SuiteTask, dest: Path) -> Task:
    """Clone the task's repository into `dest` (a fresh folder per episode, so parallel episodes
    and their branches never meet) and return the agent's Task on it."""
    source = (suite.path / task.repo_path).resolve()
    if not source.exists():
        raise SuiteError(f"task {task.instance_id}: repository {task.repo_path} not found in "
                         f"{suite.path}")
    dest = Path(dest)
    _git(["clone", "--quiet", str(source), str(dest)], task)
    found = subprocess.run(["git", "-C", str(dest), "cat-file", "-e",
                            f"{task.base_commit}^{{commit}}"], capture_output=True,
                           timeout=GIT_TIMEOUT_S)
    if found.returncode != 0:
        raise SuiteError(f"task {task.instance_id}: base commit {task.base_commit} is not in "
                         f"{task.repo_path}")
    _git(["-C", str(dest), "checkout", "--quiet", "--detach", task.base_commit], task)
    return Task(instance_id=task.instance_id, repo=str(dest), base_commit=task.base_commit,
                problem_statement=task.problem_statement, test_command=task.test_command,
                FAIL_TO_PASS=task.FAIL_TO_PASS, PASS_TO_PASS=task.PASS_TO_PASS,
                image=task.image, setup=task.setup, test_patch=task.test_patch)


def _git(args: list[str], task: SuiteTask) -> None:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        raise SuiteError(f"task {task.instance_id}: git {args[0] if args[0] != '-C' else args[2]}"
                         f" failed: {reason[-1] if reason else proc.returncode}")
