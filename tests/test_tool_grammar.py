"""Constrained tool-call decoding for local models (`agent.tool_grammar`): the grammar built from
the tools' schemas accepts exactly the well-formed calls, and a model decoding under it (a tiny
random Llama, which otherwise writes garbage) only ever writes a call of a known tool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.tool_grammar import ToolCallConstraint, tool_call_grammar
from agent.tool_protocol import TOOL_CALL_OPEN, parse_tool_calls
from tests.test_local_model import TOOLS, litellm_local, tiny_model  # noqa: F401  (fixtures)
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
