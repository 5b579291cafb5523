"""The SQLite index of trajectories: one row per episode, kept current as episodes run and
rebuildable from the JSONL files alone."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tools.locations import data_dir
from tools.process_owner import ProcessOwner
from trajectories.events import (
    AssistantMessage,
    Event,
    Finished,
    IndexStatus,
    SessionStarted,
    Verified,
)
from trajectories.reader import UnsupportedSchemaError, read_trajectory
from trajectories.redact import redact_text

REINDEX_BATCH = 500
COLUMNS = ("id", "task", "repo", "model", "started_at", "ended_at", "steps", "prompt_tokens",
           "completion_tokens", "cost_usd", "exit_status", "reward", "verified_at", "path")
SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY, task TEXT, repo TEXT, model TEXT, started_at REAL, ended_at REAL,
    steps INTEGER DEFAULT 0, prompt_tokens INTEGER DEFAULT 0, completion_tokens INTEGER DEFAULT 0,
    cost_usd REAL DEFAULT 0, exit_status TEXT, reward INTEGER, verified_at REAL, path TEXT
);
CREATE INDEX IF NOT EXISTS episodes_model ON episodes(model);
CREATE INDEX IF NOT EXISTS episodes_started ON episodes(started_at);
"""
OWNER_COLUMNS = {"owner_pid": "INTEGER", "owner_started": "TEXT", "owner_boot": "TEXT",
                 "owner_host": "TEXT"}
"""The process recording an episode (`ProcessOwner`), added to older indexes on open. Kept
apart from COLUMNS: a trajectory file does not name its process, so reindexing keeps them."""
UNFINISHED: tuple[IndexStatus, ...] = ("running", "incomplete")
KILLED: IndexStatus = "killed"
"""The exit status of an unfinished episode whose process is gone (killed, or crashed hard)."""
TEXT_COLUMNS = ("task", "repo", "model")


def default_index_path() -> Path:
    return data_dir() / "index.sqlite"


def summarize(events: Iterable[Event], path: Path) -> dict[str, Any] | None:
    """The index row of a trajectory, from its events."""
    row: dict[str, Any] | None = None
    for event in events:
        if isinstance(event, SessionStarted):
            if event.parent:  # a subagent's trajectory is part of its parent's episode
                return None
            row = {"id": event.session_id, "task": event.task.get("instance_id"),
                   "repo": event.repo, "model": event.model, "started_at": event.timestamp,
                   "ended_at": None, "steps": 0, "prompt_tokens": 0, "completion_tokens": 0,
                   "cost_usd": 0.0, "exit_status": "running", "reward": None,
                   "verified_at": None, "path": str(path)}
        elif row is None:
            continue
        elif isinstance(event, AssistantMessage):
            row["steps"] = max(row["steps"], event.step)
            row["prompt_tokens"] += event.prompt_tokens
            row["completion_tokens"] += event.completion_tokens
            row["cost_usd"] += event.cost_usd
            row["ended_at"] = event.timestamp
        elif isinstance(event, Finished):
            row.update(exit_status=event.exit_status, steps=event.steps, ended_at=event.timestamp,
                       prompt_tokens=event.prompt_tokens,
                       completion_tokens=event.completion_tokens, cost_usd=event.cost_usd)
        elif isinstance(event, Verified):
            row.update(reward=event.reward, verified_at=event.timestamp)
    if row is None:
        return None
    if row["exit_status"] == "running" and row["ended_at"] is not None:
        row["exit_status"] = "incomplete"
    return {k: redact_text(v) if k in TEXT_COLUMNS and isinstance(v, str) else v
            for k, v in row.items()}


