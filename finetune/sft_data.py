"""SFT data: verified-successful trajectories as conversations, then as the exact tokens the
agent's local model sees (`agent.tool_protocol`), with a mask on the assistant's tokens.

Rows are `trajectories.export`'s SFT rows (`messages` with tool calls and results, `tools` as
JSON, `reward`), from a JSONL file (`agent trajectories export --format sft`), from trajectory
files, or from the trajectory index. Only rows with reward 1 train (and, when asked, rows with no
reward yet).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.prompts import EDIT_TOOLS
from agent.tool_protocol import render_chat_with_mask
from trajectories.export import sft_row
from trajectories.reader import read_trajectory
from trajectories.store import TrajectoryStore


class DataError(ValueError):
    """No usable training data; the message says where to get some."""


def rows_from_trajectories(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """SFT rows of the verified-successful episodes among `paths`."""
    rows = []
    for path in paths:
        row = sft_row(read_trajectory(Path(path)))
        if row is not None and row["reward"] == 1:
            rows.append(row)
    return rows


def rows_from_store(store: TrajectoryStore, model: str | None = None, task: str | None = None,
                    since: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """SFT rows of indexed episodes with reward 1, filtered like `agent trajectories list`."""
    found = store.list(model=model, reward=1, since=since, task=task, limit=limit)
    return rows_from_trajectories(Path(r["path"]) for r in found if Path(r["path"]).is_file())


def load_rows(path: Path, include_unverified: bool = False) -> list[dict[str, Any]]:
    """SFT rows from a JSONL file: those with reward 1, and with `include_unverified` those
    with no reward yet (`reward: null`, as imported rows have). Reward 0 never trains."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; make one with `agent trajectories export --format "
                        "sft` or `agent finetune oracle SUITE`")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if any("messages" not in row for row in rows):
        raise DataError(f"{path} has rows without `messages`: it is not SFT data")
    verified = [row for row in rows if row.get("reward", 1) == 1]
    unverified = [row for row in rows if "reward" in row and row["reward"] is None]
    if include_unverified:
        return [row for row in rows if row.get("reward", 1) in (1, None)]
    if unverified and not verified:
        raise DataError(f"{path} holds {len(unverified)} unverified rows (reward null, e.g. "
                        "imported) and none with reward 1: pass --include-unverified to train "
                        "on them, or give them rewards first (`agent trajectories import "
                        "--resolved REPORT`)")
    return verified


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the agent sends them: tool-call arguments as JSON text, not objects."""
    out = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call["function"])
                if not isinstance(function.get("arguments"), str):
                    function["arguments"] = json.dumps(function.get("arguments") or {},
                                                       ensure_ascii=False)
                calls.append({**call, "function": function})
            message["tool_calls"] = calls
        out.append(message)
    return out


def row_tools(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = row.get("tools")
    return json.loads(tools) if isinstance(tools, str) else tools


REFUSED = "Error: "
"""How a tool result starts when the call was refused (`tools.base.ToolBox.call`)."""


def weigh_refused_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with `weight: 0` on each assistant turn whose tool calls were all refused
    (every result starts with "Error: "): a verified episode that recovers from a bad call
    teaches the recovery, not the bad call. Turns already weighted keep their weight."""
    results = {m.get("tool_call_id"): str(m.get("content") or "") for m in messages
               if m.get("role") == "tool"}
    out = []
    for message in messages:
        calls = message.get("tool_calls") or []
        refused = bool(calls) and all(c.get("id") in results
                                      and results[c["id"]].startswith(REFUSED) for c in calls)
        if message.get("role") == "assistant" and refused and "weight" not in message:
            message = {**message, "weight": 0}
        out.append(message)
    return out


def tokenize_row(row: dict[str, Any], tokenizer: Any) -> dict[str, list[int]]:
    """`input_ids` of the whole conversation and `assistant_masks` (1 on the model's tokens
    it should learn: refused calls are context only, see `weigh_refused_turns`)."""
    messages = weigh_refused_turns(openai_messages(row["messages"]))
    ids, mask = render_chat_with_mask(messages, row_tools(row), tokenizer)
    return {"input_ids": ids, "assistant_masks": mask}


def through_last_edit(row: dict[str, Any], edit_tools: Iterable[str] = EDIT_TOOLS
                      ) -> dict[str, Any] | None:
    """`row` cut after its last assistant message that calls an edit tool, or None when it
    edits nothing: training spends its steps on the repair, not on the test run and `finish`
    that follow it (turns a model learns first)."""
    names = set(edit_tools)
    messages = row["messages"]
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"
                and any(c["function"]["name"] in names for c in m.get("tool_calls") or [])),
               default=None)
    if last is None:
        return None
    return {**row, "messages": messages[:last + 1]}


def rows_digest(rows: list[dict[str, Any]]) -> str:
    """sha256 of the conversations and tools, in order: names the training data."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["messages"], row.get("tools")], sort_keys=True,
                                 ensure_ascii=False).encode())
    return digest.hexdigest()


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
