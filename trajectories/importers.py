"""Turn other agents' trajectories into SFT rows in our format (`export.sft_row`'s shape).

Two formats, chosen because they hold most of the public agent runs on SWE-bench-style tasks
(the SWE-bench experiments bucket, SWE-Gym and SWE-smith release them) and because both agents
act through a shell and a `str_replace_editor` whose commands map one to one onto our tools:

- mini-swe-agent (`*.traj.json`): `{"info": {...}, "messages": [...], "trajectory_format":
  "mini-swe-agent-1" | "mini-swe-agent-1.1"}`, or early versions' bare list of messages.
  Text mode acts with one action per reply, the observation being the next user message: a
  fenced ```bash or ```mswea_bash_command block, or (its XML configs) `<bash_code>` or
  `<mswea_bash_command>` tags, or the file's own `action_regex`; version 2 can also call a
  native `bash` tool, answered by `tool` messages, ending with a `{"role": "exit"}` message.
  The episode ends by running `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` (v1:
  `MINI_SWE_AGENT_FINAL_OUTPUT`). A format error (a reply with no single action, or a user
  message marked `interrupt_type: FormatError`) is dropped with its feedback turn, so the
  bad reply is never trained on.
- SWE-agent (`*.traj`): `{"history": [...], "trajectory": [...], "info": {...},
  "replay_config": "..."}`. `history` holds the messages (`role`, `content` as text or text
  parts, `message_type`, `thought`, `action`, and with function calling `tool_calls` /
  `tool_call_ids`); demonstrations are marked `is_demo` and dropped. The full `history` is used,
  not the per-step `query` (which history processors may have elided). SWE-agent 0.x's
  windowed editor (`open`, `goto`, `scroll_*`, `edit N:M`, `create`, `find_file`,
  `search_*`) is mapped by `trajectories.swe_agent_commands`.

Conversion, so that imported rows teach the protocol our agent uses:
- a shell command becomes a `bash` call; `str_replace_editor <cmd>` becomes our `view`,
  `create`, `str_replace`, `insert` or `undo_edit` with the same arguments; the submission
  (mini-swe-agent's marker command, SWE-agent's last `submit`) becomes `finish`, and the row
  ends there (earlier `submit`s that only triggered a review are dropped with their reply);
- the repository root the other agent used (`/testbed`, read from the file's own config) is
  rewritten to our `/workspace` everywhere, unless `rewrite_root=False`;
- `tools` are the schemas of our tools that the row's calls use (plus finish), and with a
  `system_prompt` builder (the CLI passes one from `agent.prompts`) the system prompt is ours
  for those tools instead of the source's, which described another protocol.
A trajectory using a command with no counterpart here (the cursor editor, EnIGMA's CTF
tools, ...) is skipped with the reason, rather than teaching the model a tool it lacks.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tools.base import ToolBox
from tools.control import select_tools
from tools.sandbox import WORKSPACE
from trajectories.export import to_training_message
from trajectories.swe_agent_commands import UnmappedCommand, Viewer, text_command, tool_command

FORMATS = ("mini-swe-agent", "swe-agent")
SUFFIXES = (".traj.json", ".traj", ".json")
SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")
ACTION_PATTERNS = (
    re.compile(r"```(?:bash|mswea_bash_command)\s*\n(.*?)\n```", re.DOTALL),
    re.compile(r"<mswea_bash_command>(.*?)</mswea_bash_command>", re.DOTALL),
    re.compile(r"<bash_code>(.*?)</bash_code>", re.DOTALL),
)
"""mini-swe-agent's text action formats: its fenced blocks and its XML configs' tags."""
EDITOR_COMMANDS = {"view", "create", "str_replace", "insert", "undo_edit"}
EDITOR_ARGS = {"path", "view_range", "file_text", "old_str", "new_str", "insert_line"}
IMPORTED_TEST_COMMAND = "the project's tests (find out how they are run)"
"""What our system prompt names as the test command of an imported task (the source's is
unknown)."""
SystemPrompt = Callable[[str, Sequence[str]], str]
"""Builds our system prompt from a repository name and the row's tool names."""


