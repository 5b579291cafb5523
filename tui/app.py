"""The Textual app: renders a session's event stream, takes the user's messages and commands.

It holds no agent logic: a `SessionHost` (worktree, sandbox, recorder) runs the same `Session`
as `agent solve` in a worker thread; its events come back as `SessionEvent` messages and are
folded by a `Transcript` into the blocks the conversation shows.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, TextArea

from agent.context import ContextConfig
from agent.episode import EpisodeConfig, SandboxConfig
from agent.interactive import SessionHost, load_recording, recorded_model
from agent.llm import LLMConfig
from agent.stream import (
    Event,
    ModelCallStarted,
    PlanUpdated,
    SessionStarted,
    ToolCallStarted,
    ToolResult,
)
from agent.token_counter import context_window
from tui.event_bridge import EventBridge
from tui.gc_pauses import defer_full_collections, freeze_startup_heap
from tui.permissions import PLAN_APPROVED, PLAN_MODE_NOTE, PermissionPolicy
from tui.sampled_requests import SampledRequests
from tui.screens.approval import ApprovalScreen
from tui.slash_commands import SlashCommands
from tui.subagent_view import SubagentEvents
from tui.transcript import Transcript
from tui.widgets.conversation import ConversationView
from tui.widgets.plan_panel import PlanPanel
from tui.widgets.prompt_input import CommandHints, PromptInput
from tui.widgets.status_line import StatusLine, mcp_summary
from tui.widgets.tool_block import ToolBlock

DEFAULT_MODEL = LLMConfig.model_fields["model"].default


class ApprenticeApp(App[None]):
    """An interactive coding session in the terminal."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "apprentice"
    BINDINGS = [
        Binding("escape", "interrupt", "Interrupt"),
        Binding("ctrl+c", "interrupt", "Interrupt", show=False, priority=True),
        Binding("shift+tab,f2", "cycle_mode", "Mode", priority=True),
        Binding("ctrl+o", "toggle_outputs", "Outputs"),
        Binding("ctrl+b", "toggle_plan", "Plan"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    class Replay(Message):
        """The recorded events of a session being resumed."""

        def __init__(self, events: list[Event]) -> None:
            super().__init__()
            self.events = events

    class SessionOpened(Message):
        def __init__(self, host: SessionHost) -> None:
            super().__init__()
            self.host = host

    class SessionFailed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class TurnEnded(Message):
        def __init__(self, status: str) -> None:
            super().__init__()
            self.status = status

    class Notice(Message):
        """A line for the conversation from a worker (undo, compaction, errors)."""

        def __init__(self, text: str, kind: str = "info") -> None:
            super().__init__()
            self.text = text
            self.kind = kind

    class DiffReady(Message):
        def __init__(self, title: str, diff: str) -> None:
            super().__init__()
            self.title = title
            self.diff = diff

    def __init__(self, options: EpisodeConfig | None = None, repo: Path = Path("."),
                 resume: str | None = None, mode: str | None = None,
                 show_volatile: bool = True) -> None:
        """`options`: the session's settings (default: a streamed embedded model);
        `show_volatile=False` leaves out durations and commit ids (for snapshots)."""
        super().__init__()
        self.options = options or EpisodeConfig(llm=LLMConfig(stream=True))
        self.repo = Path(repo)
        self.resume_id = resume
        default_mode = "auto" if self.options.sandbox.kind == "docker" else "ask"
        self.policy = PermissionPolicy(mode=mode or default_mode)
        self.show_volatile = show_volatile
        self.host: SessionHost | None = None
        self.transcript = Transcript()
        self.running = False
        self.last_status: str | None = None
        self._opening = False
        self._quitting = False
        self._queued: list[str] = []
        self._notes: list[str] = []
        self._approval: ApprovalScreen | None = None
        self._interrupting = threading.Event()
        self._plan_changed = False
        self._outputs_expanded = False
        self.forward = EventBridge(self)
        """The session's listener: its events come back as messages."""
        self.subagents = SubagentEvents()
        self.commands = SlashCommands(self)
        self.sampled = SampledRequests(self)
        """`/samples N`: requests as several attempts."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield ConversationView(show_volatile=self.show_volatile, id="conversation")
            yield PlanPanel(id="plan")
        with Vertical(id="bottom"):
            yield CommandHints(id="hints")
            yield PromptInput(id="prompt", placeholder="Ask for a change, or /help")
            yield StatusLine(id="status")
        yield Footer()

    @property
    def conversation(self) -> ConversationView:
        return self.query_one(ConversationView)

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    @property
    def plan_panel(self) -> PlanPanel:
        return self.query_one(PlanPanel)

    async def on_mount(self) -> None:
        freeze_startup_heap()
        self.query_one(CommandHints).display = False
        self.plan_panel.display = False
        self.status.model = self.options.llm.model
        self.status.context_window = context_window(
            self.options.llm.model, self.options.context.context_window)
        self.status.mode = self.policy.mode
        self.query_one(PromptInput).focus()
        if not self.resume_id:
            name = self.repo.resolve().name
            await self.conversation.add_notice(
                f"apprentice on {name}: ask for a change; /help lists commands and keys", "info")
        self._opening = True
        self.open_session(self.resume_id)

    # --- the session, in worker threads -------------------------------------------------

    @work(thread=True, exclusive=True, group="session", exit_on_error=False)
    def open_session(self, resume_id: str | None) -> None:
        try:
            if resume_id:
                path, events = load_recording(resume_id)
                self.post_message(self.Replay(events))
                host = SessionHost.resume(self.options, path, events, [self.forward],
                                          self.approve_call)
            else:
                host = SessionHost.open_new(self.repo, self.options, [self.forward],
                                            self.approve_call)
        except Exception as exc:  # shown in the app, which keeps going
            self.post_message(self.SessionFailed(f"{exc}"))
            return
        self.post_message(self.SessionOpened(host))

    @work(thread=True, group="turn", exit_on_error=False)
    def run_turn(self, host: SessionHost, text: str) -> None:
        try:
            status = host.send(text)
        except Exception as exc:
            self.post_message(self.Notice(f"the turn failed: {type(exc).__name__}: {exc}",
                                          "error"))
            status = "error"
        self.post_message(self.TurnEnded(status))

    def approve_call(self, tool: str, arguments: str) -> bool | str:
        """The session's approver (worker thread): the policy decides, or the user does."""
        decision = self.policy.decide(tool)
        if decision == "allow":
            return True
        if decision == "deny":
            return self.policy.denial(tool)
        answer: Future[str] = Future()
        self.call_from_thread(self._ask_approval, tool, arguments, answer)
        while True:
            try:
                value = answer.result(timeout=0.05)
                break
            except TimeoutError:
                if self._interrupting.is_set():
                    return "the user interrupted"
        if value == "always":
            self.policy.always.add(tool)
        return value in ("yes", "always")

    def _ask_approval(self, tool: str, arguments: str, answer: Future[str]) -> None:
        self.status.activity = f"approve {tool}?"
        screen = ApprovalScreen.for_tool(tool, arguments)
        self._approval = screen

        def done(value: str | None) -> None:
            self._approval = None
            if not answer.done():
                answer.set_result(value or "no")
            if self.running:
                self.status.activity = f"running {tool}" if value != "no" else "thinking"

        self.push_screen(screen, callback=done)

    # --- what the session reports -----------------------------------------------------------

    async def on_event_bridge_streamed_text(self, message: EventBridge.StreamedText) -> None:
        delta = self.forward.take(message)
        if delta is not None and not self.subagents.owns(delta.session_id):
            change = self.transcript.feed(delta)
            if change is not None:
                await self.conversation.show(change)

    async def on_event_bridge_session_event(self, message: EventBridge.SessionEvent) -> None:
        event = message.event
        claimed = self.subagents.claim(event)
        if claimed is not None:  # a subagent's: a line in its task call's block
            call_id, line = claimed
            entry = self.transcript.running_tool(call_id)
            if line and entry is not None and isinstance(entry.widget, ToolBlock):
                entry.widget.add_subagent_line(line)
            return
        change = self.transcript.feed(event)
        if change is not None:
            await self.conversation.show(change)
        status = self.status
        if isinstance(event, ModelCallStarted):
            status.activity = "thinking"
            defer_full_collections(True)
        elif isinstance(event, ToolCallStarted) and self._approval is None:
            status.activity = f"running {event.name}"
        elif isinstance(event, ToolResult) and self.running:
            status.activity = "thinking"
        elif isinstance(event, PlanUpdated):
            self._plan_changed = True
            self.plan_panel.items = event.items
            self.plan_panel.display = True
        status.context_tokens = self.transcript.context_tokens
        status.cost_usd = self.transcript.cost_usd

    async def on_apprentice_app_replay(self, message: Replay) -> None:
        self.transcript = Transcript()
        for event in message.events:
            self.transcript.feed(event)
            if isinstance(event, SessionStarted):
                self.status.model = self.options.llm.model or event.model
                self.status.branch = event.branch
        await self.conversation.load(self.transcript.entries)
        self.plan_panel.items = self.transcript.plan
        self.plan_panel.display = bool(self.transcript.plan) or self.policy.plan_mode
        self.status.context_tokens = self.transcript.context_tokens
        self.status.cost_usd = self.transcript.cost_usd

    async def on_apprentice_app_session_opened(self, message: SessionOpened) -> None:
        self.host = message.host
        self._opening = False
        self.status.branch = message.host.workspace.branch
        kind = self.options.sandbox.kind
        self.status.sandbox = "docker" if kind == "docker" else f"{kind} (no isolation)"
        self.status.mcp = mcp_summary(message.host.mcp_servers)
        if self._queued and not self.running:
            self.send_message(self._queued.pop(0))

    async def on_apprentice_app_session_failed(self, message: SessionFailed) -> None:
        self._opening = False
        self._queued.clear()
        self.status.sandbox = "failed"
        await self.conversation.add_notice(f"the session could not start: {message.error}",
                                           "error")
        self.notify(message.error, title="Session failed", severity="error", timeout=10)

    async def on_apprentice_app_turn_ended(self, message: TurnEnded) -> None:
        self.running = False
        defer_full_collections(False)
        self.last_status = message.status
        self.status.activity = "idle"
        await self.conversation.end_stream(self.transcript.end_stream())
        if message.status == "max_steps":
            await self.conversation.add_notice(
                f"stopped after {self.options.max_steps} steps; send a message to go on", "info")
        if self.policy.plan_mode and self._plan_changed and message.status != "interrupted":
            self.push_screen(ApprovalScreen.for_plan(self.transcript.plan), self._plan_decided)
        elif self._queued:
            self.send_message(self._queued.pop(0))

    def _plan_decided(self, value: str | None) -> None:
        if value == "yes":
            self.set_plan_mode(False)
            self.send_message(PLAN_APPROVED)
        else:
            self.notify("Plan mode stays on: say what to change in the plan.")

    async def on_apprentice_app_notice(self, message: Notice) -> None:
        await self.conversation.add_notice(message.text, message.kind)

    async def on_apprentice_app_diff_ready(self, message: DiffReady) -> None:
        await self.conversation.add_diff(message.title, message.diff)

    # --- input ---------------------------------------------------------------------------

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if isinstance(event.text_area, PromptInput):
            self.query_one(CommandHints).show_for(event.text_area.text)

    async def on_prompt_input_submitted(self, message: PromptInput.Submitted) -> None:
        text = message.text.strip()
        if text.startswith("/") and not text.startswith("//"):
            await self.commands.run(text)
        else:
            self.send_message(text)

    def send_message(self, text: str) -> None:
        """Send a user message to the session, or queue it until the session can take it."""
        if self.host is None or self.running:
            if self.host is None and not self._opening:
                self.notify("There is no session: see the error above, or /resume one.",
                            severity="error")
                return
            self._queued.append(text)
            self.notify("Queued: it is sent when the current step ends.", timeout=3)
            return
        if self.sampled.on:  # notes wait for the session's next turn: attempts start afresh
            problem = self.sampled.problem()
            if problem:
                self.notify(f"Not sent: {problem}.", title="/samples", severity="error")
                return
            self._interrupting.clear()
            self.sampled.start(self.host, text)
            return
        notes = self._notes + ([PLAN_MODE_NOTE] if self.policy.plan_mode else [])
        self._notes = []
        full_text = "\n".join(notes) + "\n\n" + text if notes else text
        self.running = True
        self._interrupting.clear()
        self._plan_changed = False
        self.status.activity = "thinking"
        self.run_turn(self.host, full_text)

    # --- keys ----------------------------------------------------------------------------

    def action_interrupt(self) -> None:
        if self._approval is not None:
            self._approval.dismiss("no")
        if self.running and self.host is not None:
            self._interrupting.set()
            self.host.interrupt()
            self.status.activity = "interrupting"
            return
        focused = self.focused
        if isinstance(focused, TextArea) and focused.selected_text:
            self.copy_to_clipboard(focused.selected_text)
            return
        self.notify("Nothing is running. Ctrl+Q quits.", timeout=3)

    def action_cycle_mode(self) -> None:
        self.policy.mode = self.policy.next_mode()
        self.status.mode = self.policy.mode
        self.notify(f"Permission mode: {self.policy.mode}", timeout=2)

    def action_toggle_outputs(self) -> None:
        self._outputs_expanded = not self._outputs_expanded
        self.conversation.set_outputs_expanded(self._outputs_expanded)

    def action_toggle_plan(self) -> None:
        self.plan_panel.display = not self.plan_panel.display

    def add_note(self, note: str) -> None:
        """A bracketed note for the model, sent before the user's next message."""
        self._notes.append(note)

    def switch_session(self, session_id: str) -> None:
        """Close the current session (it stays resumable) and continue `session_id`."""
        old, self.host = self.host, None
        self._opening = True
        self.status.sandbox = "starting…"
        self.close_then_resume(old, session_id)

    @work(thread=True, exclusive=True, group="session", exit_on_error=False)
    def close_then_resume(self, old: SessionHost | None, session_id: str) -> None:
        if old is not None:
            old.close()
        self.call_from_thread(self.open_session, session_id)

    def set_plan_mode(self, on: bool) -> None:
        self.policy.plan_mode = on
        self.status.plan_mode = on
        self.plan_panel.plan_mode = on
        self.plan_panel.display = on or bool(self.plan_panel.items)

    async def action_quit(self) -> None:
        if self.host is None or self._quitting:
            self.exit()
            return
        self._quitting = True
        self._interrupting.set()  # an approval being waited for is answered "no"
        self.status.activity = "closing"
        self.close_and_exit(self.host)

    @work(thread=True, group="close", exit_on_error=False)
    def close_and_exit(self, host: SessionHost) -> None:
        try:
            host.close()
        finally:
            self.call_from_thread(self.exit)

    def on_unmount(self) -> None:
        self._interrupting.set()
        if self.host is not None:
            self.host.close()


def run_tui(repo: Path, model: str | None = None, api_base: str | None = None,
            resume: str | None = None, sandbox: SandboxConfig | None = None,
            mode: str | None = None, max_steps: int = 30,
            context: ContextConfig | None = None, tools: str | None = None) -> None:
    """Run the app in this terminal until the user quits (what `agent tui` does)."""
    recorded = recorded_model(resume) if resume and not model else None
    llm = LLMConfig(model=model or recorded or DEFAULT_MODEL, api_base=api_base, stream=True)
    options = EpisodeConfig(llm=llm, sandbox=sandbox or SandboxConfig(), max_steps=max_steps,
                            context=context or ContextConfig(), tools=tools)
    ApprenticeApp(options, repo=repo, resume=resume, mode=mode).run()
