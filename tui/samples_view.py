"""What the TUI shows of a request run as several attempts (`/samples N`): a line per attempt,
kept up to date from that attempt's events, then every candidate's signals and which one was
selected."""

from __future__ import annotations

from dataclasses import dataclass

from agent.interactive import SampledRequest
from agent.stream import (
    AssistantMessage,
    ErrorEvent,
    Event,
    Finished,
    ModelCallStarted,
    SessionStarted,
    ToolCallStarted,
    ToolResult,
    Verified,
)


@dataclass
class AttemptProgress:
    """One attempt as its events report it."""

    attempt: int
    state: str = "starting a sandbox"
    step: int = 0
    exit_status: str | None = None
    steps: int | None = None
    reward: int | None = None
    cost_usd: float = 0.0
    errors: int = 0

    @property
    def ended(self) -> bool:
        return self.exit_status is not None

    def feed(self, event: Event) -> None:
        """Fold one of the attempt's events in."""
        if isinstance(event, SessionStarted):
            self.state = "started"
        elif isinstance(event, ModelCallStarted) and not self.ended:
            self.state = "thinking"
        elif isinstance(event, AssistantMessage):
            self.step = event.step
            self.cost_usd += event.cost_usd
            names = ", ".join(call.name for call in event.tool_calls)
            self.state = f"called {names}" if names else "answered"
        elif isinstance(event, ToolCallStarted):
            self.state = f"running {event.name}"
        elif isinstance(event, ToolResult):
            self.state = f"{event.name} {'failed' if event.is_error else 'done'}"
        elif isinstance(event, ErrorEvent):
            self.errors += 1
        elif isinstance(event, Finished):
            self.exit_status, self.steps = event.exit_status, event.steps
            self.state = "verifying"
        elif isinstance(event, Verified):
            self.reward = event.reward
            self.state = "done"

    def line(self) -> str:
        """`attempt 1: step 3, running bash` while it runs; how it ended once it has."""
        if not self.ended:
            where = f"step {self.step}, " if self.step else ""
            return f"attempt {self.attempt}: {where}{self.state}"
        reward = "" if self.reward is None else f", reward {self.reward}"
        cost = f", ${self.cost_usd:.4f}" if self.cost_usd else ""
        return (f"attempt {self.attempt}: {self.exit_status} after {self.steps} steps"
                f"{reward}{cost}")


def candidate_rows(done: SampledRequest) -> list[tuple[str, bool]]:
    """One row per candidate: its signals (or why it lost) and its reward, and whether it was
    the one selected."""
    group = done.group
    rows = []
    for row in group.candidates():
        signals = row["signals"]
        details = signals.get("details", {})
        scores = "  ".join(f"{name} {_score(signals.get(name))}"
                           for name in group.selection.used)
        why = f"lost: {row['lost']}" if row["lost"] else \
            "changes no code" if details.get("empty") else \
            f"does not apply: {details['apply_error']}" if details.get("apply_error") else \
            f"breaks {', '.join(details['broken'])}" if details.get("broken") else ""
        reward = "" if row["reward"] is None else f"  reward {row['reward']}"
        text = f"attempt {row['attempt']}: {scores}{reward}" + (f"  ({why})" if why else "")
        rows.append((text, row["attempt"] == group.selection.selected))
    return rows


def _score(value: object) -> str:
    """A signal's score; -1 (the selector ran nothing for it) as a dash."""
    return "–" if value == -1 else str(value)


def outcome_line(done: SampledRequest) -> str:
    """What reached the session: the selected attempt's change and its files, or why not."""
    chosen = done.group.selected
    if done.applied and chosen is not None:
        return (f"selected attempt {chosen.attempt} of {len(done.group.attempts)}: its change "
                f"is applied to the session ({', '.join(done.files)}); /undo takes it back")
    picked = f"selected attempt {chosen.attempt}, " if chosen is not None else ""
    return f"{picked}nothing applied: {done.not_applied}"
