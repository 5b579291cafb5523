"""Append every event of a session to a JSONL file as it happens, secrets redacted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from trajectories.events import AssistantDelta, Event
from trajectories.redact import Redactor


class TrajectoryRecorder:
    """An event listener writing one JSON line per event; a crash loses at most the event in
    flight. Streamed text deltas are not stored: the final assistant message holds the text."""

    def __init__(self, path: Path, redactor: Redactor | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.redact = redactor or Redactor()
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        if self._file is None or isinstance(event, AssistantDelta):
            return
        line = self.redact(json.dumps(event.model_dump(mode="json"), ensure_ascii=False))
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