class ImportSkipped(ValueError):
    """A trajectory that cannot become training data; the message says why."""


def tools_used(messages: list[dict[str, Any]]) -> list[str]:
    """Our tools that the calls in `messages` use, with finish, in the session's order."""
    names = {c["function"]["name"] for m in messages for c in m.get("tool_calls") or []}
    return [tool.name for tool in select_tools(",".join(sorted(names)) or "finish")]


def tools_json(names: Sequence[str]) -> str:
    """The schemas of the named tools, as the `tools` column of SFT rows holds them."""
    return json.dumps(ToolBox(select_tools(",".join(names))).schemas())


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
    except (TypeError, json.JSONDecodeError, RecursionError):
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
            "tools": tools_json(tools_used(raw)), "session_id": f"{source}:{name}",
            "task": name, "model": model, "reward": None}


def _mini_patterns(config: dict[str, Any]) -> list[re.Pattern[str]]:
    """The file's own action regex (if it names one), then the formats known here."""
    own = ((config.get("agent") or {}).get("action_regex")
           or (config.get("model") or {}).get("action_regex"))
    try:
        first = [re.compile(own, re.DOTALL)] if own else []
    except re.error:
        first = []
    return [*first, *ACTION_PATTERNS]


def _actions(content: str, patterns: list[re.Pattern[str]]) -> tuple[list[str], str]:
    """The actions of a text-mode reply (by the first format that finds any), and the reply
    without them."""
    for pattern in patterns:
        found = pattern.findall(content)
        if found:
            return [a.strip() for a in found], pattern.sub("", content).strip()
    return [], content


def _is_format_error(message: dict[str, Any]) -> bool:
    return (message.get("extra") or {}).get("interrupt_type") == "FormatError"


def from_mini_swe_agent(data: dict[str, Any] | list[Any], name: str,
                        rewrite_root: bool = True) -> dict[str, Any]:
    """An SFT row from a mini-swe-agent trajectory (text actions or v2 tool calls)."""
    messages = data if isinstance(data, list) else data.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ImportSkipped("it has no `messages` list (not a mini-swe-agent trajectory)")
    config = ((data.get("info") or {}).get("config") or {}) if isinstance(data, dict) else {}
    model = (config.get("model") or {}).get("model_name") or "unknown"
    cwd = (config.get("environment") or {}).get("cwd") or None
    patterns = _mini_patterns(config)
    conversation = Conversation()
    pending: list[str] = []  # call ids awaiting their observation, in order
    bad_reply = acted = False
    for message in messages:
        role = message.get("role")
        if conversation.finished:
            break
        if role == "user" and (bad_reply or _is_format_error(message)):
            bad_reply = False  # the feedback on a malformed reply: neither is trained on
        elif role == "user" and pending:  # text mode: the observation of the last action
            conversation.result(pending.pop(0), _text(message.get("content")))
        elif role in ("system", "user"):
            conversation.add(role, _text(message.get("content")))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id in pending:
                pending.remove(call_id)
            conversation.result(call_id or conversation.new_id(), _text(message.get("content")))
        elif role == "assistant":
            reply = _mini_reply(message, patterns)
            bad_reply = reply is None
            if reply is not None:
                acted = True
                pending = _mini_assistant(conversation, *reply)
        elif role != "exit":
            raise ImportSkipped(f"unsupported message role {role!r}")
    if not acted:
        raise ImportSkipped("no reply holds an action in a format known here (```bash, "
                            "```mswea_bash_command, <bash_code>, <mswea_bash_command> or the "
                            "file's action_regex)")
    return _row(conversation, "mini-swe-agent", name, model,
                cwd if rewrite_root and cwd not in (None, "", "/", WORKSPACE) else None)


