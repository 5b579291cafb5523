"""Turn trajectories into training and evaluation data: SFT, DPO, GRPO rows, SWE-bench
predictions.

SFT rows are one per episode, or one per context segment once compaction rewrites the context:
the conversation of a segment's last model call plus its reply holds every assistant turn of the
segment, so assistant-only loss trains on each turn in a context the model really saw, without
the quadratic size of one row per call (turns kept whole across a compaction appear in both
segments' rows). Tool-call arguments are JSON objects, as Hugging Face chat templates expect;
arguments that are not an object, or nest deeper than `MAX_JSON_DEPTH`, stay the model's text.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trajectories.events import Finished, SessionStarted, Verified
from trajectories.reader import TrajectoryFile, read_trajectory, rebuild_calls, subagent_links

FORMATS = ("sft", "dpo", "grpo", "swebench")
PICKS = ("last-verified", "last", "best")
"""Which episode of an instance becomes its SWE-bench prediction: the last verified one (else
the last), the last, or the last of those with the highest reward (passed, failed, unjudged)."""
PREDICTION_FIELDS = ("instance_id", "model_name_or_path", "model_patch")


MAX_JSON_DEPTH = 64
"""Deepest tool-call arguments turned into objects; deeper ones stay text, since chat templates,
`json.dumps` and readers of the rows would exceed Python's recursion limit on them."""


def load_shallow_json(raw: Any) -> Any:
    """`raw` parsed as JSON, or None when it is not text, not JSON, or nested deeper than
    `MAX_JSON_DEPTH` (however deep: parsing never raises RecursionError)."""
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if _depth_within(value, MAX_JSON_DEPTH) else None


