"""A request run as several attempts (`/samples N`): their progress, the selection, the change."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from agent.interactive import SampledRequest
from agent.session import Listener
from agent.stream import AssistantDelta, Event
from tui.samples_view import AttemptProgress, candidate_rows, outcome_line
from tui.widgets.diff_view import DiffView


class SamplesBlock(Vertical):
    """One block of the conversation for one sampled request: a line per attempt while they
    run (from their events, posted here from the attempts' threads), then each candidate's
    signals with the selected one marked, what reached the session, and its diff."""

    class AttemptEvent(Message):
        """An event of one attempt (any thread may post it)."""

        def __init__(self, attempt: int, event: Event) -> None:
            super().__init__()
            self.attempt = attempt
            self.event = event

    def __init__(self, request: str, samples: int) -> None:
        super().__init__(classes="samples-block")
        self.request = request
        self.samples = samples
        self.attempts = [AttemptProgress(i) for i in range(samples)]
        self.result: SampledRequest | None = None
        self.failed: str | None = None
        self._header = Static(classes="samples-header")
        self._lines = Static(classes="samples-attempts")
        self._selection = Static(classes="samples-selection")

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._lines
        yield self._selection

    def on_mount(self) -> None:
        self._refresh()

    def attempt_listener(self, attempt: int) -> list[Listener]:
        """The listeners of attempt `attempt` (`run_samples`' attempt_listeners)."""
        def listen(event: Event) -> None:
            if not isinstance(event, AssistantDelta):
                self.post_message(self.AttemptEvent(attempt, event))
        return [listen]

    def on_samples_block_attempt_event(self, message: AttemptEvent) -> None:
        message.stop()
        if 0 <= message.attempt < len(self.attempts):
            self.attempts[message.attempt].feed(message.event)
            self._refresh()

    @property
    def state(self) -> str:
        if self.failed is not None:
            return "failed"
        if self.result is not None:
            return "applied" if self.result.applied else "not applied"
        return "selecting" if all(a.ended for a in self.attempts) else "running"

    def show_result(self, result: SampledRequest) -> None:
        """(UI thread) The selection and what reached the session."""
        self.result = result
        rows = candidate_rows(result)
        text = Text()
        for index, (row, selected) in enumerate(rows):
            text.append(("\n" if index else "") + ("▶ " if selected else "  ") + row,
                        style="bold green" if selected else "")
        text.append("\n" + outcome_line(result),
                    style="green" if result.applied else "yellow")
        self._selection.update(text)
        self._refresh()
        if result.applied:
            self.mount(DiffView(result.patch, classes="samples-diff"))

    def show_failure(self, error: str) -> None:
        self.failed = error
        self._selection.update(Text(f"✗ {error}", style="red"))
        self._refresh()

    def _refresh(self) -> None:
        head = Text(f"⧉ {self.samples} attempts at: ", style="bold")
        head.append(self.request.splitlines()[0][:200] if self.request else "", style="italic")
        head.append(f"  [{self.state}]", style="dim")
        self._header.update(head)
        self._lines.update(Text("\n".join(a.line() for a in self.attempts), style="dim"))
