"""Constrained decoding of tool calls for local models: a call is generated under a grammar made
from the tools' JSON schemas, so it is always a well-formed call of a known tool.

Small models write malformed calls: the shipped 135M model's calls on a real library were
27-40 % unparsable JSON, unknown tools or missing arguments, each a lost step. With the grammar
(llguidance, the engine behind llama.cpp's and vLLM's structured outputs), the reply to a request
with tools is either one `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` whose name is a
tool's and whose arguments match that tool's schema (required keys present, types right, no
unknown keys, keys in the schema's order), or, when the model may answer in prose
(`tool_choice` auto), text that does not start a call. With `tool_choice: required` only the call
is allowed. Given the workspace's paths (`PathChoices`), an argument that names an existing file
or directory (`Tool.path_arguments`: view's, str_replace's, insert's, grep's `path`) can only be
one of them, as monitor-guided decoding keeps identifiers to those in scope: the 135M model
otherwise views `test_utils.py` for `toolz/tests/test_utils.py` or `weather/reads.py` for
`weather/readings.py` and loses the step. An edit (`Tool.edit_arguments`: str_replace's `path`
and `old_str`) goes to a file the model has read in this session, and replaces a run of the whole
lines it was shown, as they are now (Claude Code's editor likewise refuses to edit a file not read
first; the tool still refuses a run that occurs twice, with a hint); the model otherwise edits
the test file after reading the module, or an `old_str` it never saw. The lines are a chain of
rules, one per line, so the grammar grows with the lines shown. What the model writes in the
other strings (`new_str`, a command) stays its own.

The mask applies to sampling only: the logprobs recorded for training stay those of the raw
distribution, and the text is rendered and parsed by `agent.tool_protocol` as before, so the
same tokens are seen in training and at inference.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from agent.edit_choice import edit_starts
from agent.tool_protocol import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from tools.base import ToolBox
from tools.search import workspace_files
from tools.workspace_fs import WorkspaceFS

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""Calls are laid out as `json.dumps` writes them, which is how `agent.tool_protocol` renders
them for training: the same tokens, and no room for a weak model to loop on whitespace."""
MAX_PATH_CHOICES = 5_000
"""Past this many workspace paths, path arguments are left free (the grammar stays small)."""
MAX_EDIT_LINES = 600
"""Past this many lines shown in all, edits are left free (the grammar's parser has a limit)."""

MAX_TEST_CHOICES = 200
PYTEST_ID = re.compile(r"(?<![\w./-])([\w./-]+\.py(?:::[A-Za-z_]\w*)+"
                       r"(?:\[(?:[^\[\]\n`'\"]|\[[^\[\]\n]*\])*\])?)")
"""A pytest node id as issues, logs and tracebacks write it: `path.py::Class::test[param]`."""
NAMED_TEST = re.compile(r"`([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*(?:\[[^`\n]*\])?)` in "
                        r"`([\w./-]+\.py)`")
"""A test named apart from its file, as bug reports write it: "`test_x` in `tests/test_a.py`"."""

_tokenizers: dict[int, Any] = {}
_tokenizers_lock = threading.Lock()


