"""`agent solve --output-format stream-json`: the event stream as JSON lines on stdout, as the
episode runs, and the result last.

Every line is one JSON object whose first two keys are `v` (`STREAM_VERSION`) and `type`. An
event's line is the event as its trajectory records it (`trajectories.events`, the same fields
and values, secrets redacted), with `v` added, token ids left out, and `attempt` (the attempt's
number) for one of several attempts (`--samples N`). Streamed text (`assistant_delta`) is
printed only when asked for (`--deltas`). The last line has `type` `result`: the keys of
`--output-format json`, or `exit_status` `error` and `error` when the run failed before it had
a result.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

from trajectories.events import AssistantDelta, AssistantMessage, Event
from trajectories.recorder import json_line
from trajectories.redact import Redactor

STREAM_VERSION = 1
"""Version of the stream's format (the `v` of every line). A consumer should ignore types and
keys it does not know: new ones may come within a version; a change of meaning bumps it."""
OUTPUT_FORMATS = ("text", "json", "stream-json")


class StreamJsonPrinter:
    """An event listener printing one JSON line per event (see the module), flushed at once.
    Thread-safe: the attempts of `--samples N` print through siblings (`for_attempt`) that
    share its stream and lock, so lines never interleave."""

    subagent_events = True
    """Subagents' events are printed too (`agent.subagents`)."""

    def __init__(self, stream: TextIO | None = None, deltas: bool = False,
                 redactor: Redactor | None = None, attempt: int | None = None,
                 lock: threading.Lock | None = None):
        self.stream = stream or sys.stdout
        self.deltas = deltas
        """Print `assistant_delta` events too (they are never recorded)."""
        self.redact = redactor or Redactor()
        self.attempt = attempt
        self._lock = lock or threading.Lock()

    def for_attempt(self, attempt: int) -> StreamJsonPrinter:
        """A printer for attempt `attempt`'s events: the same stream, lines marked `attempt`."""
        return StreamJsonPrinter(self.stream, self.deltas, self.redact, attempt, self._lock)

    def __call__(self, event: Event) -> None:
        if isinstance(event, AssistantDelta) and not self.deltas:
            return
        exclude = {"token_ids"} if isinstance(event, AssistantMessage) else None
        self.write(event.model_dump(mode="json", exclude=exclude))

    def result(self, result: dict[str, Any]) -> None:
        """The last line: the run's result (the `json` output format's object)."""
        self.write({"type": "result", **result})

    def failure(self, message: str) -> None:
        """The last line when the run failed before it had a result."""
        self.result({"exit_status": "error", "error": message})

    def write(self, data: dict[str, Any]) -> None:
        head: dict[str, Any] = {"v": STREAM_VERSION, "type": data.get("type")}
        if self.attempt is not None:
            head["attempt"] = self.attempt
        line = json_line({**head, **data}, self.redact)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def result_object(result_json: str) -> dict[str, Any]:
    """A result's JSON text (`SolveResult.to_json`, `SamplesResult.to_json`) as an object."""
    value = json.loads(result_json)
    assert isinstance(value, dict)
    return value