def _mini_reply(message: dict[str, Any], patterns: list[re.Pattern[str]]
                ) -> tuple[str, list[tuple[str | None, str]]] | None:
    """(text, [(call id, command)]) of one reply; None for a format error (no single
    action)."""
    content = _text(message.get("content"))
    if message.get("tool_calls"):
        commands: list[tuple[str | None, str]] = []
        for call in message["tool_calls"]:
            function = call.get("function") or {}
            if function.get("name") != "bash":
                raise ImportSkipped(f"unknown mini-swe-agent tool {function.get('name')!r}")
            commands.append((call.get("id"),
                             _arguments(function.get("arguments")).get("command", "")))
        return content, commands
    actions, rest = _actions(content, patterns)
    return (rest, [(None, actions[0])]) if len(actions) == 1 else None


def _mini_assistant(conversation: Conversation, content: str,
                    commands: list[tuple[str | None, str]]) -> list[str]:
    """Add one mini-swe-agent reply; return the ids of the calls awaiting observations."""
    calls = [(call_id or conversation.new_id(), "bash", {"command": command})
             for call_id, command in commands]
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


CURRENT_DIRECTORY = re.compile(r"^\(Current directory: (/[^/\s)]+)\)$", re.M)


def _swe_root(replay: dict[str, Any], items: list[dict[str, Any]]) -> str | None:
    """The repository root: where the prompt says the shell is (0.x), else the replay config's
    repo_name (a replayed file can keep an older run's paths)."""
    for item in items:
        if item.get("role") != "assistant" and (m := CURRENT_DIRECTORY.search(
                _text(item.get("content")).replace("\r\n", "\n"))):
            return m.group(1)
    repo_name = ((replay.get("env") or {}).get("repo") or {}).get("repo_name")
    return f"/{repo_name}" if repo_name else None


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
    name = (replay.get("problem_statement") or {}).get("id") or name
    items = [h for h in history if not h.get("is_demo")]
    last_submit = max((i for i, h in enumerate(items) if h.get("role") == "assistant"
                       and _is_swe_submit(h)), default=None)
    conversation, viewer = Conversation(), Viewer()
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
            following = items[index + 1] if index + 1 < len(items) else {}
            observation = _text(following.get("content")) if following.get("role") in (
                "tool", "user") else ""
            pending = _swe_assistant(conversation, item, index == last_submit, viewer,
                                     observation)
        elif skipping:
            continue
        elif role == "tool" or (role == "user" and pending):
            ids = item.get("tool_call_ids") or []
            call_id = ids[0] if ids and ids[0] in pending else (pending[0] if pending else None)
            if call_id is None:
                raise ImportSkipped("a tool result answers no call")
            pending.remove(call_id)
            conversation.result(call_id, content)
            viewer.observe(content)
        elif role in ("system", "user"):
            conversation.add(role, content)
    root = _swe_root(replay, items) if rewrite_root else None
    return _row(conversation, "swe-agent", name, model, root)


def _is_swe_submit(item: dict[str, Any]) -> bool:
    calls = item.get("tool_calls") or []
    if calls:
        return any((c.get("function") or {}).get("name") == "submit" for c in calls)
    action = (item.get("action") or "").strip()
    return action == "submit" or action.startswith(("submit ", "submit\n"))


def _swe_assistant(conversation: Conversation, item: dict[str, Any], final: bool,
                   viewer: Viewer, observation: str) -> list[str]:
    thought = item.get("thought") or ""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    try:
        if item.get("tool_calls"):
            content = _text(item.get("content")) or thought
            for call in item["tool_calls"]:
                function = call.get("function") or {}
                call_id = call.get("id") or conversation.new_id()
                calls.append((call_id, *_swe_call(function.get("name") or "", _arguments(
                    function.get("arguments")), thought, viewer, observation)))
        else:
            content = thought
            action = (item.get("action") or "").strip()
            if action in ("exit", "exit_cost", "exit_context", "exit_format", "exit_error"):
                return []
            if action:
                calls.append((conversation.new_id(),
                              *_swe_text_action(action, thought, viewer, observation)))
    except UnmappedCommand as exc:
        raise ImportSkipped(str(exc)) from None
    conversation.assistant(content, calls)
    if final and calls and calls[-1][1] == "finish":
        conversation.finish(calls[-1][0], calls[-1][2]["summary"])
        return []
    return [c[0] for c in calls]