@dataclass
class PathChoices:
    """What a session's calls may name: the workspace's paths (for the tools' path arguments)
    and, per file the model has viewed, the lines it was shown (for the editing tools)."""

    arguments: dict[str, tuple[str, ...]]
    """Tool name -> its arguments naming an existing path."""
    paths: list[str]
    """Files and directories, relative to the workspace root (`.` for the root)."""
    edit_arguments: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Editing tool -> its (file, replaced text) arguments; such a tool may only edit `edits`."""
    edits: dict[str, list[list[str]]] = field(default_factory=dict)
    """File the model has read -> runs of consecutive lines it was shown (newlines kept), as
    the file is now."""
    starts: dict[str, list[tuple[list[str], int]]] = field(default_factory=dict)
    """File the model has read -> where the runs of shown lines that occur once in it start
    (`agent.edit_choice.edit_starts`): the edits the tool accepts."""

    @classmethod
    def of_workspace(cls, root: Path, toolbox: ToolBox, shown: dict[str, set[int]],
                     with_starts: bool = False) -> PathChoices | None:
        """From the workspace at `root` as it is now (None past `MAX_PATH_CHOICES` files) and the
        lines of files the model was shown. Files are listed without reading the workspace's
        git configuration and read through `WorkspaceFS`, so a link the sandbox plants in place
        of a file shown is not followed: that file has nothing to edit."""
        files = workspace_files(root)
        if len(files) > MAX_PATH_CHOICES:
            return None
        fs = WorkspaceFS(root)
        read = {}
        for name, lines in sorted(shown.items()):
            try:
                read[name] = (fs.read_text(name), lines)
            except (OSError, UnicodeDecodeError):  # gone, a link, or not text
                continue
        return cls.of_files(toolbox.path_arguments(), files, toolbox.edit_arguments(), read,
                            with_starts)

    @classmethod
    def of_files(cls, arguments: dict[str, tuple[str, ...]], files: list[str],
                 edit_arguments: dict[str, tuple[str, str]] | None = None,
                 read: dict[str, tuple[str, set[int]]] | None = None,
                 with_starts: bool = False) -> PathChoices:
        """From the workspace's files (those, every folder holding them, and `.`) and, per file
        the model has read, its text and the numbers of the lines it was shown; `with_starts`
        also finds where accepted edits start (only whole-edit decoding uses them)."""
        folders = {str(parent) for name in files for parent in PurePosixPath(name).parents}
        edits = {name: shown_runs(text, lines) for name, (text, lines) in (read or {}).items()}
        starts = {name: edit_starts(read[name][0], runs)
                  for name, runs in edits.items() if runs} if read and with_starts else {}
        return cls(arguments, sorted(folders | set(files) | {"."}), edit_arguments or {},
                   {name: runs for name, runs in edits.items() if runs},
                   {name: found for name, found in starts.items() if found})

    def as_dict(self) -> dict[str, Any]:
        return {"arguments": {name: list(args) for name, args in self.arguments.items()},
                "paths": self.paths,
                "edit_arguments": {name: list(a) for name, a in self.edit_arguments.items()},
                "edits": self.edits, "starts": self.starts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PathChoices:
        return cls({name: tuple(args) for name, args in data.get("arguments", {}).items()},
                   list(data.get("paths", [])),
                   {name: (args[0], args[1])
                    for name, args in data.get("edit_arguments", {}).items()},
                   {name: [list(run) for run in runs]
                    for name, runs in data.get("edits", {}).items()},
                   {name: [(list(lines), int(shortest)) for lines, shortest in found]
                    for name, found in data.get("starts", {}).items()})


@dataclass
class TestChoices:
    """The tests a call may name: per tool its test arguments, and the pytest ids shown."""

    __test__ = False  # a name pytest would otherwise try to collect where tests import it
    arguments: dict[str, tuple[str, ...]]
    ids: list[str]

    @classmethod
    def of_messages(cls, arguments: dict[str, tuple[str, ...]],
                    messages: list[dict[str, Any]]) -> TestChoices | None:
        """The ids in the task and the tool results (not the system prompt, whose tool
        descriptions hold examples), written out or as a name in a file; None when there is
        no test argument or no id."""
        if not arguments:
            return None
        ids: dict[str, None] = {}
        for message in messages:
            content = message.get("content")
            if message.get("role") == "system" or not isinstance(content, str):
                continue
            for match in PYTEST_ID.finditer(content):
                ids.setdefault(match.group(1), None)
            for match in NAMED_TEST.finditer(content):
                ids.setdefault(f"{match.group(2)}::{match.group(1)}", None)
        return cls(arguments, list(ids)[-MAX_TEST_CHOICES:]) if ids else None


def shown_runs(text: str, shown: set[int]) -> list[list[str]]:
    """The runs of consecutive lines of `text` whose numbers (1-based) are in `shown`."""
    runs: list[list[str]] = []
    previous = -1
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if number not in shown:
            continue
        if number != previous + 1 or not runs:
            runs.append([])
        runs[-1].append(line)
        previous = number
    return runs


def _only_values(schema: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """A string argument's schema narrowed to `values` (`null` stays allowed where it was)."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [_only_values(item, values) for item in schema["anyOf"]]}
    if schema.get("type") == "string":
        kept = {key: value for key, value in schema.items()
                if key not in ("type", "minLength", "maxLength")}
        return kept | {"enum": values}
    return schema


