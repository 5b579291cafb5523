"""The TUI's `/samples N`: a request as N attempts, the selection shown, the selected change
applied to the session. Textual's harness drives the app; a scripted model gives each attempt
its own script (`ScriptedConversationsServer`); Docker, git, the recorder, the verifier and
the selector's sandboxes are real."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from agent.context import ContextConfig
from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.scripted_model import ScriptedConversationsServer, tool_call
from tests.test_samples import BREAKS_MULTIPLY, EMPTY, FINISH, OPS, RIGHT
from tests.test_tui import SIZE, notices, ready, say, wait_until
from trajectories.events import Checkpoint, UserMessage
from trajectories.reader import read_trajectory
from tui.app import ApprenticeApp
from tui.widgets.diff_view import DiffView
from tui.widgets.samples_block import SamplesBlock

pytestmark = [pytest.mark.usefixtures("docker_ready"), pytest.mark.asyncio]
SAMPLES_TIMEOUT_S = 400.0
"""Three attempts, their verification and the selector's runs, on a shared 2-core machine."""
FOLLOW_UP = [{"tool_calls": [tool_call("view", {"path": OPS})]},
             {"content": "`add` adds now."}]
"""The session's own next turn, after the attempts."""


@pytest.fixture
def served() -> Iterator[ScriptedConversationsServer]:
    """Three attempts (one right, one that changes nothing, one that breaks multiply), then
    the session's next turn."""
    with ScriptedConversationsServer([RIGHT, EMPTY, BREAKS_MULTIPLY, FOLLOW_UP]) as server:
        yield server


def samples_app(repo, server: ScriptedConversationsServer, **kwargs) -> ApprenticeApp:
    options = EpisodeConfig(llm=LLMConfig(model="openai/scripted", api_base=server.url,
                                          api_key="none", stream=True, backoff_s=0.01,
                                          retries=0),
                            context=ContextConfig(), max_steps=6)
    return ApprenticeApp(options, repo=repo, **kwargs)


async def test_samples_3_selects_the_right_attempt_and_applies_it(example, served) -> None:
    repo, _ = example
    app = samples_app(repo, served)
    async with app.run_test(size=SIZE) as pilot:
        app = await ready(pilot)
        assert app.host is not None
        workspace = app.host.workspace
        await say(pilot, "/samples 3")  # for the next request
        assert app.sampled.count == 3 and app.status.samples == 3
        assert "next: ×3 attempts" in app.status.render().plain
        await say(pilot, "fix add so that it adds", wait=False)
        await wait_until(pilot, lambda: app.query(SamplesBlock), "the attempts' block")
        block = app.query_one(SamplesBlock)
        await wait_until(pilot, lambda: block.result is not None or block.failed,
                         "the attempts and the selection", SAMPLES_TIMEOUT_S)
        await wait_until(pilot, lambda: not app.running, "the sampled request to end")
        await pilot.pause(0.2)
        assert app.sampled.count == 1 and "attempts" not in app.status.render().plain
        done = block.result
        assert done is not None, block.failed
        assert block.state == "applied" and done.applied and app.last_status == "sampled"

        # every attempt ran and ended; the right one is selected
        assert [a.attempt for a in done.group.attempts] == [0, 1, 2]
        assert all(a.ended and a.reward is not None for a in block.attempts)
        chosen = done.group.selected
        assert chosen is not None and chosen.result is not None
        assert "+    return a + b" in done.patch and "a ** b" not in done.patch
        assert chosen.result.reward == 1
        rows = {r["attempt"]: r for r in done.group.candidates()}
        kept = sorted(r["signals"]["kept"] for r in rows.values())
        assert kept == [0, 1, 2] and rows[chosen.attempt]["signals"]["kept"] == 2

        # shown: a line per attempt, every candidate's signals, the selected one marked, the diff
        lines = str(block._lines.render())
        assert all(f"attempt {i}: finished after" in lines for i in range(3))
        shown = str(block._selection.render())
        assert f"▶ attempt {chosen.attempt}: kept 2  visible_tests 4" in shown
        assert "kept 0" in shown and "changes no code" in shown
        assert "kept 1" in shown and "breaks tests/test_operations.py::test_multiply" in shown
        assert f"selected attempt {chosen.attempt} of 3" in shown and OPS in shown
        diff = block.query_one(DiffView).diff
        assert "+    return a + b" in diff and "tests/test_issue.py" in diff

        # applied to the session's worktree and checkpointed on its branch
        source = (workspace.path / OPS).read_text()
        assert "return a + b" in source and "return a * b" in source
        assert (workspace.path / "tests/test_issue.py").is_file()
        assert done.files == [OPS, "tests/test_issue.py"]
        assert workspace.checkpoints() == done.checkpoints and len(done.checkpoints) == 1
        assert not workspace.changed()

        # the conversation goes on from it: the model is told, and sees the files
        await say(pilot, "does add work now?")
        assert app.last_status == "answered"
        sent = served.requests_by_script[3][0]["messages"][-1]["content"]
        assert f"attempt {chosen.attempt} was selected by running the tests" in sent
        assert sent.endswith("does add work now?")
        view = served.requests_by_script[3][1]["messages"][-1]["content"]
        assert "return a + b" in view

        # one /undo takes the change back
        await say(pilot, "/undo")
        await wait_until(pilot, lambda: "return a - b" in (workspace.path / OPS).read_text(),
                         "the undo")
        trajectory_path = app.host.trajectory_path
    trajectory = read_trajectory(trajectory_path)
    assert trajectory.header is not None
    assert trajectory.header.task["problem_statement"] == "fix add so that it adds"
    assert [e.commit for e in trajectory.events if isinstance(e, Checkpoint)][:1] == \
        done.checkpoints
    assert [e.origin for e in trajectory.events if isinstance(e, UserMessage)] == ["user"]


