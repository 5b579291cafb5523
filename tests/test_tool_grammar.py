"""Constrained tool-call decoding for local models (`agent.tool_grammar`): the grammar built from
the tools' schemas accepts exactly the well-formed calls, and a model decoding under it (a tiny
random Llama, which otherwise writes garbage) only ever writes a call of a known tool."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.tool_grammar import (
    MAX_PATH_CHOICES,
    PathChoices,
    TestChoices,
    ToolCallConstraint,
    tool_call_grammar,
)
from agent.tool_protocol import TOOL_CALL_OPEN, parse_tool_calls
from tests.test_local_model import TOOLS, litellm_local, tiny_model  # noqa: F401  (fixtures)
from tools.base import ToolBox
from tools.control import select_tools

CORE = [tool.schema() for tool in select_tools("core")]


def _accepted(tokenizer: Any, grammar: str, text: str) -> bool:
    """Whether the grammar takes every token of `text` and could end there."""
    constraint = ToolCallConstraint(tokenizer, grammar, prompt_length=0)
    ids = tokenizer.encode(text, add_special_tokens=False)
    taken = constraint.matcher.try_consume_tokens(ids)
    return taken == len(ids) and constraint.matcher.is_accepting()


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _call(name: str, arguments: dict[str, Any]) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def test_the_grammar_takes_well_formed_calls_of_known_tools_only(tokenizer: Any) -> None:
    required = tool_call_grammar(CORE, required=True)
    good = [_call("view", {"path": "toolz/itertoolz.py", "view_range": [10, 40]}),
            _call("view", {"path": "README.md"}),
            _call("str_replace", {"path": "a.py", "old_str": 'x = "a\\b"\n', "new_str": "y"}),
            _call("bash", {"command": "python3 -m pytest -q"}),
            _call("finish", {"summary": "done"})]
    for text in good:
        assert _accepted(tokenizer, required, text), text
    bad = ['<tool_call>{"name": "view", "arguments": {"path": "a.py"</tool_call>',  # unclosed
           _call("run_tests", {"command": "pytest"}),  # unknown tool
           _call("str_replace", {"old_str": "a", "new_str": "b"}),  # no path
           _call("view", {"path": "a.py", "view_range": "1-30"}),  # wrong type
           _call("view", {"path": "a.py", "lines": [1, 2]}),  # unknown argument
           "The bug is in add.",  # prose where a call is required
           '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}']  # no closing tag
    for text in bad:
        assert not _accepted(tokenizer, required, text), text
    auto = tool_call_grammar(CORE, required=False)
    assert _accepted(tokenizer, auto, "The bug is in add: it subtracts.")
    assert _accepted(tokenizer, auto, good[0])
    assert not _accepted(tokenizer, auto, _call("run_tests", {"command": "pytest"}))


def _completions(litellm: Any, model: str, grammar: bool) -> list[dict[str, Any]]:
    calls = []
    for seed in range(4):
        response = litellm.completion(
            model=model, messages=[{"role": "user", "content": "List the files."}],
            tools=CORE, tool_choice="required", max_tokens=48, temperature=1.0, seed=seed,
            tool_grammar=grammar)
        _, parsed = parse_tool_calls(TOOL_CALL_OPEN + _reply_text(response))
        calls.extend(parsed)
    return calls


def _reply_text(response: Any) -> str:
    """The reply's text after the forced `<tool_call>`: the rest of the prefix, then the tokens
    generated."""
    from transformers import AutoTokenizer

    record = response._hidden_params["local_tokens"]
    tokenizer = AutoTokenizer.from_pretrained(record["model_path"])
    return '{"name": "' + tokenizer.decode(record["completion_ids"], skip_special_tokens=True)


def test_a_random_model_under_the_grammar_only_calls_known_tools(
        tiny_model: Path, litellm_local: Any) -> None:  # noqa: F811
    names = {schema["function"]["name"] for schema in CORE}
    free = _completions(litellm_local, f"local/{tiny_model}", grammar=False)
    assert not any(call["function"]["name"] in names for call in free)  # garbage without it
    constrained = _completions(litellm_local, f"local/{tiny_model}", grammar=True)
    assert len(constrained) == 4
    for call in constrained:
        assert call["function"]["name"] in names
        arguments = call["function"]["arguments"]
        assert arguments.lstrip().startswith("{")  # a JSON object, cut only by max_tokens


FILES = ["README.md", "toolz/itertoolz.py", "toolz/tests/test_utils.py"]


def test_path_arguments_are_kept_to_the_workspaces_paths(tokenizer: Any) -> None:
    paths = PathChoices.of_files(ToolBox(select_tools("core")).path_arguments(), FILES)
    assert paths.paths == [".", "README.md", "toolz", "toolz/itertoolz.py", "toolz/tests",
                           "toolz/tests/test_utils.py"]
    grammar = tool_call_grammar(CORE, required=True, paths=paths)
    assert _accepted(tokenizer, grammar, _call("view", {"path": "toolz/tests/test_utils.py"}))
    assert _accepted(tokenizer, grammar, _call("view", {"path": "toolz/tests"}))
    assert not _accepted(tokenizer, grammar, _call("view", {"path": "test_utils.py"}))
    assert not _accepted(tokenizer, grammar, _call("str_replace", {
        "path": "toolz/itertools.py", "old_str": "a", "new_str": "b"}))
    assert _accepted(tokenizer, grammar, _call("create", {"path": "toolz/new.py",
                                                          "file_text": "x = 1\n"}))
    assert _accepted(tokenizer, grammar, _call("grep", {"pattern": "def f", "path": "toolz"}))
    assert _accepted(tokenizer, grammar, _call("grep", {"pattern": "def f"}))
    too_many = PathChoices(paths.arguments, [f"f{i}.py" for i in range(MAX_PATH_CHOICES + 1)])
    loose = tool_call_grammar(CORE, required=True, paths=too_many)
    assert _accepted(tokenizer, loose, _call("view", {"path": "test_utils.py"}))


def test_a_random_model_under_the_grammar_names_only_existing_paths(
        tiny_model: Path, litellm_local: Any) -> None:  # noqa: F811
    paths = PathChoices.of_files(ToolBox(select_tools("core")).path_arguments(), FILES)
    view_only = [schema for schema in CORE if schema["function"]["name"] == "view"]
    named = []
    for seed in range(4):
        response = litellm_local.completion(
            model=f"local/{tiny_model}", messages=[{"role": "user", "content": "Show a file."}],
            tools=view_only, tool_choice="required", max_tokens=40, temperature=1.0, seed=seed,
            tool_grammar=paths.as_dict())
        (call,) = parse_tool_calls(TOOL_CALL_OPEN + _reply_text(response))[1]
        found = re.search(r'"path"\s*:\s*"([^"]*)"', call["function"]["arguments"])
        assert found, call
        named.append(found.group(1))
    assert set(named) <= set(paths.paths), named


MODULE = 'def add(a, b):\n    """Return the "sum" of a and b."""\n    return a - b\n\n\n' \
         'def subtract(a, b):\n    return a - b\n'


def test_an_edit_replaces_whole_lines_the_model_was_shown_of_a_file_it_read(
        tokenizer: Any) -> None:
    box = ToolBox(select_tools("core"))
    files = ["calc.py", "tests/test_calc.py"]

    def grammar(read: dict[str, tuple[str, set[int]]]) -> str:
        return tool_call_grammar(CORE, required=True, paths=PathChoices.of_files(
            box.path_arguments(), files, box.edit_arguments(), read))

    def edit(path: str, old: str) -> str:
        return _call("str_replace", {"path": path, "old_str": old, "new_str": "    return a + b\n"})

    nothing_read = grammar({})
    assert not _accepted(tokenizer, nothing_read, edit("calc.py", "    return a - b\n"))
    assert _accepted(tokenizer, nothing_read, _call("view", {"path": "calc.py"}))
    shown = grammar({"calc.py": (MODULE, {1, 2, 3})})  # `add` only
    assert _accepted(tokenizer, shown, edit("calc.py", "    return a - b\n"))
    assert _accepted(tokenizer, shown, edit("calc.py", 'def add(a, b):\n    """Return the "sum" '
                                                       'of a and b."""\n    return a - b\n'))
    assert _accepted(tokenizer, shown, edit("calc.py", "    return a - b"))  # no last break
    assert not _accepted(tokenizer, shown, edit("calc.py", "return a - b"))  # part of a line
    assert not _accepted(tokenizer, shown, _call("str_replace", {  # new_str left out
        "path": "calc.py", "old_str": "    return a - b\n"}))
    assert not _accepted(tokenizer, shown, edit("calc.py", "def subtract(a, b):\n"))  # not shown
    assert not _accepted(tokenizer, shown, edit("calc.py", "    return a * b\n"))  # never there
    assert not _accepted(tokenizer, shown, edit("tests/test_calc.py", "    return a - b\n"))
    assert _accepted(tokenizer, shown, _call("create", {"path": "notes.md", "file_text": "x"}))
    assert PathChoices.of_files({}, files, box.edit_arguments(),
                                {"calc.py": (MODULE, {1, 2, 6, 7})}).edits == {
        "calc.py": [MODULE.splitlines(keepends=True)[:2], MODULE.splitlines(keepends=True)[5:7]]}


