"""The TUI driven by Textual's own harness (App.run_test + Pilot) against the scripted model
server, with real Docker and real git; snapshots of the main screens; and the real `agent` in a
real terminal under tmux."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import git
import pytest
from textual.pilot import Pilot

from agent.context import ContextConfig
from agent.episode import EpisodeConfig
from agent.llm import LLMConfig
from agent.models import KNOWN_MODELS
from agent.scripted_model import ScriptedModelServer, tool_call
from agent.session import INTERRUPTED
from trajectories.events import ErrorEvent, PlanUpdated, ToolCallStarted, ToolResult
from trajectories.reader import read_trajectory, rebuild_calls
from tui.app import ApprenticeApp
from tui.commands import completions, parse
from tui.permissions import PLAN_APPROVED, PermissionPolicy
from tui.screens.approval import ApprovalScreen
from tui.transcript import AssistantEntry, ToolEntry, Transcript, UserEntry
from tui.widgets.diff_view import DiffView, edit_diff
from tui.widgets.message_blocks import AssistantBlock, MarkdownNotice, NoticeBlock, UserBlock
from tui.widgets.plan_panel import PlanPanel
from tui.widgets.prompt_input import CommandHints, PromptInput
from tui.widgets.tool_block import ToolBlock

SIZE = (120, 40)
OPERATIONS = "calculator/operations.py"
OLD = '"""Return the sum of a and b."""\n    return a - b'
NEW = '"""Return the sum of a and b."""\n    return a + b'
PLAN = [{"content": "Read operations.py", "status": "completed"},
        {"content": "Fix add", "status": "in_progress"},
        {"content": "Run the tests", "status": "pending"}]
FIX_SCRIPT = [
    {"content": "I'll **fix** `add`: first the plan.",
     "tool_calls": [tool_call("todo", {"items": PLAN}, "call_todo")]},
    {"content": None, "tool_calls": [tool_call("view", {"path": OPERATIONS}, "call_view")]},
    {"content": None, "tool_calls": [tool_call("str_replace", {
        "path": OPERATIONS, "old_str": OLD, "new_str": NEW}, "call_edit")]},
    {"content": "Now the tests.",
     "tool_calls": [tool_call("bash", {"command": "python3 -m pytest -q"}, "call_test")]},
    {"content": "Fixed: `add` now **adds**; the 4 tests pass."},
]


def make_app(repo: Path, scripted: ScriptedModelServer, script: list[dict],
             **kwargs) -> ApprenticeApp:
    scripted.script = list(script)
    options = EpisodeConfig(
        session_id=kwargs.pop("session_id", None), context=kwargs.pop("context", None)
        or ContextConfig(),
        llm=LLMConfig(model="openai/scripted", api_base=scripted.url, stream=True,
                      backoff_s=0.01),
    )
    return ApprenticeApp(options, repo=repo, **kwargs)


async def wait_until(pilot: Pilot, condition: Callable[[], object], what: str,
                     timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; notices: {notices(pilot.app)}")
        await pilot.pause(0.05)


async def ready(pilot: Pilot) -> ApprenticeApp:
    app = pilot.app
    assert isinstance(app, ApprenticeApp)
    await wait_until(pilot, lambda: app.host is not None or app.status.sandbox == "failed",
                     "the session to open")
    assert app.host is not None, "the session did not open"
    return app


async def say(pilot: Pilot, text: str, wait: bool = True) -> ApprenticeApp:
    """Type `text` into the prompt, press Enter, and (by default) wait for the turn to end."""
    app = await ready(pilot)
    app.query_one(PromptInput).text = text
    await pilot.press("enter")
    if wait:
        await settle(pilot)
    return app


async def settle(pilot: Pilot) -> None:
    app = pilot.app
    assert isinstance(app, ApprenticeApp)
    await wait_until(pilot, lambda: not app.running, "the turn to end")
    await pilot.pause(0.2)


def tool_blocks(app: ApprenticeApp) -> dict[str, ToolBlock]:
    return {block.tool: block for block in app.query(ToolBlock)}


def notices(app: ApprenticeApp) -> list[str]:
    return [str(block.render()) for block in app.query(NoticeBlock)]


# --- no Docker: the pieces the app is made of ---------------------------------------------

def test_transcript_folds_streamed_text_and_tool_results() -> None:
    from trajectories.events import AssistantDelta, AssistantMessage, UserMessage

    transcript = Transcript()
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "bash", "arguments": '{"command": "ls"}'}}]
    for event in [
        UserMessage(session_id="s", content="hi"),
        AssistantDelta(session_id="s", step=1, text="Hel"),
        AssistantDelta(session_id="s", step=1, text="lo"),
        AssistantMessage(session_id="s", step=1, content="Hello", tool_calls=calls,
                         prompt_tokens=90, completion_tokens=10),
        ToolCallStarted(session_id="s", step=1, tool_call_id="c1", name="bash",
                        arguments='{"command": "ls"}'),
        ToolResult(session_id="s", step=1, tool_call_id="c1", name="bash", output="a\nb"),
        PlanUpdated(session_id="s", step=1, items=PLAN),
        ErrorEvent(session_id="s", step=1, message=INTERRUPTED),
    ]:
        transcript.feed(event)
    user, assistant, tool, notice = transcript.entries
    assert isinstance(user, UserEntry) and user.text == "hi"
    assert isinstance(assistant, AssistantEntry) and assistant.text == "Hello"
    assert not assistant.streaming
    assert isinstance(tool, ToolEntry) and tool.result is not None and tool.result.output == "a\nb"
    assert transcript.plan == PLAN and transcript.context_tokens == 100
    assert "interrupted" in notice.text and notice.kind == "interrupt"


def test_permission_policy_modes() -> None:
    policy = PermissionPolicy(mode="ask")
    assert policy.decide("view") == "allow" and policy.decide("bash") == "ask"
    policy.always.add("bash")
    assert policy.decide("bash") == "allow" and policy.decide("create") == "ask"
    policy.mode = "read-only"
    assert policy.decide("bash") == "deny" and "read-only" in policy.denial("bash")
    policy.mode, policy.plan_mode = "auto", True
    assert policy.decide("str_replace") == "deny" and policy.decide("todo") == "allow"
    assert [PermissionPolicy(mode=m).next_mode() for m in ("auto", "ask", "read-only")] == \
        ["ask", "read-only", "auto"]


def test_slash_command_parsing_completion_and_edit_diffs() -> None:
    assert parse("/rewind 2") == ("/rewind", "2") and parse("fix it") is None
    assert [c.name for c in completions("/re")] == ["/rewind", "/resume"]
    assert completions("/undo now") == [] and completions("hello") == []
    diff = edit_diff("str_replace", json.dumps({"path": "a.py", "old_str": "x = 1",
                                                "new_str": "x = 2"}))
    assert diff is not None and "-x = 1" in diff and "+x = 2" in diff and "+++ b/a.py" in diff
    assert edit_diff("bash", '{"command": "ls"}') is None
    assert edit_diff("create", "{not json") is None


# --- the app against the scripted model, Docker and git --------------------------------------

pytestmark_docker = pytest.mark.usefixtures("docker_ready")
"""Marks a test that needs the Docker engine and the sandbox image."""


@pytestmark_docker
@pytest.mark.asyncio
async def test_a_request_streams_the_answer_with_tool_blocks_diff_plan_and_status(
        example, scripted) -> None:
    repo, _ = example
    app = make_app(repo, scripted, FIX_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        app = await ready(pilot)
        assert app.status.sandbox == "docker" and app.status.branch.startswith("agent/")
        await pilot.press(*"fix add")  # typed key by key
        await pilot.press("enter")
        # A scripted turn can start and end while the pilot still processes the key press.
        await wait_until(pilot, lambda: app.running or app.last_status is not None,
                         "the turn to start")
        await settle(pilot)
        assert app.last_status == "answered"
        assert [b.render().plain for b in app.query(UserBlock)] == ["fix add"]  # type: ignore[attr-defined]
        replies = [b.text for b in app.query(AssistantBlock)]
        assert replies == ["I'll **fix** `add`: first the plan.", "Now the tests.",
                           "Fixed: `add` now **adds**; the 4 tests pass."]
        assert all(request["stream"] for request in scripted.requests)
        blocks = tool_blocks(app)
        assert list(blocks) == ["todo", "view", "str_replace", "bash"]
        assert all(block.state == "ok" for block in blocks.values())
        assert "exit 0" in blocks["bash"]._header.render().plain  # type: ignore[attr-defined]
        diff = blocks["str_replace"].query_one(DiffView).diff
        assert "-    return a - b" in diff and "+    return a + b" in diff
        # The output of a call is collapsed until the block is expanded.
        view = blocks["view"]
        assert "more lines" in str(view._output.render())
        view.focus()
        await pilot.press("enter")
        assert view.expanded and "def multiply" in str(view._output.render())
        # The plan panel shows the model's todo list.
        panel = app.query_one(PlanPanel)
        assert panel.display and [i["content"] for i in panel.items] == \
            ["Read operations.py", "Fix add", "Run the tests"]
        assert "◐ Fix add" in panel.render().plain
        # The status line: model, context, cost, sandbox, branch, idle again.
        status = app.status.render().plain
        assert "openai/scripted" in status and "ctx " in status and "$0.0000" in status
        assert app.status.context_tokens > 100 and app.status.activity == "idle"
        assert app.host is not None
        worktree = app.host.workspace.path
        assert "return a + b" in (worktree / OPERATIONS).read_text()
        trajectory_path = app.host.trajectory_path
        branch = app.host.workspace.branch
    # Closing leaves the user's checkout alone, the branch and the recording in place.
    user_repo = git.Repo(repo)
    assert user_repo.active_branch.name == "main" and not user_repo.is_dirty()
    assert "return a + b" in user_repo.git.show(f"{branch}:{OPERATIONS}")
    events = read_trajectory(trajectory_path).events
    assert events[0].type == "session_started" and events[-1].type == "finished"
    assert not worktree.exists()


@pytestmark_docker
@pytest.mark.asyncio
async def test_ask_mode_approves_declines_and_always_allows(example, scripted) -> None:
    repo, _ = example
    script = [
        {"tool_calls": [tool_call("bash", {"command": "echo yes > approved.txt"})]},
        {"tool_calls": [tool_call("bash", {"command": "echo no > declined.txt"})]},
        {"tool_calls": [tool_call("create", {"path": "always.txt", "file_text": "1\n"})]},
        {"tool_calls": [tool_call("create", {"path": "again.txt", "file_text": "2\n"})]},
        {"content": "Done."},
    ]
    app = make_app(repo, scripted, script, mode="ask")
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "make some files", wait=False)
        answers = iter(["y", "n", "a"])
        for expected in ("bash", "bash", "create"):
            await wait_until(pilot, lambda: isinstance(app.screen, ApprovalScreen),
                             "the approval dialog")
            assert isinstance(app.screen, ApprovalScreen)
            assert app.screen.title_text == f"Allow {expected}?"
            await pilot.press(next(answers))
        await settle(pilot)
        assert app.host is not None
        worktree = app.host.workspace.path
        assert (worktree / "approved.txt").exists() and not (worktree / "declined.txt").exists()
        assert (worktree / "always.txt").exists() and (worktree / "again.txt").exists()
        states = [block.state for block in app.query(ToolBlock)]
        assert states == ["ok", "declined", "ok", "ok"]
        assert "declined" in scripted.requests[2]["messages"][-1]["content"]
        assert "mode: ask" in app.status.render().plain
        await pilot.press("shift+tab")
        assert app.policy.mode == "read-only" and "mode: read-only" in app.status.render().plain


@pytestmark_docker
@pytest.mark.asyncio
async def test_escape_interrupts_a_long_command_and_the_session_goes_on(example, scripted) -> None:
    repo, _ = example
    script = [
        {"content": "Waiting a while.",
         "tool_calls": [tool_call("bash", {"command": "sleep 30"}, "call_sleep")]},
        {"content": "Understood, I stopped."},
    ]
    app = make_app(repo, scripted, script)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "wait for 30 seconds", wait=False)
        await wait_until(pilot, lambda: "bash" in tool_blocks(app), "the bash call")
        await pilot.pause(0.5)
        started = time.monotonic()
        await pilot.press("escape")
        await settle(pilot)
        assert time.monotonic() - started < 10
        assert app.last_status == "interrupted"
        block = tool_blocks(app)["bash"]
        assert block.result is not None and "interrupted" in block.result.output
        assert "killed" in block._header.render().plain  # type: ignore[attr-defined]
        assert any("interrupted by the user" in text for text in notices(app))
        # The session stays consistent: the next message gets an answer.
        await say(pilot, "ok, what now?")
        assert app.last_status == "answered"
        messages = scripted.requests[-1]["messages"]
        assert messages[-2]["role"] == "tool" and messages[-2]["tool_call_id"] == "call_sleep"
        assert app.host is not None
        trajectory = read_trajectory(app.host.trajectory_path)
        assert any(isinstance(e, ErrorEvent) and e.message == INTERRUPTED
                   for e in trajectory.events)


@pytestmark_docker
@pytest.mark.asyncio
async def test_undo_restores_the_file_and_tells_the_model(example, scripted) -> None:
    repo, _ = example
    script = [
        {"tool_calls": [tool_call("str_replace", {"path": OPERATIONS, "old_str": OLD,
                                                  "new_str": NEW})]},
        {"content": "Changed add."},
        {"content": "Noted."},
    ]
    app = make_app(repo, scripted, script)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "fix add")
        assert app.host is not None
        target = app.host.workspace.path / OPERATIONS
        assert "return a + b" in target.read_text()
        await say(pilot, "/diff")
        await wait_until(pilot, lambda: app.query(".session-diff"), "the session diff")
        assert "+    return a + b" in app.query_one(".session-diff", DiffView).diff
        await say(pilot, "/undo")
        await wait_until(pilot, lambda: any("undid 1 checkpoint" in t for t in notices(app)),
                         "the undo notice")
        assert "return a - b" in target.read_text()
        assert app.host.workspace.patch() == ""
        await say(pilot, "/undo")
        await wait_until(pilot, lambda: any("nothing undone" in t for t in notices(app)),
                         "the nothing-to-undo notice")
        await say(pilot, "thanks")
        last_user = scripted.requests[-1]["messages"][-1]["content"]
        assert "undid your last 1 checkpoint" in last_user and last_user.endswith("thanks")


@pytestmark_docker
@pytest.mark.asyncio
async def test_compact_command_shows_a_compaction(example, scripted) -> None:
    repo, _ = example
    script = [{"content": "Looking.", "tool_calls": [tool_call("view", {"path": OPERATIONS})]},
              {"content": "It subtracts."},
              {"content": "Hello."},
              {"content": "## Goal\n- explain add\n## Files touched\n- operations.py"},
              {"content": "Still here."}]
    app = make_app(repo, scripted, script,
                   context=ContextConfig(keep_outputs=0, context_window=6000))
    async with app.run_test(size=SIZE) as pilot:
        assert app.status.context_window == 6000  # `agent tui --context-window 6000`
        await say(pilot, "what does add do?")
        await say(pilot, "hello")  # the latest user message is kept; the older turns can go
        await say(pilot, "/compact")
        await wait_until(pilot, lambda: any("context compacted" in t for t in notices(app)),
                         "a compaction block")
        await wait_until(pilot, lambda: app.status.activity == "idle", "compaction to end")
        await say(pilot, "go on")
        assert app.last_status == "answered"
        assert [b.text for b in app.query(AssistantBlock)][-1] == "Still here."
        assert app.host is not None
        events = read_trajectory(app.host.trajectory_path).events
        assert any(e.type == "compaction" for e in events)
        sent = scripted.requests[-1]["messages"]
        assert rebuild_calls(events)[-1]["messages"] == sent


@pytestmark_docker
@pytest.mark.asyncio
async def test_plan_mode_proposes_a_plan_then_runs_it_once_approved(example, scripted) -> None:
    repo, _ = example
    script = [
        {"tool_calls": [tool_call("todo", {"items": PLAN})]},
        {"tool_calls": [tool_call("bash", {"command": "touch planned.txt"})]},
        {"content": "The plan: fix add, then run the tests."},
        {"tool_calls": [tool_call("bash", {"command": "touch built.txt"})]},
        {"content": "Done as planned."},
    ]
    app = make_app(repo, scripted, script)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "/plan")
        assert app.policy.plan_mode and "mode: plan" in app.status.render().plain
        assert app.query_one(PlanPanel).display
        await say(pilot, "fix add", wait=False)
        await wait_until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "plan approval")
        assert app.screen.title_text == "Approve this plan?"  # type: ignore[attr-defined]
        assert "PLAN MODE" in scripted.requests[0]["messages"][-1]["content"].upper()
        assert app.host is not None
        assert not (app.host.workspace.path / "planned.txt").exists()  # declined in plan mode
        await pilot.press("y")
        await wait_until(pilot, lambda: len(scripted.requests) == 5, "the approved plan to run")
        await settle(pilot)
        assert not app.policy.plan_mode
        assert scripted.requests[3]["messages"][-1]["content"] == PLAN_APPROVED
        assert (app.host.workspace.path / "built.txt").exists()


@pytestmark_docker
@pytest.mark.asyncio
async def test_prompt_history_completion_and_commands(example, scripted) -> None:
    repo, _ = example
    app = make_app(repo, scripted, [{"content": "One."}])
    async with app.run_test(size=SIZE) as pilot:
        prompt = app.query_one(PromptInput)
        prompt.text = "first message"  # sent before the session is ready: queued until it is
        await pilot.press("enter")
        assert app.host is None
        await wait_until(pilot, lambda: app.last_status == "answered", "the queued message")
        assert [b.text for b in app.query(AssistantBlock)] == ["One."]
        await pilot.press("up")
        assert prompt.text == "first message"
        await pilot.press("down")
        assert prompt.text == ""
        await pilot.press(*"line one", "ctrl+j", *"line two")
        assert prompt.text == "line one\nline two"
        prompt.clear()
        await pilot.press("/", "u", "n")
        hints = app.query_one(CommandHints)
        assert hints.display and "/undo" in str(hints.render())
        await pilot.press("tab")
        assert prompt.text == "/undo"
        prompt.clear()
        await say(pilot, "/help")
        assert "/rewind N" in app.query_one(MarkdownNotice).source
        await say(pilot, "/trajectory")
        assert app.host is not None
        assert any(str(app.host.trajectory_path) in t for t in notices(app))
        await say(pilot, "/model local/smollm2-135m")  # a smaller window: re-measured
        window = KNOWN_MODELS["smollm2-135m"].context_window
        assert app.status.context_window == app.host.session.compactor.window == window
        await say(pilot, "/model openai/other")
        assert app.status.model == "openai/other"
        assert app.host.session.compactor.window == app.status.context_window != window
        assert app.host.session.llm.config.model == "openai/other"
        await say(pilot, "/nonsense")
        assert any("Unknown command" in str(n.message) for n in app._notifications)
        await say(pilot, "/clear")
        assert not app.query(UserBlock)


@pytestmark_docker
@pytest.mark.asyncio
async def test_a_session_resumes_with_its_history_and_context(example, scripted) -> None:
    repo, _ = example
    app = make_app(repo, scripted, FIX_SCRIPT)
    async with app.run_test(size=SIZE) as pilot:
        await say(pilot, "fix add")
        assert app.host is not None
        session_id, path = app.host.session.id, app.host.trajectory_path
        prompt = app.query_one(PromptInput)
        prompt.text = "/quit"
        prompt.submit()  # the app exits: no Pilot call may wait on it now
        deadline = time.monotonic() + 60
        while app.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not app.is_running
    first_requests = len(scripted.requests)
    resumed = make_app(repo, scripted, [{"content": "Yes, add adds now."}], resume=session_id)
    async with resumed.run_test(size=SIZE) as pilot:
        app = await ready(pilot)
        assert [b.render().plain for b in app.query(UserBlock)] == ["fix add"]  # type: ignore[attr-defined]
        assert list(tool_blocks(app)) == ["todo", "view", "str_replace", "bash"]
        assert [i["content"] for i in app.query_one(PlanPanel).items][1] == "Fix add"
        assert app.status.context_tokens > 100
        assert app.host is not None and app.host.workspace.path.exists()
        assert "return a + b" in (app.host.workspace.path / OPERATIONS).read_text()
        await say(pilot, "does add work?")
        assert app.last_status == "answered"
        sent = scripted.requests[first_requests]["messages"]
        assert sent[1]["content"] == "fix add" and sent[-1]["content"] == "does add work?"
        assert len(sent) > 10
    trajectory = read_trajectory(path)
    assert [e.type for e in trajectory.events].count("session_started") == 1
    calls = rebuild_calls(trajectory.events)
    assert calls[-1]["messages"] == sent


# --- snapshots of the main screens --------------------------------------------------------

def snapshot_app(example, scripted, script, **kwargs) -> ApprenticeApp:
    """A fixed session id and branch, and no durations or commit ids on screen."""
    repo, _ = example
    return make_app(repo, scripted, script, session_id="snapshot", show_volatile=False, **kwargs)


def steady(run_before: Callable[[Pilot], Awaitable[None]]) -> Callable[[Pilot], Awaitable[None]]:
    """`run_before` with a prompt cursor that does not blink (a blink would change the image)."""
    async def wrapped(pilot: Pilot) -> None:
        pilot.app.query_one(PromptInput).cursor_blink = False
        await run_before(pilot)

    return wrapped


@pytestmark_docker
def test_snapshot_start_screen(example, scripted, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await ready(pilot)

    assert snap_compare(snapshot_app(example, scripted, []), terminal_size=SIZE,
                        run_before=steady(run_before))


@pytestmark_docker
def test_snapshot_after_a_fix(example, scripted, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await say(pilot, "fix add")

    script = [dict(step) for step in FIX_SCRIPT]  # the test run's duration must not show
    script[3] = {"content": "Now the tests.", "tool_calls": [tool_call(
        "bash", {"command": "python3 -m pytest -q | grep -o '[0-9]* passed'"}, "call_test")]}
    assert snap_compare(snapshot_app(example, scripted, script), terminal_size=SIZE,
                        run_before=steady(run_before))


@pytestmark_docker
def test_snapshot_approval_dialog(example, scripted, snap_compare) -> None:
    script = [{"content": "Running the tests.", "tool_calls": [
        tool_call("bash", {"command": "python3 -m pytest -q"}, "call_1")]}]

    async def run_before(pilot: Pilot) -> None:
        app = await say(pilot, "run the tests", wait=False)
        await wait_until(pilot, lambda: isinstance(app.screen, ApprovalScreen), "the dialog")

    assert snap_compare(snapshot_app(example, scripted, script, mode="ask"), terminal_size=SIZE,
                        run_before=steady(run_before))


@pytestmark_docker
def test_snapshot_help(example, scripted, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await say(pilot, "/help")

    assert snap_compare(snapshot_app(example, scripted, []), terminal_size=SIZE,
                        run_before=steady(run_before))


# --- the real program in a real terminal -----------------------------------------------------

def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "agent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]


class Terminal:
    """A tmux server of our own (its socket in `folder`) running one program in 120x40."""

    def __init__(self, name: str, command: list[str], cwd: Path, folder: Path) -> None:
        self.socket, self.target = str(folder / f"tmux-{name}.sock"), name
        self.tmux("new-session", "-d", "-s", self.target, "-x", "120", "-y", "40", "-c",
                  str(cwd), *command)

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                              text=True, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.target).stdout

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", self.target, *(["-l"] if literal else []), *keys)

    def wait_closed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.tmux("has-session", "-t", self.target).returncode == 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not exit:\n{self.screen()}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.tmux("kill-server")


@pytestmark_docker
def test_agent_runs_in_a_real_terminal_under_tmux(example, scripted, apprentice_home,
                                                   tmp_path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    repo, _ = example
    # Something in the test process sets COLUMNS/LINES at the C level: the app must measure
    # the real terminal instead.
    env = ["env", "-u", "COLUMNS", "-u", "LINES", f"APPRENTICE_HOME={apprentice_home}"]
    # `agent` alone opens the app on the current directory.
    bare = Terminal("bare", [*env, *agent_command()], repo, tmp_path)
    try:
        screen = bare.wait_for("sandbox: docker")
        assert "apprentice on repo" in screen and "mode: auto" in screen, screen
        bare.keys("C-q")
        bare.wait_closed()
    finally:
        bare.kill()
    scripted.script = [{"content": "Hello from the **scripted** model.", "tool_calls": [
        tool_call("bash", {"command": "echo tmux-$((6 * 7))"})]},
        {"content": "All done here."}]
    term = Terminal("tui", [*env, *agent_command(), "tui", "--model", "openai/scripted",
                            "--api-base", scripted.url], repo, tmp_path)
    try:
        term.wait_for("sandbox: docker")
        term.keys("say hello", literal=True)
        term.keys("Enter")
        screen = term.wait_for("All done here.")
        for text in ("Hello from the scripted model.", "bash  echo tmux-$((6 * 7))  exit 0",
                     "tmux-42", "openai/scripted", "idle"):
            assert text in screen, screen
        term.keys("C-q")
        term.wait_closed()
    finally:
        term.kill()
    runs = list((apprentice_home / "runs").glob("*/*.jsonl"))
    assert len(runs) == 1, "the bare session recorded nothing, the second one its turn"
    assert read_trajectory(runs[0]).events[-1].type == "finished"


@pytest.mark.asyncio
async def test_a_task_call_is_a_collapsed_block_with_what_its_subagent_did() -> None:
    from textual.app import App

    result = ToolResult(session_id="s", tool_call_id="c", name="task", output=(
        "Subagent 'find add' finished after 3 steps.\nIts summary:\nadd subtracts.\nsee\n"
        "operations.py\nline 2\nline 3\nFiles it changed: calculator/operations.py"),
        data={"subagent": {"session_id": "s.task1", "exit_status": "finished", "steps": 3,
                           "files_changed": [OPERATIONS]}})
    block = ToolBlock("task", json.dumps({"description": "find add", "prompt": "Find add."}),
                      result)

    class One(App):
        def compose(self):
            yield block

    async with One().run_test(size=SIZE) as pilot:
        header = str(block._header.render())
        assert "task  find add" in header
        assert "subagent finished, 3 steps, 1 file changed" in header
        assert "Files it changed" not in str(block._output.render())  # collapsed
        block.focus()
        await pilot.press("enter")
        assert "Files it changed: calculator/operations.py" in str(block._output.render())


@pytestmark_docker
@pytest.mark.asyncio
async def test_a_subagent_shows_inside_its_task_block_not_as_turns(example, scripted) -> None:
    repo, _ = example
    script = [
        {"content": "Let a subagent look.", "tool_calls": [tool_call(
            "task", {"description": "find add", "prompt": "Where is add defined?"})]},
        {"content": "Searching.", "tool_calls": [tool_call("grep", {"pattern": "def add"})]},
        {"tool_calls": [tool_call("finish", {"summary": "In calculator/operations.py."})]},
        {"content": "It is in operations.py."},
    ]
    app = make_app(repo, scripted, script)
    async with app.run_test(size=SIZE) as pilot:
        app = await ready(pilot)
        await pilot.press(*"find add", "enter")
        await wait_until(pilot, lambda: app.running or app.last_status is not None,
                         "the turn to start")
        await settle(pilot)
        assert app.last_status == "answered"
        assert [b.render().plain for b in app.query(UserBlock)] == ["find add"]  # type: ignore[attr-defined]
        assert [b.text for b in app.query(AssistantBlock)] == [
            "Let a subagent look.", "It is in operations.py."]  # not the subagent's "Searching."
        blocks = tool_blocks(app)
        assert list(blocks) == ["task"]  # the subagent's grep is inside it, not a block
        task = blocks["task"]
        assert task.subagent_lines[:3] == ["started: find add", "step 1: grep",
                                           task.subagent_lines[2]]
        assert task.subagent_lines[2].startswith("  ✓ grep: ")
        assert task.subagent_lines[-3:] == ["step 2: finish", "  ✓ finish: Finished: In "
                                            "calculator/operations.py.",
                                            "ended: finished after 2 steps"]
        assert "subagent finished, 2 steps, 0 files changed" in task._header.render().plain  # type: ignore[attr-defined]
        assert not task._subagent.display  # collapsed once it has its result
        task.focus()
        await pilot.press("enter")
        assert task._subagent.display and "step 1: grep" in str(task._subagent.render())
