"""Turn other agents' trajectories into SFT rows in our format (`export.sft_row`'s shape).

Two formats, chosen because they hold most of the public agent runs on SWE-bench-style tasks
(the SWE-bench experiments bucket, SWE-Gym and SWE-smith release them) and because both agents
act through a shell and a `str_replace_editor` whose commands map one to one onto our tools:

- mini-swe-agent (`*.traj.json`): `{"info": {...}, "messages": [...], "trajectory_format":
  "mini-swe-agent-1" | "mini-swe-agent-1.1"}`. Version 1 (and v2's text mode) acts with one
  fenced ```bash (or ```mswea_bash_command) block per reply, the observation being the next
  user message; version 2 calls a native `bash` tool and answers with `tool` messages, ending
  with a `{"role": "exit"}` message. The episode ends by running
  `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` (v1: `MINI_SWE_AGENT_FINAL_OUTPUT`).
- SWE-agent (`*.traj`): `{"history": [...], "trajectory": [...], "info": {...},
  "replay_config": "..."}`. `history` holds the messages (`role`, `content` as text or text
  parts, `message_type`, `thought`, `action`, and with function calling `tool_calls` /
  `tool_call_ids`); demonstrations are marked `is_demo` and dropped. The full `history` is used,
  not the per-step `query` (which history processors may have elided).

Conversion, so that imported rows teach the protocol our agent uses:
- a shell command becomes a `bash` call; `str_replace_editor <cmd>` becomes our `view`,
  `create`, `str_replace`, `insert` or `undo_edit` with the same arguments; the submission
  (mini-swe-agent's marker command, SWE-agent's last `submit`) becomes `finish`, and the row
  ends there (earlier `submit`s that only triggered a review are dropped with their reply);
- the repository root the other agent used (`/testbed`, read from the file's own config) is
  rewritten to our `/workspace` everywhere, unless `rewrite_root=False`;
- `tools` are our tool schemas; the system prompt is kept as the source had it.
A trajectory using a command with no counterpart here (SWE-agent 0.x's `open`, `edit`, ...) is
skipped with the reason, rather than teaching the model a tool it does not have.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from tools.base import ToolBox
from tools.control import default_tools
from tools.sandbox import WORKSPACE
from trajectories.export import to_training_message

FORMATS = ("mini-swe-agent", "swe-agent")
SUFFIXES = (".traj.json", ".traj", ".json")
SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")
ACTION_BLOCK = re.compile(r"```(?:bash|mswea_bash_command)\s*\n(.*?)\n```", re.DOTALL)
EDITOR_COMMANDS = {"view", "create", "str_replace", "insert", "undo_edit"}
EDITOR_ARGS = {"path", "view_range", "file_text", "old_str", "new_str", "insert_line"}
SWE_AGENT_ONLY = {"open", "goto", "scroll_up", "scroll_down", "edit", "create", "search_dir",
                  "search_file", "find_file", "filemap", "view_image", "str_replace_editor"}


class ImportSkipped(ValueError):
    """A trajectory that cannot become training data; the message says why."""


@lru_cache(maxsize=1)
def our_tools_json() -> str:
    """Our tools' schemas, as the `tools` column of SFT rows holds them."""
    return json.dumps(ToolBox(default_tools()).schemas())


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, json.JSONDecodeError):
        raise ImportSkipped(f"tool-call arguments are not JSON: {str(raw)[:80]}") from None
    if not isinstance(value, dict):
        raise ImportSkipped(f"tool-call arguments are not an object: {str(raw)[:80]}")
    return value


def is_submission(command: str) -> bool:
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first.startswith("echo") and any(m in first for m in SUBMIT_MARKERS)


class Conversation:
    """Builds an OpenAI-format conversation in our tool protocol."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.finished = False
        self._ids = 0

    def new_id(self) -> str:
        self._ids += 1
        return f"call_{self._ids}"

    def add(self, role: str, content: str) -> None:
        if not self.finished:
            self.messages.append({"role": role, "content": content})

    def assistant(self, content: str, calls: list[tuple[str, str, dict[str, Any]]]) -> None:
        """An assistant turn; `calls` are (id, our tool name, arguments)."""
        if self.finished:
            return
        message: dict[str, Any] = {"role": "assistant", "content": content.strip()}
        if calls:
            message["tool_calls"] = [
                {"id": i, "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for i, name, args in calls]
        self.messages.append(message)

    def result(self, call_id: str, content: str) -> None:
        if not self.finished:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def finish(self, call_id: str, summary: str) -> None:
        self.result(call_id, f"Finished: {summary}")
        self.finished = True


def _finish_args(thought: str) -> dict[str, Any]:
    return {"summary": thought.strip() or "Submitted the changes."}


def _editor_call(args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """SWE-agent's str_replace_editor arguments as one of our file tools."""
    command = args.get("command")
    if command not in EDITOR_COMMANDS:
        raise ImportSkipped(f"str_replace_editor {command!r} has no counterpart here")
    ours = {k: v for k, v in args.items() if k in EDITOR_ARGS and v is not None}
    if command != "view":
        ours.pop("view_range", None)
    return command, ours


