"""The request after `/samples N` runs as N attempts (`SessionHost.send_samples`) in a worker
thread, shown in a `SamplesBlock`; the selected change lands in the session's files, the model
is told with the next message, and the requests after it are turns again."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from agent.interactive import SamplesUnavailable
from agent.samples_config import SamplesConfig
from tui.widgets.samples_block import SamplesBlock

if TYPE_CHECKING:
    from agent.interactive import SessionHost
    from tui.app import ApprenticeApp

MAX_SAMPLES: int = SamplesConfig.model_fields["max_samples"].default


def samples_problem(word: str) -> str | None:
    """Why `/samples WORD` is not a number of attempts, or None."""
    if word.isdigit() and 1 <= int(word) <= MAX_SAMPLES:
        return None
    return (f"/samples takes a number of attempts from 1 to {MAX_SAMPLES}, not {word}: "
            "/samples 3 runs the next request as 3 attempts and applies the one the tests "
            "select, /samples 1 cancels")


class SampledRequests:
    """How many attempts the next request gets (1: it is a normal turn), and running them."""

    def __init__(self, app: ApprenticeApp) -> None:
        self.app = app
        self.count = 1

    @property
    def on(self) -> bool:
        return self.count > 1 and not self.app.policy.plan_mode

    def problem(self) -> str | None:
        """Why requests cannot run as several attempts now, or None."""
        policy = self.app.policy
        if policy.plan_mode:
            return "/samples runs attempts that edit: turn plan mode off first (/plan)"
        if policy.mode != "auto":
            return (f"attempts run without asking, each in its own sandbox, and the "
                    f"permission mode is {policy.mode}: switch to auto (Shift+Tab), or cancel "
                    "with /samples 1")
        return None

    def set_count(self, count: int) -> None:
        self.count = count
        self.app.status.samples = count

    def start(self, host: SessionHost, text: str) -> None:
        """Run `text` as `count` attempts (the app is idle and the checks passed); the next
        request is a turn again."""
        app = self.app
        count = self.count
        self.set_count(1)
        block = SamplesBlock(text, count)
        app.conversation.mount(block)
        app.running = True
        app.status.activity = f"{count} attempts"
        app.run_worker(lambda: self._run(host, text, count, block), thread=True,
                       group="turn", exit_on_error=False)

    def _run(self, host: SessionHost, text: str, count: int, block: SamplesBlock) -> None:
        """(worker thread) The attempts, then the result into the block, then the turn's end
        (whatever happened: the app must not stay busy)."""
        app = self.app
        status = "error"
        try:
            done = host.send_samples(text, SamplesConfig(samples=count),
                                     attempt_listeners=block.attempt_listener)
            status = "interrupted" if done.group.interrupted else "sampled"
            app.call_from_thread(app.add_note, done.note())
            app.call_from_thread(block.show_result, done)
        except Exception as exc:  # shown in the block; the session goes on
            reason = str(exc) if isinstance(exc, SamplesUnavailable) \
                else f"the attempts failed: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # the block may be gone (/clear)
                app.call_from_thread(block.show_failure, reason)
            app.call_from_thread(app.notify, reason, title="/samples", severity="error")
        finally:
            app.post_message(app.TurnEnded(status))
