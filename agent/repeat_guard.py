"""The repetition guard: a tool call that failed is not run again, with the same arguments,
while nothing that could change the outcome has run since.

Small models (and tired large ones) repeat a failing call: SmolLM2-135M sent `bash` with the
command `add` six times in a row in the demo. Running it again costs a step and teaches the
model nothing, so the session answers the repeat with an error that says so and asks for a
change instead. A call of a tool that may change the workspace (anything not `read_only`:
bash, edits) clears the memory, so running the tests again after an edit is never blocked;
a refused edit changed nothing, so it clears nothing and the same refused edit is blocked. The
guard is built from events only, so a restored session guards as the original did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from trajectories.events import Event, ToolCallStarted, ToolResult

BLOCKED = "repeat_blocked"
"""`ToolResult.data` key marking a repeat the guard answered (the call did not run)."""


def call_key(name: str, arguments: str) -> tuple[str, str]:
    """A call's identity: its tool and its arguments, parsed and re-serialised when JSON."""
    try:
        canonical = json.dumps(json.loads(arguments), sort_keys=True)
    except (TypeError, ValueError):
        canonical = arguments.strip()
    return name, canonical


class RepeatGuard:
    """Remembers the calls that failed since the workspace last could have changed."""

    def __init__(self, read_only: Iterable[str], error_changes_nothing: Iterable[str] = ()):
        self.read_only = set(read_only)
        self.error_changes_nothing = set(error_changes_nothing)
        self._started: dict[str, tuple[str, str]] = {}
        self._failed: dict[tuple[str, str], str] = {}

    def observe(self, event: Event) -> None:
        if isinstance(event, ToolCallStarted):
            self._started[event.tool_call_id] = call_key(event.name, event.arguments)
        elif isinstance(event, ToolResult):
            key = self._started.pop(event.tool_call_id, None)
            if (event.data or {}).get(BLOCKED):
                return
            unchanged = event.is_error and event.name in self.error_changes_nothing
            if event.name not in self.read_only and not unchanged:
                self._failed.clear()
            if key is not None and event.is_error:
                first = next((line for line in event.output.splitlines() if line.strip()), "")
                self._failed[key] = first[:200]

    def refusal(self, name: str, arguments: str) -> str | None:
        """Why the call must not run again (None: run it)."""
        reason = self._failed.get(call_key(name, arguments))
        if reason is None:
            return None
        return (f"Not run: this exact {name} call already failed and nothing has changed since "
                f"({reason}). Running it again gives the same result: change the arguments or "
                "do something else.")
