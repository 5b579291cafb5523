"""Append every event of a session to a JSONL file as it happens, secrets redacted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Literal

from trajectories.events import AssistantDelta, AssistantMessage, Event, scrub_text
from trajectories.redact import Redactor
from trajectories.token_ids import TokenIdsCompactor

Durability = Literal["flush", "fsync"]
DURABILITY_MODES: tuple[Durability, ...] = ("flush", "fsync")


def json_line(data: dict[str, Any], redact: Redactor) -> str:
    """An event's JSON (`model_dump(mode="json")`) as the one line a trajectory stores: lone
    surrogates made U+FFFD, secrets redacted. `agent solve --output-format stream-json` prints
    the same lines."""
    return redact(scrub_text(json.dumps(data, ensure_ascii=False)))


class TrajectoryRecorder:
    """An event listener writing one JSON line per event.

    `durability="flush"` (default) hands every line to the operating system before returning,
    so a crash or kill -9 of the process loses at most the event in flight; `"fsync"` also
    forces it to the disk, so a power cut or kernel crash loses nothing already recorded either
    (see bench/bench_trajectories.py for what each costs). Lone surrogates in any text become
    U+FFFD, so every event can be written as UTF-8. Streamed text deltas are not stored:
    the final assistant message holds the text. Token ids are stored as deltas
    (`trajectories.token_ids`)."""

    def __init__(self, path: Path, redactor: Redactor | None = None,
                 durability: Durability = "flush"):
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY_MODES)}, "
                             f"not {durability!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.redact = redactor or Redactor()
        self.durability = durability
        self.token_ids = TokenIdsCompactor()
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        if self._file is None or isinstance(event, AssistantDelta):
            return
        if isinstance(event, AssistantMessage) and event.token_ids:
            data = event.model_dump(mode="json", exclude={"token_ids"})
            data["token_ids"] = self.token_ids.compact(event.token_ids)
        else:
            data = event.model_dump(mode="json")
        self._file.write(json_line(data, self.redact) + "\n")
        self._file.flush()
        if self.durability == "fsync":
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