class TrajectoryStore:
    """Query and maintain the index. Safe to open from several processes (SQLite WAL)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path or default_index_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._add_owner_columns()

    def _add_owner_columns(self) -> None:
        """Give an index made by an older version the owner columns."""
        present = {r["name"] for r in self.db.execute("PRAGMA table_info(episodes)")}
        with self.db:
            for name, kind in OWNER_COLUMNS.items():
                if name not in present:
                    with contextlib.suppress(sqlite3.OperationalError):  # added meanwhile
                        self.db.execute(f"ALTER TABLE episodes ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    def upsert(self, row: dict[str, Any]) -> None:
        with self.db:
            self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        """Insert or update a row inside the caller's transaction."""
        names = ", ".join(COLUMNS)
        marks = ", ".join(f":{c}" for c in COLUMNS)
        updates = ", ".join(f"{c}=excluded.{c}" for c in COLUMNS if c != "id")
        self.db.execute(f"INSERT INTO episodes ({names}) VALUES ({marks}) "
                        f"ON CONFLICT(id) DO UPDATE SET {updates}", row)

    def set_owner(self, episode_id: str, owner: ProcessOwner) -> None:
        """Record which process runs the episode, so its death can be told later."""
        with self.db:
            self.db.execute("UPDATE episodes SET owner_pid = ?, owner_started = ?, owner_boot = ?, "
                            "owner_host = ? WHERE id = ?",
                            (owner.pid, owner.started, owner.boot, owner.host, episode_id))

    def orphaned(self) -> list[str]:
        """Ids of unfinished episodes whose process is gone (killed, or crashed hard).

        An episode indexed without an owner (by an older version, or rebuilt by `reindex` into
        a new index) cannot be judged and is not among them."""
        marks = ", ".join("?" for _ in UNFINISHED)
        rows = self.db.execute(
            "SELECT id, owner_pid, owner_started, owner_boot, owner_host FROM episodes "
            f"WHERE exit_status IN ({marks}) AND owner_pid IS NOT NULL", UNFINISHED).fetchall()
        return [r["id"] for r in rows if _owner(r).gone()]

    def mark_killed(self, episode_ids: list[str] | None = None) -> list[str]:
        """Give orphaned episodes (default: all, see `orphaned`) the status `killed`; their ids."""
        killed = self.orphaned() if episode_ids is None else episode_ids
        if killed:
            marks = ", ".join("?" for _ in UNFINISHED)
            with self.db:
                for episode_id in killed:
                    self.db.execute(
                        f"UPDATE episodes SET exit_status = ? WHERE id = ? AND exit_status IN "
                        f"({marks})", (KILLED, episode_id, *UNFINISHED))
        return killed

    def index_file(self, path: Path) -> dict[str, Any] | None:
        row = summarize(read_trajectory(path).events, Path(path).resolve())
        if row is not None:
            self.upsert(row)
        return row

    def reindex(self, roots: Iterable[Path], problems: list[str] | None = None) -> int:
        """Rebuild rows from every *.jsonl under `roots`; rows whose file is gone are dropped.
        Files this version cannot read are skipped, with the reason added to `problems`."""
        seen: set[str] = set()
        batch: list[dict[str, Any]] = []
        for root in roots:
            for path in sorted(Path(root).rglob("*.jsonl")):
                try:
                    row = summarize(read_trajectory(path).events, path.resolve())
                except UnsupportedSchemaError as exc:
                    if problems is not None:
                        problems.append(str(exc))
                    continue
                if row is not None:
                    seen.add(row["id"])
                    batch.append(row)
                if len(batch) >= REINDEX_BATCH:
                    self._write_batch(batch)
        self._write_batch(batch)
        with self.db:
            for (episode_id, path) in self.db.execute("SELECT id, path FROM episodes").fetchall():
                if episode_id not in seen and not Path(path).exists():
                    self.db.execute("DELETE FROM episodes WHERE id = ?", (episode_id,))
        return len(seen)

    def _write_batch(self, rows: list[dict[str, Any]]) -> None:
        """Write and empty `rows` in one transaction (a commit per row costs a disk sync)."""
        with self.db:
            for row in rows:
                self._write(row)
        rows.clear()

    def list(self, model: str | None = None, reward: int | None = None,
             since: float | None = None, task: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Rows, newest first; episodes whose process is gone are marked killed first."""
        self.mark_killed()
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("model", model), ("reward", reward), ("task", task)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("started_at >= ?")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        query = f"SELECT * FROM episodes {where} ORDER BY started_at DESC{tail}"
        return [dict(r) for r in self.db.execute(query, params)]

    def get(self, episode_id: str) -> dict[str, Any] | None:
        self.mark_killed()
        row = self.db.execute("SELECT * FROM episodes WHERE id = ? OR id LIKE ?",
                              (episode_id, episode_id + "%")).fetchone()
        return dict(row) if row else None


def _owner(row: sqlite3.Row) -> ProcessOwner:
    return ProcessOwner(row["owner_pid"], row["owner_started"], row["owner_boot"],
                        row["owner_host"] or "")


class IndexUpdater:
    """An event listener that keeps the episode's row current while it runs, and records this
    process as its owner (so a kill is told from a run in progress)."""

    def __init__(self, store: TrajectoryStore, path: Path):
        self.store = store
        self.path = Path(path).resolve()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, SessionStarted | Finished | Verified | AssistantMessage):
            self.events.append(event)
            if not isinstance(event, AssistantMessage):
                row = summarize(self.events, self.path)
                if row is not None:
                    self.store.upsert(row)
                    if isinstance(event, SessionStarted):
                        self.store.set_owner(row["id"], ProcessOwner.current())