def _submit_args(thought: str, value: Any = None) -> dict[str, Any]:
    """finish's arguments for `submit`, and for `submit VALUE` (a CTF flag) the value."""
    args = _finish_args(thought)
    if value:
        args["summary"] = f"{args['summary']}\nSubmitted: {value}"
    return args


def _swe_call(name: str, args: dict[str, Any], thought: str, viewer: Viewer,
              observation: str) -> tuple[str, dict[str, Any]]:
    if name == "bash":
        return "bash", {"command": args.get("command", "")}
    if name == "str_replace_editor":
        return _editor_call(args)
    if name == "submit":
        return "finish", _submit_args(thought, args.get("flag") or args.get("value"))
    return tool_command(name, args, viewer, observation)


def _swe_text_action(action: str, thought: str, viewer: Viewer,
                     observation: str) -> tuple[str, dict[str, Any]]:
    """A thought/action-mode command line as one of our tool calls."""
    try:
        words = shlex.split(action)
    except ValueError:
        words = action.split()
    head = words[0] if words else ""
    if head == "submit":
        return "finish", _submit_args(thought, " ".join(words[1:]))
    if head != "str_replace_editor":
        return text_command(action, viewer, observation) or ("bash", {"command": action})
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


def repo_name(task: str) -> str:
    """A SWE-bench instance id's repository (`owner__repo-123` -> `owner/repo`), else `task`."""
    m = re.fullmatch(r"([\w.-]+?)__([\w.-]+?)-\d+", task)
    return f"{m.group(1)}/{m.group(2)}" if m else task


def use_our_prompt(row: dict[str, Any], system_prompt: SystemPrompt) -> dict[str, Any]:
    """`row` with our system prompt, for its tools, in place of the source's."""
    names = [t["function"]["name"] for t in json.loads(row["tools"])]
    ours = {"role": "system", "content": system_prompt(repo_name(row["task"]), names)}
    messages = row["messages"]
    rest = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return {**row, "messages": [ours, *rest]}


def import_file(path: Path, fmt: str, rewrite_root: bool = True,
                system_prompt: SystemPrompt | None = None) -> dict[str, Any]:
    """One trajectory file as an SFT row; raises ImportSkipped (with the reason) if it can't.
    With `system_prompt`, the row's system prompt is ours (see `use_our_prompt`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportSkipped(f"it is not readable JSON ({exc})") from None
    name = instance_name(Path(path))
    if fmt == "mini-swe-agent" and isinstance(data, list):  # early versions: messages only
        row = from_mini_swe_agent(data, name, rewrite_root=rewrite_root)
    elif not isinstance(data, dict):
        raise ImportSkipped("it is not a JSON object")
    else:
        convert = from_mini_swe_agent if fmt == "mini-swe-agent" else from_swe_agent
        row = convert(data, name, rewrite_root=rewrite_root)
    return use_our_prompt(row, system_prompt) if system_prompt is not None else row


def import_rows(paths: Iterable[Path], fmt: str, problems: list[str],
                resolved: set[str] | None = None, include_failures: bool = False,
                rewrite_root: bool = True, system_prompt: SystemPrompt | None = None,
                ) -> Iterator[dict[str, Any]]:
    """SFT rows from trajectory files (or folders of them). With `resolved` (the instance ids a
    SWE-bench evaluation resolved) rows get a reward, and unresolved ones are dropped unless
    `include_failures`. Skipped files and dropped rows are described in `problems`."""
    for path in trajectory_files(paths):
        try:
            row = import_file(path, fmt, rewrite_root=rewrite_root, system_prompt=system_prompt)
        except ImportSkipped as exc:
            problems.append(f"{path}: skipped: {exc}")
            continue
        if resolved is not None:
            row["reward"] = int(row["task"] in resolved)
            if row["reward"] == 0 and not include_failures:
                problems.append(f"{path}: skipped: {row['task']} is not resolved in the "
                                "report (--include-failures keeps it, with reward 0)")
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
