"""The sandbox, tried as an attacker would (a hostile model or a hostile repository).

Each test reproduces one way out that was found, and checks it stays shut. Everything they do
is bounded: the "host" files they aim at are in a temporary folder, and the commands they
plant only touch marker files there, so a regression shows as a failed assertion, not harm.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.prompts import system_prompt
from tools import search, workspace_fs
from tools.base import MAX_OUTPUT_CHARS, OUTPUT_SLACK, ToolBox, ToolContext
from tools.control import default_tools
from tools.repo_map import render_repo_map
from tools.sandbox import Sandbox, SandboxConfig, make_sandbox
from tools.sandbox.ownership import chown_tree
from tools.workspace import Workspace

CONFIG = SandboxConfig(memory="512m", pids=128, cpus=1.0, command_timeout=30.0)
RENAME_EXCHANGE = 2
AT_FDCWD = -100
CAP = MAX_OUTPUT_CHARS + OUTPUT_SLACK + 200


@pytest.fixture(params=["openat2", "stepwise"])
def resolution(request: pytest.FixtureRequest) -> Iterator[str]:
    """Both ways `tools.workspace_fs` resolves paths: openat2, and O_NOFOLLOW step by step."""
    workspace_fs.use_openat2(request.param == "openat2")
    yield request.param
    workspace_fs.use_openat2(None)


@pytest.fixture
def box() -> ToolBox:
    return ToolBox(default_tools())


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A folder standing for the rest of the host, with a secret in it."""
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "secret.txt").write_text("HOST-SECRET-CONTENT\n")
    (folder / "secret.py").write_text("def host_only_function():\n    return 'HOST-SECRET'\n")
    return folder


def call(box: ToolBox, ctx: ToolContext, name: str, **args: object):
    return box.call(name, json.dumps(args), ctx)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


# --- 1. git configuration the sandbox writes never runs on the host ---------------------------


@pytest.fixture
def workspace(example: tuple[Path, Path]) -> Workspace:
    return Workspace.create(example[0], "red")


@pytest.fixture
def boxed(workspace: Workspace, docker_ready: None) -> Iterator[Sandbox]:
    sandbox = make_sandbox(CONFIG, workspace.path)
    yield sandbox
    sandbox.close()


@pytest.mark.docker
def test_sandbox_git_config_never_runs_in_host_searches(workspace: Workspace, boxed: Sandbox,
                                                        box: ToolBox, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    command = f"id > {pwned}; false"
    script = f"""
git config core.fsmonitor '{command}'
git config core.hooksPath .git/hooks
git config core.pager '{command}'
git config core.sshCommand '{command}'
git config diff.external '{command}'
git config filter.evil.clean '{command}; cat'
git config filter.evil.process '{command}'
git config include.path ../evil.cfg
printf '[core]\\n\\tfsmonitor = {command}\\n' > evil.cfg
mkdir -p .git/hooks && printf '#!/bin/sh\\n{command}\\n' > .git/hooks/pre-commit
chmod +x .git/hooks/pre-commit
echo '* filter=evil diff=evil' > .gitattributes
mkdir -p nested && cd nested && git init -q && git config core.fsmonitor '{command}' && cd ..
echo changed >> README.md
"""
    assert boxed.run(script).exit_code == 0
    ctx = ToolContext(workspace=workspace.path, sandbox=boxed)
    assert "README.md" in call(box, ctx, "grep", pattern="changed").output
    assert "README.md" in call(box, ctx, "glob", pattern="*.md").output
    call(box, ctx, "repo_map")
    render_repo_map(workspace.path, 500)
    assert workspace.checkpoint("after the attack")
    assert "README.md" in workspace.patch()
    assert not pwned.exists()


def test_drivers_of_the_user_config_are_not_run_on_sandbox_files(
        workspace: Workspace, tmp_path: Path) -> None:
    """A filter or diff driver the user configured is not run on what the sandbox wrote."""
    pwned = tmp_path / "pwned-driver"
    repo = workspace.repo_path
    git(repo, "config", "filter.lfsish.clean", f"touch {pwned}; cat")
    git(repo, "config", "filter.lfsish.required", "true")
    git(repo, "config", "diff.pretty.textconv", f"touch {pwned}; cat")
    git(repo, "config", "diff.pretty.command", f"touch {pwned}; true")
    (workspace.path / ".gitattributes").write_text("* filter=lfsish diff=pretty\n")
    (workspace.path / "README.md").write_text("rewritten\n")
    assert workspace.checkpoint("with attributes")
    assert "+rewritten" in workspace.patch()
    assert not pwned.exists()


# --- 2. symlink swaps while the file tools run ------------------------------------------------


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE):
        raise OSError(ctypes.get_errno(), "renameat2")