def _constrains_edits(paths: PathChoices | None) -> bool:
    return paths is not None and bool(paths.edit_arguments) and \
        sum(len(run) for runs in paths.edits.values() for run in runs) <= MAX_EDIT_LINES


def _literal(text: str) -> str:
    """A Lark string literal matching `text` exactly."""
    return json.dumps(text, ensure_ascii=False)


QUOTE = _literal('"')
"""The Lark literal of one double quote."""


def _value(schema: dict[str, Any], definitions: dict[str, Any] | None = None) -> str:
    """A JSON value matching `schema` (whose `$ref`s point into `definitions`, the tool's
    `$defs`), laid out as `json.dumps` writes it."""
    full = {**schema, **({"$defs": definitions} if definitions else {}),
            "x-guidance": JSON_LAYOUT}
    return f"%json {json.dumps(full, ensure_ascii=False)}"


def _in_string(text: str) -> str:
    """The Lark literal of `text` as written inside a JSON string."""
    return _literal(json.dumps(text, ensure_ascii=False)[1:-1])


def _line_runs(prefix: str, runs: list[list[str]]) -> list[str]:
    """Rules of a run of whole lines as written inside a JSON string: `{prefix}` starts at any
    line; the rule of a line is its text, then optionally its line break and, after that,
    optionally the rule of the next line (so the run may end with or without a break)."""
    rules, starts = [], []
    for r, run in enumerate(runs):
        for i, line in enumerate(run):
            text = line.rstrip("\r\n")
            ending = line[len(text):]
            follow = f" {prefix}_{r}_{i + 1}?" if i + 1 < len(run) else ""
            tail = f" ({_in_string(ending)}{follow})?" if ending else ""
            rules.append(f"{prefix}_{r}_{i}: {_in_string(text)}{tail}")
            starts.append(f"{prefix}_{r}_{i}")
    return [f"{prefix}: " + " | ".join(starts), *rules]


def _call_rule(rule: str, name: str, properties: dict[str, Any], required: list[str],
               values: dict[str, str], definitions: dict[str, Any] | None = None) -> str | None:
    """`{"name": ..., "arguments": {...}}` with the arguments in schema order (optional ones may
    be left out, unless `values` overrides some: an edit spells out every argument, so that
    leaving out `new_str` cannot delete the lines by accident); `values` overrides an argument's
    value. None when the first argument is optional (the caller falls back to the tool's whole
    schema)."""
    if values:
        required = list(properties)
    names = list(properties)
    if names and names[0] not in required:
        return None
    parts = [_literal(f'{{"name": {json.dumps(name)}, "arguments": {{')]
    for position, argument in enumerate(names):
        key = _literal(("" if position == 0 else ", ") + f"{json.dumps(argument)}: ")
        value = values.get(argument) or _value(properties[argument], definitions)
        parts.append(f"{key} {value}" if argument in required else f"({key} {value})?")
    parts.append(_literal("}}"))
    return f"{rule}: " + " ".join(parts)


