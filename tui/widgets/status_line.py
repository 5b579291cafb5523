"""The status line: model, context used, cost, sandbox, MCP servers, branch, what is running,
the mode."""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from agent.stream import McpServerStatus
from agent.token_counter import DEFAULT_WINDOW

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
MODE_STYLES = {"auto": "bold green", "ask": "bold yellow", "read-only": "bold cyan"}


def mcp_summary(servers: list[McpServerStatus]) -> str:
    """`docs, github on host, search failed`: each server, where it is not in the sandbox,
    and what did not start."""
    parts = []
    for server in servers:
        where = {"host": " on host", "url": " (url)"}.get(server.where, "")
        state = "" if server.state == "ready" else f" {server.state}"
        parts.append(f"{server.server}{where}{state}")
    return ", ".join(parts)


def short_tokens(count: int) -> str:
    return f"{count / 1000:.1f}k" if count >= 1000 else str(count)


class StatusLine(Static):
    """One line of session state; the app sets the attributes, the line redraws itself."""

    model: reactive[str] = reactive("")
    context_tokens: reactive[int] = reactive(0)
    context_window: reactive[int] = reactive(DEFAULT_WINDOW)
    cost_usd: reactive[float] = reactive(0.0)
    sandbox: reactive[str] = reactive("starting…")
    mcp: reactive[str] = reactive("")
    """The MCP servers (`docs, github on host`); empty: none configured."""
    branch: reactive[str] = reactive("")
    activity: reactive[str] = reactive("idle")
    mode: reactive[str] = reactive("auto")
    plan_mode: reactive[bool] = reactive(False)
    samples: reactive[int] = reactive(1)
    """Attempts of the next request (`/samples N`); 1: off."""
    _frame: reactive[int] = reactive(0)

    def on_mount(self) -> None:
        self._started = time.monotonic()
        self._timer = self.set_interval(0.25, self._tick, pause=True)

    def watch_activity(self, activity: str) -> None:
        if not hasattr(self, "_timer"):
            return
        if activity == "idle":
            self._timer.pause()
        else:
            self._started = time.monotonic()
            self._timer.resume()

    def _tick(self) -> None:
        self._frame += 1

    def render(self) -> Text:
        """Mode and activity first (they change most), then the session's facts."""
        percent = 100 * self.context_tokens / max(self.context_window, 1)
        mode = "plan" if self.plan_mode else self.mode
        parts: list[tuple[str, str]] = [(f"mode: {mode}", MODE_STYLES.get(self.mode, "bold"))]
        if self.samples > 1:
            parts.append((f"next: ×{self.samples} attempts", "bold magenta"))
        if self.activity == "idle":
            parts.append(("idle", "dim"))
        elif self.activity.endswith("?"):  # waiting for the user: nothing is running
            parts.append((f"⏸ {self.activity}", "bold magenta"))
        else:
            spin = SPINNER[self._frame % len(SPINNER)]
            elapsed = time.monotonic() - getattr(self, "_started", time.monotonic())
            parts.append((f"{spin} {self.activity} {elapsed:.0f}s", "bold yellow"))
        parts += [
            (self.model or "no model", "bold"),
            (f"ctx {short_tokens(self.context_tokens)}/{short_tokens(self.context_window)} "
             f"({percent:.0f}%)", "red" if percent >= 80 else ""),
            (f"${self.cost_usd:.4f}", ""),
            (f"sandbox: {self.sandbox}", "red" if self.sandbox in ("failed", "closed") else ""),
        ]
        if self.mcp:  # a server on the host runs outside the sandbox: said in colour
            parts.append((f"mcp: {self.mcp}", "bold yellow" if "on host" in self.mcp else ""))
        parts.append((self.branch or "no branch", "magenta"))
        text = Text(" ")
        for index, (part, style) in enumerate(parts):
            if index:
                text.append(" │ ", style="dim")
            text.append(part, style=style)
        return text