def _rewrite(value: Any, root: str | None) -> Any:
    if root is None:
        return value
    if isinstance(value, str):
        return re.sub(re.escape(root) + r"(?![\w.-])", WORKSPACE, value)
    if isinstance(value, dict):
        return {k: _rewrite(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, root) for v in value]
    return value


def _row(conversation: Conversation, source: str, name: str, model: str,
         root: str | None) -> dict[str, Any]:
    if not any(m["role"] == "assistant" for m in conversation.messages):
        raise ImportSkipped("it has no assistant turn")
    raw = _rewrite(conversation.messages, root)
    names = {c["id"]: c["function"]["name"] for m in raw for c in m.get("tool_calls") or []}
    return {"messages": [to_training_message(m, names) for m in raw],
            "tools": our_tools_json(), "session_id": f"{source}:{name}",
            "task": name, "model": model, "reward": None}


def from_mini_swe_agent(data: dict[str, Any], name: str,
                        rewrite_root: bool = True) -> dict[str, Any]:
    """An SFT row from a mini-swe-agent trajectory (v1 text actions or v2 tool calls)."""
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise ImportSkipped("it has no `messages` list (not a mini-swe-agent trajectory)")
    config = (data.get("info") or {}).get("config") or {}
    model = (config.get("model") or {}).get("model_name") or "unknown"
    cwd = (config.get("environment") or {}).get("cwd") or None
    conversation = Conversation()
    pending: list[str] = []  # call ids awaiting their observation, in order
    for message in messages:
        role = message.get("role")
        if conversation.finished:
            break
        if role == "user" and pending:  # text mode: the observation of the last action
            conversation.result(pending.pop(0), _text(message.get("content")))
        elif role in ("system", "user"):
            conversation.add(role, _text(message.get("content")))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id in pending:
                pending.remove(call_id)
            conversation.result(call_id or conversation.new_id(), _text(message.get("content")))
        elif role == "assistant":
            pending = _mini_assistant(conversation, message)
        elif role != "exit":
            raise ImportSkipped(f"unsupported message role {role!r}")
    return _row(conversation, "mini-swe-agent", name, model,
                cwd if rewrite_root and cwd not in (None, "", "/", WORKSPACE) else None)


def _mini_assistant(conversation: Conversation, message: dict[str, Any]) -> list[str]:
    """Add one mini-swe-agent reply; return the ids of the calls awaiting observations."""
    content = _text(message.get("content"))
    calls: list[tuple[str, str, dict[str, Any]]] = []
    if message.get("tool_calls"):
        for call in message["tool_calls"]:
            function = call.get("function") or {}
            if function.get("name") != "bash":
                raise ImportSkipped(f"unknown mini-swe-agent tool {function.get('name')!r}")
            command = _arguments(function.get("arguments")).get("command", "")
            calls.append((call.get("id") or conversation.new_id(), "bash", {"command": command}))
    else:
        blocks = ACTION_BLOCK.findall(content)
        if len(blocks) == 1:  # otherwise a format error: the next user message says so
            content = ACTION_BLOCK.sub("", content).strip()
            calls.append((conversation.new_id(), "bash", {"command": blocks[0].strip()}))
    submit = next((c for c in calls if is_submission(c[2]["command"])), None)
    if submit is not None:
        calls = [c for c in calls if c is not submit]
        calls.append((submit[0], "finish", _finish_args(content)))
    conversation.assistant(content, calls)
    if submit is not None:
        for call_id, _, _ in calls[:-1]:
            conversation.result(call_id, "Not run: the episode already finished.")
        conversation.finish(submit[0], _finish_args(content)["summary"])
        return []
    return [c[0] for c in calls]


def from_swe_agent(data: dict[str, Any], name: str, rewrite_root: bool = True) -> dict[str, Any]:
    """An SFT row from a SWE-agent `.traj` file (function calling or thought/action)."""
    history = data.get("history")
    if not isinstance(history, list):
        raise ImportSkipped("it has no `history` list (not a SWE-agent trajectory)")
    replay = data.get("replay_config") or {}
    if isinstance(replay, str):
        try:
            replay = json.loads(replay)
        except json.JSONDecodeError:
            replay = {}
    model = ((replay.get("agent") or {}).get("model") or {}).get("name") or "unknown"
    repo_name = ((replay.get("env") or {}).get("repo") or {}).get("repo_name")
    name = (replay.get("problem_statement") or {}).get("id") or name
    items = [h for h in history if not h.get("is_demo")]
    last_submit = max((i for i, h in enumerate(items) if h.get("role") == "assistant"
                       and _is_swe_submit(h)), default=None)
    conversation = Conversation()
    pending: list[str] = []
    skipping = False
    for index, item in enumerate(items):
        if conversation.finished:
            break
        role, content = item.get("role"), _text(item.get("content"))
        if role == "assistant":
            skipping = _is_swe_submit(item) and index != last_submit
            if skipping:
                continue
            pending = _swe_assistant(conversation, item, index == last_submit)
        elif skipping:
            continue
        elif role == "tool" or (role == "user" and pending):
            ids = item.get("tool_call_ids") or []
            call_id = ids[0] if ids and ids[0] in pending else (pending[0] if pending else None)
            if call_id is None:
                raise ImportSkipped("a tool result answers no call")
            pending.remove(call_id)
            conversation.result(call_id, content)
        elif role in ("system", "user"):
            conversation.add(role, content)
    root = f"/{repo_name}" if rewrite_root and repo_name else None
    return _row(conversation, "swe-agent", name, model, root)


