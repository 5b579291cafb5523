"""What each slash command does. The app owns the state; commands act on it through `app`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.context import ContextConfig
from agent.interactive import Rewound, WorkspaceError, recent_sessions
from agent.token_counter import context_window
from tui.commands import BY_NAME, help_text, parse
from tui.sampled_requests import samples_problem
from tui.screens.session_picker import SessionPicker

if TYPE_CHECKING:
    from agent.interactive import SessionHost
    from tui.app import ApprenticeApp

WAITING_COMMANDS = {"/model", "/compact", "/undo", "/rewind", "/diff", "/clear", "/resume"}
"""Commands that wait for the running step to end (they change or read the session)."""


class SlashCommands:
    """`/help`, `/model`, `/compact`, `/undo`, `/rewind`, `/diff`, `/plan`, `/samples`, `/clear`,
    `/resume`, `/trajectory`, `/quit`. Blocking work (git, compaction) runs in worker threads."""

    def __init__(self, app: ApprenticeApp) -> None:
        self.app = app

    async def run(self, line: str) -> None:
        app = self.app
        parsed = parse(line)
        if parsed is None or parsed[0] not in BY_NAME:
            name = parsed[0] if parsed else line
            app.notify(f"Unknown command {name}: /help lists them.", severity="error")
            return
        name, argument = parsed
        if name in WAITING_COMMANDS and app.running:
            app.notify(f"{name} waits until the step ends (Esc interrupts it).",
                       severity="warning")
            return
        await getattr(self, name[1:])(argument)

    def _in_thread(self, work: Callable[[], None]) -> None:
        self.app.run_worker(work, thread=True, group="command", exit_on_error=False)

    def _notice(self, text: str, kind: str = "info") -> None:
        """(any thread) A line in the conversation."""
        self.app.post_message(self.app.Notice(text, kind))

    def _host(self) -> SessionHost | None:
        if self.app.host is None:
            self.app.notify("The session is not ready yet.", severity="warning")
        return self.app.host

    async def help(self, argument: str) -> None:
        await self.app.conversation.add_markdown(help_text())

    async def model(self, argument: str) -> None:
        app = self.app
        if not argument:
            app.notify(f"Model: {app.status.model}. /model NAME switches.")
            return
        app.options.llm = app.options.llm.model_copy(update={"model": argument})
        if app.host is not None:
            app.host.set_model(argument)
        app.status.model = argument
        app.status.context_window = context_window(
            argument, (app.options.context or ContextConfig()).context_window)
        await app.conversation.add_notice(f"model: {argument}", "info")

    async def compact(self, argument: str) -> None:
        host = self._host()
        if host is None:
            return
        compact = getattr(host.session, "compact", None)
        if compact is None:
            self.app.notify("Compaction is not available in this version.", severity="warning")
            return
        self.app.status.activity = "compacting"

        def work() -> None:
            try:
                if host.locked(compact) is None:
                    self._notice("nothing to compact yet")
            except Exception as exc:
                self._notice(f"compaction failed: {exc}", "error")
            finally:
                self.app.call_from_thread(setattr, self.app.status, "activity", "idle")

        self._in_thread(work)

    async def undo(self, argument: str) -> None:
        await self.rewind("1")

    async def rewind(self, argument: str) -> None:
        host = self._host()
        if host is None:
            return
        try:
            count = int(argument or "1")
        except ValueError:
            self.app.notify("/rewind takes a number of checkpoints, e.g. /rewind 2.",
                            severity="error")
            return

        def work() -> None:
            try:
                done = host.locked(lambda: host.workspace.rewind(count))
            except WorkspaceError as exc:
                self._notice(f"nothing undone: {exc}", "error")
                return
            assert isinstance(done, Rewound)
            files = ", ".join(done.files) or "no files"
            plural = "s" if len(done.undone) > 1 else ""
            self._notice(f"undid {len(done.undone)} checkpoint{plural}: files restored "
                         f"({files})", "checkpoint")
            self.app.call_from_thread(self.app.add_note, (
                f"[The user undid your last {len(done.undone)} checkpoint{plural}: {files} "
                "are back to how they were before.]"))

        self._in_thread(work)

    async def diff(self, argument: str) -> None:
        host = self._host()
        if host is None:
            return

        def work() -> None:
            try:
                patch = str(host.locked(host.workspace.patch))
            except Exception as exc:
                self._notice(f"no diff: {exc}", "error")
                return
            title = f"changes on {host.workspace.branch} since {host.workspace.base_commit[:8]}"
            self.app.post_message(self.app.DiffReady(title, patch))

        self._in_thread(work)

    async def plan(self, argument: str) -> None:
        on = True if argument else not self.app.policy.plan_mode
        self.app.set_plan_mode(on)
        state = "on: read-only tools, the agent proposes a plan" if on else "off"
        self.app.notify(f"Plan mode {state}.", timeout=3)
        if argument:
            self.app.send_message(argument)

    async def samples(self, argument: str) -> None:
        app, sampled = self.app, self.app.sampled
        word, _, request = argument.partition(" ")
        if not word:
            state = f"the next request runs as {sampled.count} attempts" \
                if sampled.count > 1 else "off"
            app.notify(f"Several attempts: {state}. /samples N [REQUEST] runs the next request "
                       "as N attempts, /samples 1 cancels.")
            return
        problem = samples_problem(word) or (sampled.problem() if int(word) > 1 else None)
        if problem:
            app.notify(problem, title="/samples", severity="error")
            await app.conversation.add_notice(problem, "error")
            return
        sampled.set_count(int(word))
        if sampled.count > 1 and not request.strip():
            await app.conversation.add_notice(
                f"the next request runs as {sampled.count} attempts from the session's files "
                "(without the conversation so far); the tests select one and its change is "
                "applied, then the conversation goes on; /samples 1 cancels")
        elif sampled.count == 1:
            await app.conversation.add_notice("several attempts off: the next request is a turn")
        if request.strip():
            app.send_message(request.strip())

    async def clear(self, argument: str) -> None:
        self.app.transcript.entries.clear()
        await self.app.conversation.clear_view()

    async def resume(self, argument: str) -> None:
        app = self.app
        if argument:
            app.switch_session(argument)
            return
        rows = recent_sessions(50, exclude=app.host.session.id if app.host else None)
        if not rows:
            app.notify("No recorded session to resume.", severity="warning")
            return

        def picked(session_id: str | None) -> None:
            if session_id:
                app.switch_session(session_id)

        app.push_screen(SessionPicker(rows), picked)

    async def trajectory(self, argument: str) -> None:
        host = self._host()
        if host is not None:
            await self.app.conversation.add_notice(f"recorded in {host.trajectory_path}")

    async def quit(self, argument: str) -> None:
        await self.app.action_quit()
