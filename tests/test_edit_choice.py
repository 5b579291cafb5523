"""Whole-edit decoding (`agent.edit_choice`, `--tool-grammar edits`): an edit's replaced text is
a run the tool accepts, chosen by the model's probability of the whole run, and its replacement
changes it; the reply's token record is that of the final text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.edit_choice import _diverge, _ids, unique_runs
from agent.local_model import load_local_model
from agent.tool_grammar import PathChoices
from agent.tool_protocol import TOOL_CALL_OPEN, parse_tool_calls
from tests.test_local_model import litellm_local, tiny_model  # noqa: F401  (fixtures)
from tools.base import ToolBox
from tools.control import select_tools

CORE = [tool.schema() for tool in select_tools("core")]
EDIT_ONLY = [schema for schema in CORE if schema["function"]["name"] == "str_replace"]
MODULE = ('def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n\n\n'
          'def subtract(a, b):\n    return a - b\n')
LINES = MODULE.splitlines(keepends=True)


def test_each_shown_line_offers_the_shortest_run_around_it_that_occurs_once() -> None:
    assert unique_runs(MODULE, [LINES[:3]]) == [
        "def add(a, b):\n", '    """Return the sum of a and b."""\n',
        '    """Return the sum of a and b."""\n    return a - b\n',  # ends at the repeated line
    ]
    assert unique_runs(MODULE, [LINES[2:3]]) == []  # alone, the line occurs twice
    assert unique_runs(MODULE, [LINES[3:7]]) == [  # blank lines offer none
        "def subtract(a, b):\n", "def subtract(a, b):\n    return a - b\n"]
    paths = PathChoices.of_files({}, ["calc.py"], ToolBox(select_tools("core")).edit_arguments(),
                                 {"calc.py": (MODULE, {1, 2, 3})})
    assert paths.unique == {"calc.py": unique_runs(MODULE, [LINES[:3]])}
    assert PathChoices.from_dict(json.loads(json.dumps(paths.as_dict()))) == paths


def _edit_completion(litellm: Any, model: str, seed: int, edit_choice: bool,
                     temperature: float = 1.0) -> Any:
    box = ToolBox(select_tools("core"))
    paths = PathChoices.of_files(box.path_arguments(), ["calc.py"], box.edit_arguments(),
                                 {"calc.py": (MODULE, {1, 2, 3})})
    return litellm.completion(
        model=model, messages=[{"role": "user", "content": "Fix add in calc.py."}],
        tools=EDIT_ONLY, tool_choice="required", max_tokens=120, temperature=temperature,
        seed=seed,
        tool_grammar=paths.as_dict(), edit_choice=edit_choice)


def test_a_random_model_edits_a_run_the_tool_accepts_and_changes_it(
        tiny_model: Path, litellm_local: Any) -> None:  # noqa: F811
    offered = unique_runs(MODULE, [LINES[:3]])
    local = load_local_model(str(tiny_model))
    chosen = []
    for seed in range(3):
        response = _edit_completion(litellm_local, f"local/{tiny_model}", seed, edit_choice=True)
        record = response._hidden_params["local_tokens"]
        text = TOOL_CALL_OPEN + '{"name": "' + local.tokenizer.decode(record["completion_ids"])
        assert len(record["completion_logprobs"]) == len(record["completion_ids"])
        assert all(value <= 0 for value in record["completion_logprobs"])
        (call,) = parse_tool_calls(text)[1]
        assert call["function"]["name"] == "str_replace"
        old = text.split('"old_str": "', 1)[1].split('", "new_str": "', 1)[0]
        assert json.loads(f'"{old}"') in offered
        chosen.append(json.loads(f'"{old}"'))
        try:
            arguments = json.loads(call["function"]["arguments"])
        except json.JSONDecodeError:  # cut by max_tokens inside the replacement
            continue
        assert arguments["new_str"] != arguments["old_str"]
    assert chosen


def test_a_copied_replacement_diverges_where_the_model_doubts_the_copy(
        tiny_model: Path) -> None:  # noqa: F811
    local = load_local_model(str(tiny_model))
    prompt = _ids(local.tokenizer, 'Fix it.<tool_call>{"old_str": "x", "new_str": "')
    copied = "    return a - b\\n"
    forced = _diverge(local, prompt, copied)
    assert forced is not None and not copied.startswith(forced)
    common = next(i for i, (a, b) in enumerate(zip(forced, copied + "\0", strict=False))
                  if a != b)
    assert '"' not in forced[common:] and "\\" not in forced[common:]


@pytest.mark.model
@pytest.mark.usefixtures("model_ready")
def test_the_real_model_edits_the_function_named_and_changes_its_line(
        litellm_local: Any) -> None:  # noqa: F811
    """SmolLM2 plus the shipped adapter, asked to fix `add`, edits a run around `add`'s body
    (alone, `return a - b` occurs twice), and its replacement differs."""
    chosen = _edit_completion(litellm_local, "local/apprentice-135m", 0, edit_choice=True,
                              temperature=0.0)
    call = chosen.choices[0].message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert arguments["old_str"] in unique_runs(MODULE, [LINES[:3]])
    assert arguments["new_str"] != arguments["old_str"]