async def test_escape_stops_the_attempts_and_nothing_is_applied(example) -> None:
    repo, _ = example
    sleeper = [{"tool_calls": [tool_call("bash", {"command": "sleep 300"})]}, FINISH]
    with ScriptedConversationsServer([sleeper, sleeper]) as server:
        app = samples_app(repo, server)
        async with app.run_test(size=SIZE) as pilot:
            app = await ready(pilot)
            assert app.host is not None
            head = app.host.workspace.head()
            await say(pilot, "/samples 2 fix add", wait=False)
            await wait_until(pilot, lambda: app.query(SamplesBlock), "the attempts' block")
            block = app.query_one(SamplesBlock)
            await wait_until(pilot, lambda: all(a.state == "running bash"
                                                for a in block.attempts),
                             "both attempts to run their command", SAMPLES_TIMEOUT_S)
            await pilot.press("escape")
            await wait_until(pilot, lambda: block.result is not None or block.failed,
                             "the attempts to stop", SAMPLES_TIMEOUT_S)
            await wait_until(pilot, lambda: not app.running, "the sampled request to end")
            done = block.result
            assert done is not None and done.group.interrupted and not done.applied
            assert app.last_status == "interrupted" and block.state == "not applied"
            assert [a.lost for a in done.group.attempts] == ["interrupted by the user"] * 2
            assert "nothing applied: the user interrupted" in str(block._selection.render())
            assert app.host.workspace.head() == head and not app.host.workspace.changed()
            assert not block.query(DiffView)


async def test_samples_0_or_too_many_is_an_error_and_nothing_runs(example, served) -> None:
    repo, _ = example
    app = samples_app(repo, served)
    async with app.run_test(size=SIZE) as pilot:
        app = await ready(pilot)
        for bad in ("0", "17", "three"):
            await say(pilot, f"/samples {bad} fix add")
            assert any(f"from 1 to 16, not {bad}" in text for text in notices(app))
            assert any(f"not {bad}" in str(n.message) and n.severity == "error"
                       for n in app._notifications)
        assert app.sampled.count == 1 and app.status.samples == 1
        assert "attempts" not in app.status.render().plain
        assert not app.query(SamplesBlock) and not served.requests and not app.running
        # attempts run unattended: not in ask mode
        await pilot.press("shift+tab")
        assert app.policy.mode == "ask"
        await say(pilot, "/samples 3")
        assert app.sampled.count == 1 and any("switch to auto" in t for t in notices(app))
        await pilot.press("shift+tab", "shift+tab")
        assert app.policy.mode == "auto"
        # armed for the next request, then /samples 1 cancels it
        await say(pilot, "/samples 3")
        assert app.sampled.count == 3
        await say(pilot, "/samples 1")
        assert app.sampled.count == 1 and app.status.samples == 1
        assert "/samples N" in (await help_source(pilot, app))
        assert not app.query(SamplesBlock) and not served.requests


async def test_without_a_test_command_the_block_says_why(tmp_path, served) -> None:
    repo = tmp_path / "notes"
    repo.mkdir()
    (repo / "notes.txt").write_text("no tests here\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                  "commit", "-q", "-m", "notes"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, timeout=60)
    app = samples_app(repo, served)
    async with app.run_test(size=SIZE) as pilot:
        app = await ready(pilot)
        await say(pilot, "/samples 2 tidy the notes")
        block = app.query_one(SamplesBlock)
        assert block.state == "failed" and block.failed is not None
        assert "need the repository's test command" in block.failed
        assert "test command" in str(block._selection.render())
        assert not served.requests and app.last_status == "error" and not app.running


async def help_source(pilot, app: ApprenticeApp) -> str:
    from tui.widgets.message_blocks import MarkdownNotice

    await say(pilot, "/help")
    return app.query(MarkdownNotice).last().source
