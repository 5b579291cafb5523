"""SWE-bench interop: predictions the harness accepts, each repository's tests run as SWE-bench
runs them (real Django and Sympy rows), and a set-up a task can bring. Docker, git and the
model server are real."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import git
import pytest

from agent.scripted_model import tool_call
from agent.tasks import Task
from tests.test_replay_import import instance_for
from tests.test_solve import FIX_SCRIPT, run_cli
from trajectories import verify
from trajectories.events import Finished, SessionStarted, Verified
from trajectories.export import prediction_problems
from trajectories.reader import read_trajectory
from trajectories.recorder import TrajectoryRecorder
from trajectories.test_runners import django_label, runner_for_command, runner_for_repo

DATA = Path(__file__).parent / "data" / "swebench"


def row(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def harness_command(name: str) -> str:
    """The command SWE-bench's eval.sh ran for the instance (tests/data/swebench/README.md)."""
    lines = (DATA / "README.md").read_text().splitlines()
    wanted = {"django__django-11099": "runtests.py", "sympy__sympy-20590": "bin/test"}[name]
    return next(line.strip() for line in lines if wanted in line and line.startswith("    "))


def task_for(name: str, tmp_path: Path) -> Task:
    """The real instance as a task, on a stand-in clone whose HEAD plays its base commit."""
    repo = git.Repo.init(tmp_path / name)
    (tmp_path / name / "README").write_text("stand-in\n")
    repo.index.add(["README"])
    head = repo.index.commit("base").hexsha
    return Task.from_swebench({**row(name), "problem_statement": "fix it",
                               "base_commit": head}, tmp_path / name)


# --- each repository's test runner ----------------------------------------------------------


def test_django_ids_become_runtests_labels(tmp_path: Path) -> None:
    task = task_for("django__django-11099", tmp_path)
    assert task.test_command == harness_command("django__django-11099").rsplit(" ", 1)[0]
    command = verify.test_invocation(task.test_command, task.FAIL_TO_PASS, task.PASS_TO_PASS)
    args = shlex.split(command)
    assert args[:5] == ["./tests/runtests.py", "--verbosity", "2", "--settings=test_sqlite",
                        "--parallel"]
    labels = args[6:]
    assert labels[0] == "auth_tests.test_validators.UsernameValidatorsTests.test_ascii_validator"
    assert len(labels) == len(task.FAIL_TO_PASS) + len(task.PASS_TO_PASS) == 22
    assert all("(" not in label and " " not in label for label in labels)


def test_django_names_that_are_docstrings_are_not_labels() -> None:
    assert django_label("test_x (a.tests.T)") == "a.tests.T.test_x"
    assert django_label("A docstring's first line (as unittest prints it)") is None
    command = verify.test_invocation(runner_for_repo("django/django").command,
                              ["test_x (a.tests.T)", "Some description"], [])
    assert command.endswith("--parallel 1 a.tests.T.test_x")


def test_sympy_runs_the_test_patch_files_as_the_harness_does(tmp_path: Path) -> None:
    task = task_for("sympy__sympy-20590", tmp_path)
    assert task.test_command == harness_command("sympy__sympy-20590")
    command = verify.test_invocation(task.test_command, task.FAIL_TO_PASS, task.PASS_TO_PASS)
    assert command == task.test_command  # never `bin/test ... test_immutable`: no such file
    assert runner_for_command(command).name == "sympy"


def test_pytest_node_ids_pass_through_and_other_repos_keep_their_own_command(
        example, tmp_path: Path) -> None:
    assert runner_for_repo("https://github.com/psf/requests.git").name == "pytest"
    assert runner_for_repo("sympy/sympy.git").name == "sympy"
    ids = ["tests/test_a.py::test_b[x y]", "tests/test_a.py::test_c"]
    assert verify.test_invocation("python3 -m pytest -q", ids, ids[:1]) == \
        "python3 -m pytest -q 'tests/test_a.py::test_b[x y]' tests/test_a.py::test_c"
    repo, issue = example
    assert Task.from_swebench(instance_for(repo, issue), repo).test_command == \
        "python3 -m pytest -q"


# --- predictions ------------------------------------------------------------------------------


def record(folder: Path, session: str, instance: str, model: str, at: float,
           reward: int | None) -> None:
    recorder = TrajectoryRecorder(folder / f"{session}.jsonl")
    recorder(SessionStarted(session_id=session, timestamp=at, software_version="test",
                            task={"instance_id": instance, "problem_statement": "p",
                                  "test_command": "true"},
                            model=model, system_prompt="s", tools=[], repo="/r",
                            base_commit="0" * 40, branch=f"agent/{session}"))
    recorder(Finished(session_id=session, timestamp=at + 1, exit_status="finished",
                      patch=f"diff of {session}\n"))
    if reward is not None:
        recorder(Verified(session_id=session, timestamp=at + 2, reward=reward,
                          test_command="true", test_output=""))
    recorder.close()