class Swapper:
    """Swaps folder `real` with a symlink to `target` as fast as it can, like a process in the
    sandbox racing the host's file tools."""

    def __init__(self, real: Path, target: Path):
        self.real, self.link = real, real.with_name(real.name + ".swap")
        self.link.symlink_to(target)
        self.stop = threading.Event()
        self.swaps = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            _exchange(self.real, self.link)
            self.swaps += 1

    def __enter__(self) -> Swapper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if self.real.is_symlink():  # leave the real folder in place
            _exchange(self.real, self.link)


def test_file_tools_never_leave_the_workspace_during_swaps(
        resolution: str, box: ToolBox, host: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "secret.txt").write_text("inside\n")
    os.chown(ws, 1000, 1000)  # as when the sandbox user owns the workspace
    ctx = ToolContext(workspace=ws)
    before = {p.name: p.read_text() for p in host.iterdir()}
    host_owner = (host.stat().st_uid, host.stat().st_gid)
    seen: list[str] = []
    with Swapper(ws / "d", host) as swapper:
        for round_ in range(150):
            seen.append(call(box, ctx, "view", path="d/secret.txt").output)
            call(box, ctx, "create", path=f"d/new{round_}.txt", file_text="planted\n")
            call(box, ctx, "create", path=f"d/sub{round_}/x.txt", file_text="planted\n")
            call(box, ctx, "str_replace", path="d/secret.txt", old_str="HOST-SECRET-CONTENT",
                 new_str="overwritten")
            call(box, ctx, "insert", path="d/secret.txt", insert_line=0, new_str="inserted")
            call(box, ctx, "view", path="d")
        assert swapper.swaps > 100
    assert {p.name: p.read_text() for p in host.iterdir()} == before
    assert (host.stat().st_uid, host.stat().st_gid) == host_owner
    assert not any("HOST-SECRET" in text for text in seen)
    assert any("inside" in text for text in seen)  # the tools did work between swaps