def call_rules(tools: list[dict[str, Any]], paths: PathChoices | None,
               tests: TestChoices | None = None) -> tuple[list[str], list[str]]:
    """(rule names, rules): one rule per call shape allowed. Path arguments are kept to `paths`
    (when not too many); an editing tool, when edits are constrained, gets one rule per file
    read, whose replaced text is a run of the lines shown, and none before a file is read."""
    narrow = paths is not None and 0 < len(paths.paths) <= MAX_PATH_CHOICES
    edits = _constrains_edits(paths)
    names: list[str] = []
    rules: list[str] = []
    for index, tool in enumerate(tools):
        function = tool.get("function", tool)
        name = function["name"]
        parameters = function.get("parameters") or {}
        properties = dict(parameters.get("properties") or {})
        required = list(parameters.get("required") or [])
        if narrow and paths is not None:
            for argument in paths.arguments.get(name, ()):
                if argument in properties:
                    properties[argument] = _only_values(properties[argument], paths.paths)
        if tests is not None:
            for argument in tests.arguments.get(name, ()):
                if argument in properties:
                    properties[argument] = _only_values(properties[argument], tests.ids)
        shapes: list[dict[str, str]] = [{}]
        if edits and paths is not None and name in paths.edit_arguments:
            file_argument, text_argument = paths.edit_arguments[name]
            shapes = []
            for number, (file, runs) in enumerate(sorted(paths.edits.items())):
                lines = f"t{index}_f{number}"
                rules += _line_runs(lines, runs)
                shapes.append({file_argument: _literal(json.dumps(file, ensure_ascii=False)),
                               text_argument: f"{QUOTE} {lines} {QUOTE}"})
        definitions = parameters.get("$defs")
        for number, values in enumerate(shapes):
            rule = f"t{index}_c{number}"
            built = _call_rule(rule, name, properties, required, values, definitions)
            if built is None:  # not expressible argument by argument: the tool's whole schema
                arguments = {key: value for key, value in parameters.items() if key != "$defs"}
                built = f"{rule}: " + _value({
                    "type": "object", "required": ["name", "arguments"],
                    "properties": {"name": {"const": name}, "arguments": arguments},
                    "additionalProperties": False}, definitions)
            rules.append(built)
            names.append(rule)
    return names, rules


def tool_call_grammar(tools: list[dict[str, Any]], required: bool,
                      paths: PathChoices | None = None, tests: TestChoices | None = None) -> str:
    """The grammar (llguidance's Lark syntax) of a reply: one call, or (unless `required`) prose
    that does not begin with `<`. Each call shape is spelled out with literal text between the
    argument values (each a JSON schema), so no two shapes share a lexeme that could be cut two
    ways."""
    names, rules = call_rules(tools, paths, tests)
    if not names:  # only editing tools, and no file read yet: leave the edits free
        names, rules = call_rules(tools, None, tests)
    lines = [f"call: {_literal(TOOL_CALL_OPEN)} body {_literal(TOOL_CALL_CLOSE)}",
             "body: " + " | ".join(names), *rules]
    if required:
        return "\n".join(["start: call", *lines]) + "\n"
    return "\n".join(["start: call | PROSE", "PROSE: /[^<\\s][^\\x00]*/", *lines]) + "\n"


def _ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a transformers tokenizer (built once per tokenizer)."""
    import llguidance.hf

    with _tokenizers_lock:
        key = id(tokenizer)
        if key not in _tokenizers:
            _tokenizers[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
        return _tokenizers[key][1]


class ToolCallConstraint:
    """A transformers logits processor that masks every token the grammar does not allow next.

    `prompt_length` tokens of `input_ids` are the prompt; `prefix_ids` (the end of the prompt,
    text already placed at the start of the reply) are fed to the grammar first."""

    def __init__(self, tokenizer: Any, grammar: str, prompt_length: int,
                 prefix_ids: list[int] | None = None):
        import llguidance

        self.matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer),
                                            llguidance.grammar_from("lark", grammar))
        if self.matcher.is_error():
            raise ValueError(f"tool-call grammar rejected: {self.matcher.get_error()}")
        if prefix_ids and self.matcher.try_consume_tokens(prefix_ids) != len(prefix_ids):
            raise ValueError("the reply's prefix does not start a tool call")
        self.prompt_length = prompt_length
        self.consumed = 0
        self.bitmask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        generated = input_ids[0, self.prompt_length:].tolist()
        fresh = generated[self.consumed:]
        if fresh:
            self.matcher.consume_tokens(fresh)
            self.consumed = len(generated)
        if self.matcher.is_error():  # cannot happen under the mask; leave the scores alone
            return scores
        if self.bitmask is None:  # sized by the logits (a model may pad its vocabulary)
            self.bitmask = llguidance.torch.allocate_token_bitmask(1, scores.shape[-1])
        llguidance.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        llguidance.torch.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        return scores

