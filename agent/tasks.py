"""A task: a repository at a base commit, a problem statement and the test command that judges it.

The fields follow SWE-bench, so a SWE-bench instance is a valid task.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field


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


def suggest_test_command(repo: Path) -> str | None:
    """The test command a repository suggests by its layout, or None."""
    def has(name: str) -> bool:
        return (repo / name).exists()

    python_tests = any(repo.glob("test_*.py")) or any(repo.glob("*_test.py")) or has("tests") \
        or has("test") or has("pytest.ini") or has("conftest.py")
    pyproject = repo / "pyproject.toml"
    if python_tests or (pyproject.exists() and "pytest" in pyproject.read_text()):
        return "python3 -m pytest -q"
    if has("package.json"):
        scripts = json.loads((repo / "package.json").read_text()).get("scripts", {})
        if "test" in scripts:
            return "npm test"
    if has("Cargo.toml"):
        return "cargo test"
    if has("go.mod"):
        return "go test ./..."
    if has("Makefile") and "\ntest:" in "\n" + (repo / "Makefile").read_text():
        return "make test"
    return None