def test_every_tool_of_the_full_set_compiles_refs_included(tokenizer: Any) -> None:
    full = [tool.schema() for tool in select_tools("full")]
    assert any("$defs" in schema["function"]["parameters"] for schema in full)  # plan's items
    box = ToolBox(select_tools("full"))
    paths = PathChoices.of_files(box.path_arguments(), FILES, box.edit_arguments(),
                                 {"toolz/itertoolz.py": ("def f():\n    return 1\n", {1, 2})})
    for grammar in (tool_call_grammar(full, required=True),
                    tool_call_grammar(full, required=False, paths=paths)):
        ToolCallConstraint(tokenizer, grammar, prompt_length=0)  # raises if it does not compile
    plan = next(s for s in full if "$defs" in s["function"]["parameters"])["function"]["name"]
    todo = {"items": [{"content": "fix add", "status": "pending"}]}
    assert _accepted(tokenizer, tool_call_grammar(full, required=True), _call(plan, todo))


def test_a_grammar_that_does_not_compile_is_logged_and_the_reply_decoded_freely(
        tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    from agent.local_model import generate, load_local_model

    local = load_local_model(str(tiny_model))
    prompt = local.tokenizer.encode("List the files.", add_special_tokens=False)
    with caplog.at_level("WARNING"):
        reply = generate(local, prompt, max_tokens=4, temperature=0,
                         grammar="start: %json {not a schema")
    assert reply.completion_ids and "tool-call grammar not used" in caplog.text


def test_a_test_argument_names_only_a_test_the_conversation_shows(tokenizer: Any) -> None:
    tools = [tool.schema() for tool in select_tools("core,locate")]
    messages = [
        {"role": "system", "content": "locate: a failing test's id, e.g. 'tests/test_x.py::t'"},
        {"role": "user", "content": "CI is red: FAILED toolz/tests/test_utils.py::test_raises "
                                    "and `tests/test_number.py::test_metric[[0]-0.00]` fail."}]
    tests = TestChoices.of_messages(ToolBox(select_tools("core,locate")).test_arguments(),
                                    messages)
    assert tests is not None and tests.ids == ["toolz/tests/test_utils.py::test_raises",
                                               "tests/test_number.py::test_metric[[0]-0.00]"]
    grammar = tool_call_grammar(tools, required=True, tests=tests)
    assert _accepted(tokenizer, grammar, _call("locate", {"test": tests.ids[0]}))
    assert _accepted(tokenizer, grammar, _call("locate", {"test": tests.ids[1]}))
    for made_up in ("tests/test_utils.py::test_raises",  # the folder dropped
                    "tests/test_x.py::t",  # the system prompt's example
                    "toolz/tests/test_utils.py::test_raise"):
        assert not _accepted(tokenizer, grammar, _call("locate", {"test": made_up})), made_up
    assert _accepted(tokenizer, grammar, _call("bash", {"command": "ls"}))  # others stay free
    assert TestChoices.of_messages({"locate": ("test",)}, messages[:1]) is None  # no id shown
    named = TestChoices.of_messages({"locate": ("test",)}, [
        {"role": "user", "content": "`test_tlz` in `toolz/tests/test_tlz.py` fails, and so "
                                    "does `TestDict::test_get` in `tests/test_d.py`."}])
    assert named is not None and named.ids == ["toolz/tests/test_tlz.py::test_tlz",
                                               "tests/test_d.py::TestDict::test_get"]
    free = tool_call_grammar(tools, required=True)
    assert _accepted(tokenizer, free, _call("locate", {"test": "tests/test_x.py::t"}))