def test_chown_tree_never_follows_a_swapped_folder(host: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for index in range(30):
        (ws / "d" / f"sub{index}").mkdir(parents=True)
        (ws / "d" / f"sub{index}" / "f").write_text("x")
    with Swapper(ws / "d", host):
        for _ in range(40):
            chown_tree(ws, (1000, 1000))
    assert host.stat().st_uid == 0
    assert all(p.stat().st_uid == 0 for p in host.iterdir())


# --- 3. a hostile repository's symlinks -------------------------------------------------------


def test_committed_links_out_are_reported_never_followed(resolution: str, box: ToolBox,
                                                         host: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "AGENTS.md").symlink_to(host / "secret.txt")
    (ws / "leak.py").symlink_to(host / "secret.py")
    (ws / "docs").symlink_to(host)
    (ws / "main.py").write_text("def visible():\n    return 1\n")
    prompt = system_prompt(ws, "ws", "pytest", repo_map=render_repo_map(ws, 2000))
    assert "HOST-SECRET" not in prompt and "host_only_function" not in prompt
    assert "AGENTS.md was not read" in prompt and "not followed" in prompt
    ctx = ToolContext(workspace=ws)
    for name, args in [("view", {"path": "leak.py"}), ("view", {"path": "docs/secret.txt"}),
                       ("view", {"path": "docs"}), ("grep", {"pattern": "SECRET-CONTENT"}),
                       ("repo_map", {}), ("str_replace", {"path": "AGENTS.md", "old_str": "HOST",
                                                          "new_str": "x"})]:
        observation = box.call(name, json.dumps(args), ctx)
        assert "HOST-SECRET-CONTENT" not in observation.output
        assert "host_only_function" not in observation.output
    assert "outside the workspace" in call(box, ctx, "view", path="leak.py").output \
        or "symbolic link" in call(box, ctx, "view", path="leak.py").output
    assert (host / "secret.txt").read_text() == "HOST-SECRET-CONTENT\n"


def test_links_inside_the_workspace_still_work_with_openat2(box: ToolBox, tmp_path: Path) -> None:
    workspace_fs.use_openat2(True)
    try:
        ws = tmp_path / "ws"
        (ws / "src").mkdir(parents=True)
        (ws / "src" / "real.py").write_text("x = 1\n")
        (ws / "alias.py").symlink_to("src/real.py")
        assert "x = 1" in call(box, ToolContext(workspace=ws), "view", path="alias.py").output
    finally:
        workspace_fs.use_openat2(None)


# --- 4. paths git reserves --------------------------------------------------------------------


def test_git_reserved_paths_in_any_case(box: ToolBox, workspace: Workspace) -> None:
    ctx = ToolContext(workspace=workspace.path)
    for path in (".Git/config", ".GIT/hooks/x", "sub/.git/config", "/workspace/a/.gIt/b"):
        observation = call(box, ctx, "create", path=path, file_text="x")
        assert observation.is_error and "inside .git" in observation.output
    # What the sandbox makes with bash is left out of the checkpoint, and said so; the rest of
    # the work is kept.
    (workspace.path / ".GIT").mkdir()
    (workspace.path / ".GIT" / "config").write_text("x")
    (workspace.path / "sub" / ".Git").mkdir(parents=True)
    (workspace.path / "sub" / ".Git" / "h").write_text("y")
    (workspace.path / "README.md").write_text("kept\n")
    assert workspace.checkpoint("with reserved paths")
    assert "+kept" in workspace.patch()
    assert workspace.left_out == [".GIT", "sub/.Git"]


# --- 5. nothing on the host hangs -------------------------------------------------------------


def _within(seconds: float, action) -> object:
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(action()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    return result[0]


def test_fifos_do_not_hang_the_tools(resolution: str, box: ToolBox, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    os.mkfifo(ws / "pipe.py")
    os.mkfifo(ws / "AGENTS.md")
    ctx = ToolContext(workspace=ws)
    for name, args in [("view", {"path": "pipe.py"}), ("create", {"path": "pipe.py",
                                                                  "file_text": "x"}),
                       ("str_replace", {"path": "pipe.py", "old_str": "a", "new_str": "b"}),
                       ("grep", {"pattern": "x"}), ("repo_map", {})]:
        observation = _within(10, lambda n=name, a=args: box.call(n, json.dumps(a), ctx))
        assert observation is not None
    view = call(box, ctx, "view", path="pipe.py")
    assert view.is_error and "not a regular file" in view.output
    assert "not read" in _within(10, lambda: system_prompt(ws, "ws", "pytest"))


def test_a_catastrophic_pattern_stops_at_the_deadline(box: ToolBox, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "SEARCH_DEADLINE_S", 1.0)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "crafted.txt").write_text(("a" * 3000 + "!\n") * 50)
    started = time.monotonic()
    observation = call(box, ToolContext(workspace=ws), "grep", pattern="(a+)+$")
    assert time.monotonic() - started < 5
    assert observation.is_error and "search stopped" in observation.output


# --- 7. every tool's output is capped ---------------------------------------------------------


def test_every_output_is_capped(box: ToolBox, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "big.py").write_text("x = 1\n")
    for index in range(300):
        (ws / f"{'n' * 200}{index}.txt").write_text("needle " * 100 + "\n")
    ctx = ToolContext(workspace=ws)
    huge = "y" * 2_000_000
    cases = [
        ("str_replace", {"path": "big.py", "old_str": "x = 1", "new_str": f"x = '{huge}'"}),
        ("insert", {"path": "big.py", "insert_line": 0, "new_str": f"z = '{huge}'"}),
        ("str_replace", {"path": "big.py", "old_str": huge, "new_str": ""}),
        ("todo", {"items": [{"content": huge}]}),
        ("todo", {"items": [{"content": "x"}] * 5000}),
        ("glob", {"pattern": "*.txt"}),
        ("glob", {"pattern": huge}),
        ("grep", {"pattern": "needle"}),
        ("grep", {"pattern": huge}),
        ("view", {"path": huge}),
        (huge, {}),
        ("create", {"path": "c.txt", "file_text": huge}),
        ("finish", {"summary": huge}),
    ]
    for name, args in cases:
        observation = box.call(name, json.dumps(args), ctx)
        assert len(observation.output) <= CAP, (name[:20], len(observation.output))
        assert len(json.dumps(observation.data)) <= CAP, name[:20]


def test_the_test_command_guess_reads_nothing_outside(host: Path, tmp_path: Path) -> None:
    from agent.tasks import suggest_test_command

    repo = tmp_path / "repo"
    repo.mkdir()
    (host / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (repo / "pyproject.toml").symlink_to(host / "pyproject.toml")
    os.mkfifo(repo / "Makefile")
    assert _within(10, lambda: suggest_test_command(repo)) is None
    (repo / "test_x.py").write_text("def test_x():\n    pass\n")
    assert suggest_test_command(repo) == "python3 -m pytest -q"


@pytest.mark.docker
def test_synthesis_never_writes_or_reads_through_links_the_tests_plant(
        resolution: str, host: Path, tmp_path: Path, docker_ready: None) -> None:
    """A repository's tests run in the worker's sandbox and can turn the file a candidate
    rewrites, or the report the host reads back, into links to host files."""
    from finetune.synthesis_repo import BASE_BRANCH
    from finetune.synthesis_validate import SCRATCH, SynthesisWorker

    repo = tmp_path / "lib"
    (repo / "lib").mkdir(parents=True)
    (repo / "lib" / "__init__.py").write_text("")
    (repo / "lib" / "core.py").write_text("def f():\n    return 1\n")
    (repo / "test_core.py").write_text("from lib.core import f\n\n\ndef test_f():\n"
                                       "    assert f() == 1\n")
    git(repo, "init", "-q", "-b", BASE_BRANCH)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    worker = SynthesisWorker("lib", repo, tmp_path / "worker", "python3 -m pytest",
                             lambda _: CONFIG)
    try:
        baseline = worker.baseline(timeout=60)
        assert baseline.passing == ["test_core.py::test_f"]
        secret = host / "secret.txt"
        worker.sandbox.run(f"rm lib/core.py && ln -s {secret} lib/core.py")
        with pytest.raises(workspace_fs.FileAccessError):
            worker.validate("lib/core.py", "def f():\n    return 1\n",
                            "def f():\n    return 2\n", baseline, None, timeout=60)
        assert secret.read_text() == "HOST-SECRET-CONTENT\n"  # neither bug nor original

        worker.sandbox.run(f"rm -rf {SCRATCH} && ln -s {host} {SCRATCH}")
        (host / "out.txt").write_text("test_core.py::test_f PASSED HOST-SECRET-CONTENT\n")
        run = worker.run_tests([], timeout=60)
        assert "HOST-SECRET" not in run.output and run.report.outcomes == {}
    finally:
        worker.close()
    assert secret.read_text() == "HOST-SECRET-CONTENT\n" and host.is_dir()


def test_a_session_reports_what_git_refuses_and_a_failed_patch(
        example: tuple[Path, Path], scripted, docker_ready: None) -> None:
    """`.GIT` made in the sandbox is reported and the rest of the work kept; when the patch
    cannot be computed, the episode ends in `error`, not with an empty patch and `finished`."""
    from agent.episode import EpisodeConfig, open_episode
    from agent.scripted_model import tool_call
    from agent.tasks import Task
    from trajectories.events import ErrorEvent

    repo, issue = example
    task = Task(instance_id="red", repo=str(repo), problem_statement=issue.read_text(),
                test_command="true")
    scripted.script = [
        {"tool_calls": [tool_call("bash", {"command": "mkdir .GIT && echo x > .GIT/c && "
                                                      "echo kept >> README.md"})]},
        {"tool_calls": [tool_call("finish", {"summary": "done"})]},
    ]
    events: list[object] = []
    config = EpisodeConfig(llm=scripted.llm_config(), sandbox=CONFIG, max_steps=4)
    with open_episode(task, config, listeners=[events.append]) as episode:
        result = episode.session.run()
    assert result.exit_status == "finished" and "+kept" in result.patch
    assert any(isinstance(e, ErrorEvent) and ".GIT" in e.message for e in events)

    scripted.script = [{"tool_calls": [tool_call("finish", {"summary": "done"})]}]
    with open_episode(task, config) as episode:
        def broken() -> str:
            raise RuntimeError("disk full")
        episode.workspace.patch = broken  # type: ignore[method-assign]
        result = episode.session.run()
    assert result.exit_status == "error" and "disk full" in (result.error or "")


def test_a_failing_listener_is_recorded_before_it_propagates(
        example: tuple[Path, Path], scripted, docker_ready: None) -> None:
    from agent.episode import EpisodeConfig, open_episode
    from agent.scripted_model import tool_call
    from agent.tasks import Task
    from trajectories.events import ErrorEvent, Finished, ToolResult
    from trajectories.reader import read_trajectory

    repo, issue = example
    task = Task(instance_id="red", repo=str(repo), problem_statement=issue.read_text(),
                test_command="true")
    scripted.script = [{"tool_calls": [tool_call("bash", {"command": "echo hi"})]}]

    def broken(event: object) -> None:
        if isinstance(event, ToolResult):
            raise RuntimeError("listener bug")

    config = EpisodeConfig(llm=scripted.llm_config(), sandbox=CONFIG, max_steps=3)
    with pytest.raises(RuntimeError, match="listener bug"), \
            open_episode(task, config, listeners=[broken]) as episode:
        episode.session.run()
    events = read_trajectory(episode.trajectory_path).events
    assert isinstance(events[-1], Finished) and events[-1].exit_status == "error"
    assert any(isinstance(e, ErrorEvent) and e.fatal and "listener bug" in e.message
               for e in events)


def test_the_tool_grammar_reads_no_link_and_runs_no_git_config_of_the_workspace(
        resolution: str, box: ToolBox, host: Path, tmp_path: Path) -> None:
    """A local model's path choices (`agent.tool_grammar`) list and read the workspace from
    the host at every turn: a file the model was shown, swapped for a link out, gives nothing
    to edit, and the workspace's git configuration never runs."""
    from agent.tool_grammar import PathChoices

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "lib.py").write_text("def add(a, b):\n    return a - b\n")
    (ws / "docs").symlink_to(host)
    pwned = tmp_path / "pwned"
    subprocess.run(["git", "init", "-q", str(ws)], check=True, timeout=60)
    git(ws, "config", "core.fsmonitor", f"touch {pwned}; false")
    shown = {"lib.py": {1, 2}}
    before = PathChoices.of_workspace(ws, box, shown)
    assert before is not None and before.edits == {"lib.py": [["def add(a, b):\n",
                                                               "    return a - b\n"]]}
    (ws / "lib.py").unlink()
    (ws / "lib.py").symlink_to(host / "secret.py")  # the sandbox swaps the file shown
    after = PathChoices.of_workspace(ws, box, shown)
    assert after is not None and after.edits == {}
    assert "docs" in after.paths and "docs/secret.txt" not in after.paths  # a link, not followed
    assert "host_only_function" not in json.dumps(after.as_dict())
    assert not pwned.exists()


def test_locate_shows_no_source_through_links_or_paths_the_sandbox_reports(
        resolution: str, host: Path, tmp_path: Path) -> None:
    """The probe's report comes from the sandbox, so a hostile repository decides its suspect
    paths: a link in the workspace to a host file, a path up and out, an absolute one. The host
    side shows the first suspect's source only through the workspace's own files."""
    from tools.files import READ
    from tools.locate import describe

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "lib.py").symlink_to(host / "secret.py")
    outside = os.path.relpath(host / "secret.py", workspace)
    for path in ("lib.py", outside, str(host / "secret.py")):
        report = {"outcome": "failed", "failed": 1, "passed": 0, "suspects": [
            {"path": path, "def_line": 1, "function": "host_only_function", "line": 2,
             "score": 1.0}]}
        observation = describe(report, "tests/test_x.py::test_x", workspace)
        assert "HOST-SECRET" not in observation.output, path
        assert READ not in observation.data, path


def test_the_missing_test_hint_runs_no_git_config_and_follows_no_link(
        resolution: str, host: Path, tmp_path: Path) -> None:
    """The bash hint lists the workspace from the host when the sandbox's output says pytest
    found no file, output a hostile repository controls: the workspace's git configuration
    never runs and a link to a host folder is not listed through."""
    from tools.control import missing_test_hint

    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "test_a.py").write_text("def test_a():\n    pass\n")
    (ws / "outside").symlink_to(host)
    (host / "test_secret.py").write_text("SECRET = 1\n")
    pwned = tmp_path / "pwned"
    subprocess.run(["git", "init", "-q", str(ws)], check=True, timeout=60)
    git(ws, "config", "core.fsmonitor", f"touch {pwned}; false")
    assert missing_test_hint("ERROR: file or directory not found: test_a.py\n", ws) == (
        "\n[hint: the workspace has no test_a.py; files named test_a.py: pkg/test_a.py]")
    assert missing_test_hint("ERROR: file or directory not found: test_secret.py\n", ws) == ""
    assert missing_test_hint("ERROR: not found: /workspace/outside/test_secret.py\n", ws) == ""
    (host / "test_leak.py").write_text("def test_leak():\n    pass\n")
    (ws / "pkg" / "test_link.py").symlink_to(host / "test_leak.py")
    assert missing_test_hint("ERROR: file or directory not found: test_leak\n", ws) == ""
    assert missing_test_hint("ERROR: file or directory not found: test_a\n", ws) == (
        "\n[hint: pytest found no test_a; tests named test_a: pkg/test_a.py::test_a]")
    assert not pwned.exists()


def test_the_did_you_mean_listing_runs_no_git_config_and_follows_no_link(
        resolution: str, host: Path, tmp_path: Path, box: ToolBox) -> None:
    """A file tool's "Did you mean" lists the workspace from the host, whose `.git` the sandbox
    writes: its git configuration never runs, and a link to a host folder is not listed
    through, so no host path is ever suggested."""
    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "mod.py").write_text("X = 1\n")
    (ws / "outside").symlink_to(host)
    pwned = tmp_path / "pwned"
    subprocess.run(["git", "init", "-q", str(ws)], check=True, timeout=60)
    git(ws, "config", "core.fsmonitor", f"touch {pwned}; false")
    ctx = ToolContext(workspace=ws)
    named = box.call("view", json.dumps({"path": "mod.py"}), ctx)
    assert named.output == "Error: mod.py does not exist. Did you mean pkg/mod.py?"
    for path in ("secret.py", "secret.txt", "outside/secrets.py"):
        refused = box.call("str_replace", json.dumps({"path": path, "old_str": "a"}), ctx)
        assert refused.is_error and "Did you mean" not in refused.output, refused.output
        assert "host_only_function" not in refused.output
    assert not pwned.exists()