def _is_swe_submit(item: dict[str, Any]) -> bool:
    calls = item.get("tool_calls") or []
    if calls:
        return any((c.get("function") or {}).get("name") == "submit" for c in calls)
    return (item.get("action") or "").strip() == "submit"


def _swe_assistant(conversation: Conversation, item: dict[str, Any], final: bool) -> list[str]:
    thought = item.get("thought") or ""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    if item.get("tool_calls"):
        content = _text(item.get("content")) or thought
        for call in item["tool_calls"]:
            function = call.get("function") or {}
            call_id = call.get("id") or conversation.new_id()
            calls.append((call_id, *_swe_call(function.get("name") or "",
                                              _arguments(function.get("arguments")), thought)))
    else:
        content = thought
        action = (item.get("action") or "").strip()
        if action in ("exit", "exit_cost", "exit_context", "exit_format", "exit_error"):
            return []
        if action:
            calls.append((conversation.new_id(), *_swe_text_action(action, thought)))
    conversation.assistant(content, calls)
    if final and calls and calls[-1][1] == "finish":
        conversation.finish(calls[-1][0], calls[-1][2]["summary"])
        return []
    return [c[0] for c in calls]


def _swe_call(name: str, args: dict[str, Any], thought: str) -> tuple[str, dict[str, Any]]:
    if name == "bash":
        return "bash", {"command": args.get("command", "")}
    if name == "str_replace_editor":
        return _editor_call(args)
    if name == "submit":
        return "finish", _finish_args(thought)
    raise ImportSkipped(f"SWE-agent tool {name!r} has no counterpart here")


def _swe_text_action(action: str, thought: str) -> tuple[str, dict[str, Any]]:
    """A thought/action-mode command line as one of our tool calls."""
    if action == "submit":
        return "finish", _finish_args(thought)
    try:
        words = shlex.split(action)
    except ValueError:
        words = action.split()
    head = words[0] if words else ""
    if head != "str_replace_editor":
        if head in SWE_AGENT_ONLY:
            raise ImportSkipped(f"SWE-agent command {head!r} has no counterpart here")
        return "bash", {"command": action}
    if len(words) < 3:
        raise ImportSkipped(f"cannot read the editor command {action[:80]!r}")
    args: dict[str, Any] = {"command": words[1], "path": words[2]}
    rest = words[3:]
    for flag, value in zip(rest[::2], rest[1::2], strict=False):
        args[flag.lstrip("-")] = value
    if "view_range" in args:
        args["view_range"] = [int(n) for n in re.findall(r"-?\d+", str(args["view_range"]))]
    if "insert_line" in args:
        args["insert_line"] = int(args["insert_line"])
    return _editor_call(args)


def trajectory_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The given files, and the trajectory files under given folders."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.name.endswith((".traj", ".traj.json")))
        else:
            yield path


def instance_name(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def import_file(path: Path, fmt: str, rewrite_root: bool = True) -> dict[str, Any]:
    """One trajectory file as an SFT row; raises ImportSkipped (with the reason) if it can't."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportSkipped(f"it is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ImportSkipped("it is not a JSON object")
    convert = from_mini_swe_agent if fmt == "mini-swe-agent" else from_swe_agent
    return convert(data, instance_name(Path(path)), rewrite_root=rewrite_root)


def import_rows(paths: Iterable[Path], fmt: str, problems: list[str],
                resolved: set[str] | None = None, include_failures: bool = False,
                rewrite_root: bool = True) -> Iterator[dict[str, Any]]:
    """SFT rows from trajectory files (or folders of them). With `resolved` (the instance ids a
    SWE-bench evaluation resolved) rows get a reward, and unresolved ones are dropped unless
    `include_failures`. Skipped files are described in `problems`."""
    for path in trajectory_files(paths):
        try:
            row = import_file(path, fmt, rewrite_root=rewrite_root)
        except ImportSkipped as exc:
            problems.append(f"{path}: skipped: {exc}")
            continue
        if resolved is not None:
            row["reward"] = int(row["task"] in resolved)
            if row["reward"] == 0 and not include_failures:
                continue
        yield row


def resolved_ids(report: Path) -> set[str]:
    """Resolved instance ids from a SWE-bench evaluation report (`resolved_ids`, as the harness
    writes) or a plain JSON list of ids."""
    data = json.loads(Path(report).read_text())
    if isinstance(data, dict):
        data = data.get("resolved_ids", data.get("resolved", []))
    if not isinstance(data, list):
        raise ValueError(f"{report} has no list of resolved instance ids")
    return {str(i) for i in data}