def _depth_within(value: Any, limit: int) -> bool:
    """True if lists and objects in `value` nest at most `limit` deep (checked iteratively)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def _arguments(raw: str) -> dict[str, Any] | str:
    value = load_shallow_json(raw)
    return value if isinstance(value, dict) else raw


def to_training_message(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """An OpenAI-format message in the shape TRL and chat templates read."""
    role = message["role"]
    if role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            out["tool_calls"] = [
                {"type": "function", "id": c.get("id"),
                 "function": {"name": c["function"]["name"],
                              "arguments": _arguments(c["function"]["arguments"])}}
                for c in message["tool_calls"]
            ]
        return out
    if role == "tool":
        return {"role": "tool", "name": names.get(message["tool_call_id"], ""),
                "tool_call_id": message["tool_call_id"], "content": message["content"]}
    return {"role": role, "content": message["content"]}


def outcome(trajectory: TrajectoryFile) -> tuple[Finished | None, Verified | None]:
    finished = next((e for e in reversed(trajectory.events) if isinstance(e, Finished)), None)
    verified = next((e for e in reversed(trajectory.events) if isinstance(e, Verified)), None)
    return finished, verified


def sft_rows(trajectory: TrajectoryFile) -> list[dict[str, Any]]:
    """The conversation of an episode, one row per context segment (a compaction starts a new
    one): messages (with tool calls and results) as the model saw them, and tools."""
    calls = rebuild_calls(trajectory.events)
    last_of_segment = {call["segment"]: call for call in calls}
    return [_conversation_row(trajectory, call) for call in last_of_segment.values()]


def subagent_sft_rows(trajectory: TrajectoryFile) -> list[dict[str, Any]]:
    """The rows of the episode's subagents (their nested trajectories, and theirs in turn):
    their own conversations, with the episode's reward (their work is part of it) and
    `parent_session_id` / `parent_tool_call_id`. A missing or unreadable file gives none."""
    _, verified = outcome(trajectory)
    rows = []
    for link in subagent_links(trajectory):
        if not link.path.is_file():
            continue
        child = read_trajectory(link.path)
        if child.header is None:
            continue
        for row in sft_rows(child) + subagent_sft_rows(child):
            row.update(reward=verified.reward if verified else None)
            row.setdefault("parent_session_id", child.header.parent.get("session_id"))
            row.setdefault("parent_tool_call_id", link.tool_call_id)
            rows.append(row)
    return rows


def sft_row(trajectory: TrajectoryFile) -> dict[str, Any] | None:
    """The conversation of the episode's last context segment (the whole episode when it was
    never compacted)."""
    rows = sft_rows(trajectory)
    return rows[-1] if rows else None


def _conversation_row(trajectory: TrajectoryFile, last: dict[str, Any]) -> dict[str, Any]:
    raw = [*last["messages"], last["response"]]
    names = {c["id"]: c["function"]["name"] for m in raw for c in m.get("tool_calls") or []}
    header = trajectory.header
    assert header is not None
    _, verified = outcome(trajectory)
    return {
        "messages": [to_training_message(m, names) for m in raw],
        "tools": json.dumps(header.tools),
        "session_id": header.session_id,
        "task": header.task.get("instance_id"),
        "model": header.model,
        "reward": verified.reward if verified else None,
        "segment": last["segment"],
    }


def grpo_row(header: SessionStarted) -> dict[str, Any]:
    """A task as a GRPO prompt, with everything the reward needs."""
    task = header.task
    return {
        "prompt": [{"role": "system", "content": header.system_prompt},
                   {"role": "user", "content": task["problem_statement"]}],
        "instance_id": task.get("instance_id"),
        "repo": task.get("repo"),
        "base_commit": header.base_commit,
        "problem_statement": task["problem_statement"],
        "test_command": task["test_command"],
        "FAIL_TO_PASS": json.dumps(task.get("FAIL_TO_PASS") or []),
        "PASS_TO_PASS": json.dumps(task.get("PASS_TO_PASS") or []),
        "test_patch": task.get("test_patch") or "",
    }


def _rank(trajectory: TrajectoryFile, pick: str) -> int:
    """How `pick` prefers an episode over earlier ones of its instance (higher wins, ties go
    to the later episode)."""
    _, verified = outcome(trajectory)
    if pick == "last-verified":
        return int(verified is not None)
    if pick == "best":
        return -1 if verified is None else verified.reward
    return 0


def swebench_predictions(trajectories: Iterable[TrajectoryFile],
                         pick: str = "last-verified") -> list[dict[str, Any]]:
    """One prediction per instance, from its finished episodes in the order given (oldest
    first), chosen by `pick` (see `PICKS`), in the order instances first appear."""
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}; choose one of {', '.join(PICKS)}")
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    for trajectory in trajectories:
        finished, _ = outcome(trajectory)
        header = trajectory.header
        instance_id = header.task.get("instance_id") if header else None
        if header is None or finished is None or not instance_id:
            continue
        rank = _rank(trajectory, pick)
        if instance_id not in chosen or rank >= chosen[instance_id][0]:
            row = {"instance_id": instance_id, "model_name_or_path": header.model,
                   "model_patch": finished.patch or ""}
            chosen[instance_id] = (rank, row)
    return [row for _, row in chosen.values()]


def prediction_problems(rows: list[dict[str, Any]]) -> list[str]:
    """What the SWE-bench harness would reject or silently drop in these predictions: a
    missing or non-text field, an empty model name (its log folder), a repeated instance id
    (it keeps only the last)."""
    problems: list[str] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, 1):
        for field in PREDICTION_FIELDS:
            if not isinstance(row.get(field), str):
                problems.append(f"prediction {number}: {field} must be a string")
        instance_id = row.get("instance_id")
        if not row.get("model_name_or_path"):
            problems.append(f"prediction {number} ({instance_id}): model_name_or_path is empty")
        if isinstance(instance_id, str):
            if instance_id in seen:
                problems.append(f"prediction {number}: instance_id {instance_id} repeats")
            seen.add(instance_id)
    return problems


def export_rows(trajectories: Iterable[TrajectoryFile], fmt: str,
                include_failures: bool = False,
                pick: str = "last-verified") -> Iterator[dict[str, Any]]:
    """Rows of the given format. SFT keeps verified successes unless `include_failures`;
    SWE-bench predictions are one per instance, chosen by `pick`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "sft":
        for trajectory in trajectories:
            for row in sft_rows(trajectory) + subagent_sft_rows(trajectory):
                if include_failures or row["reward"] == 1:
                    yield row
    elif fmt == "swebench":
        yield from swebench_predictions(trajectories, pick)
    elif fmt == "grpo":
        seen: set[tuple[Any, ...]] = set()
        for trajectory in trajectories:
            header = trajectory.header
            if header is None:
                continue
            key = (header.task.get("instance_id"), header.repo, header.base_commit)
            if key not in seen:
                seen.add(key)
                yield grpo_row(header)
    else:
        yield from dpo_pairs(trajectories)


def dpo_pairs(trajectories: Iterable[TrajectoryFile]) -> Iterator[dict[str, Any]]:
    """Chosen/rejected pairs: a passing and a failing episode of the same task, sharing the
    prompt (system + task message); the completions are the rest of each conversation."""
    by_task: dict[tuple[Any, ...], dict[int, list[dict[str, Any]]]] = defaultdict(
        lambda: {0: [], 1: []})
    for trajectory in trajectories:
        row = sft_row(trajectory)
        header = trajectory.header
        if row is None or header is None or row["reward"] not in (0, 1):
            continue
        key = (header.task.get("instance_id"), header.repo, header.base_commit)
        by_task[key][row["reward"]].append(row)
    for groups in by_task.values():
        for chosen, rejected in zip(groups[1], groups[0], strict=False):
            yield {"prompt": chosen["messages"][:2], "chosen": chosen["messages"][2:],
                   "rejected": rejected["messages"][2:], "tools": chosen["tools"],
                   "task": chosen["task"]}


def write_jsonl(rows: Iterable[dict[str, Any]], out: Path) -> int:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