def export(tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "preds.jsonl"
    proc = run_cli("trajectories", "export", "--format", "swebench", "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_export_writes_one_prediction_per_instance(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    record(runs, "a1", "django__django-11099", "m1", 100, 1)
    record(runs, "a2", "django__django-11099", "m1", 200, 0)
    record(runs, "a3", "django__django-11099", "m1", 300, None)
    record(runs, "b1", "sympy__sympy-20590", "m1", 150, None)
    record(runs, "b2", "sympy__sympy-20590", "m2", 250, None)
    assert run_cli("trajectories", "reindex", str(runs)).returncode == 0

    rows = export(tmp_path)
    assert prediction_problems(rows) == []
    assert {r["instance_id"]: r["model_patch"] for r in rows} == {
        "django__django-11099": "diff of a2\n",  # the last verified one
        "sympy__sympy-20590": "diff of b2\n"}    # none verified: the last one
    assert all(set(r) == {"instance_id", "model_name_or_path", "model_patch"} for r in rows)
    assert [r["model_patch"] for r in export(tmp_path, "--pick", "best")][0] == "diff of a1\n"
    assert [r["model_patch"] for r in export(tmp_path, "--pick", "last")][0] == "diff of a3\n"

    only = export(tmp_path, "--instance-id", "sympy__sympy-20590", "--model", "m1")
    assert only == [{"instance_id": "sympy__sympy-20590", "model_name_or_path": "m1",
                     "model_patch": "diff of b1\n"}]
    out = tmp_path / "none.jsonl"
    proc = run_cli("trajectories", "export", "--format", "swebench", "--out", str(out),
                   "--instance-id", "astropy__astropy-1")
    assert proc.returncode == 0 and "no recorded episode of instance 'astropy__astropy-1'" \
        in proc.stderr
    proc = run_cli("trajectories", "export", "--format", "swebench", "--out", str(out),
                   "--pick", "first")
    assert proc.returncode == 1 and "--pick must be one of" in proc.stderr


def test_prediction_problems_are_what_the_harness_rejects() -> None:
    good = {"instance_id": "x", "model_name_or_path": "m", "model_patch": ""}
    assert prediction_problems([good]) == []
    problems = prediction_problems([good, good, {"instance_id": "y", "model_patch": None}])
    assert problems == ["prediction 2: instance_id x repeats",
                        "prediction 3: model_name_or_path must be a string",
                        "prediction 3: model_patch must be a string",
                        "prediction 3 (y): model_name_or_path is empty"]


# --- a set-up from the task -------------------------------------------------------------------

MARKER = "/usr/local/share/apprentice-interop-setup"


@pytest.mark.usefixtures("docker_ready")
def test_a_setup_from_the_instance_builds_the_image_the_episode_runs_in(
        example, scripted, tmp_path: Path) -> None:
    repo, issue = example
    instance = tmp_path / "instance.json"
    instance.write_text(json.dumps(instance_for(repo, issue, setup=f"echo prepared > {MARKER}")))
    scripted.script = [{"tool_calls": [tool_call("bash", {"command": f"cat {MARKER}"})]},
                       *FIX_SCRIPT]
    proc = run_cli("solve", "--instance", str(instance), "--repo", str(repo), "--model",
                   "openai/scripted", "--api-base", scripted.url, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reward"] == 1
    trajectory = read_trajectory(Path(result["trajectory_path"]))
    assert trajectory.header.task["setup"] == f"echo prepared > {MARKER}"
    assert trajectory.header.sandbox["image"].startswith("apprentice-setup:")
    outputs = [e.output for e in trajectory.events if e.type == "tool_result"]
    assert "prepared" in outputs[0]


@pytest.mark.usefixtures("docker_ready")
def test_setup_on_the_command_line_and_its_failure(example, tmp_path: Path) -> None:
    repo, issue = example
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--setup", " ")
    assert proc.returncode == 2 and "--setup is empty" in proc.stderr
    proc = run_cli("solve", str(issue), "--repo", str(repo), "--setup",
                   "echo setting up; exit 3", "--model", "openai/none")
    assert proc.returncode == 1, proc.stderr
    assert "The task's setup of" in proc.stderr and "failed (exit 3)" in proc.stderr
    assert "setting up" in proc.stderr
