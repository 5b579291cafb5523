"""Whole-edit decoding (`agent.edit_choice`, `--tool-grammar edits`): an edit's replaced text is
a run the tool accepts, chosen by the model's probability of the whole run, and its replacement
changes it; the reply's token record is that of the final text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.edit_choice import EditChoices, _diverge, _edit_head, _ids, _pick, edit_starts
from agent.local_model import load_local_model
from agent.tool_grammar import PathChoices
from agent.tool_protocol import TOOL_CALL_OPEN, parse_tool_calls
from tests.test_local_model import litellm_local, tiny_model  # noqa: F401  (fixtures)
from tools.base import ToolBox
from tools.control import select_tools
from trajectories.reader import read_trajectory

CORE = [tool.schema() for tool in select_tools("core")]
EDIT_ONLY = [schema for schema in CORE if schema["function"]["name"] == "str_replace"]
MODULE = ('def add(a, b):\n    """Return the sum of a and b."""\n    return a - b\n\n\n'
          'def subtract(a, b):\n    return a - b\n')
LINES = MODULE.splitlines(keepends=True)


def _runs(starts: list[tuple[list[str], int]]) -> list[str]:
    return ["".join(lines[:count]) for lines, shortest in starts
            for count in range(shortest, len(lines) + 1)]


def test_the_runs_offered_are_those_of_shown_lines_that_occur_once() -> None:
    assert edit_starts(MODULE, [LINES[:3]]) == [(LINES[0:3], 1), (LINES[1:3], 1)]
    assert _runs(edit_starts(MODULE, [LINES[:3]])) == [
        "def add(a, b):\n", "".join(LINES[0:2]), "".join(LINES[0:3]), LINES[1],
        "".join(LINES[1:3])]  # never `    return a - b\n` alone: it occurs twice
    assert edit_starts(MODULE, [LINES[2:3]]) == []
    assert edit_starts(MODULE, [LINES[3:7]]) == [(LINES[5:7], 1)]  # blank lines start none
    two = "x = 1\ny = 2\nx = 1\nz = 3\n"
    lines = two.splitlines(keepends=True)
    assert edit_starts(two, [lines]) == [(lines, 2), (lines[1:], 1), (lines[2:], 2),
                                         (lines[3:], 1)]
    long = ["a\n"] * 20
    assert edit_starts("".join(long), [long]) == []  # not unique within MAX_RUN_LINES
    paths = PathChoices.of_files({}, ["calc.py"], ToolBox(select_tools("core")).edit_arguments(),
                                 {"calc.py": (MODULE, {1, 2, 3})}, with_starts=True)
    assert paths.starts == {"calc.py": edit_starts(MODULE, [LINES[:3]])}
    assert PathChoices.from_dict(json.loads(json.dumps(paths.as_dict()))) == paths


def _edit_completion(litellm: Any, model: str, seed: int, edit_choice: bool,
                     temperature: float = 1.0) -> Any:
    box = ToolBox(select_tools("core"))
    paths = PathChoices.of_files(box.path_arguments(), ["calc.py"], box.edit_arguments(),
                                 {"calc.py": (MODULE, {1, 2, 3})}, with_starts=True)
    return litellm.completion(
        model=model, messages=[{"role": "user", "content": "Fix add in calc.py."}],
        tools=EDIT_ONLY, tool_choice="required", max_tokens=120, temperature=temperature,
        seed=seed,
        tool_grammar=paths.as_dict(), edit_choice=edit_choice)


def test_a_random_model_edits_a_run_the_tool_accepts_and_changes_it(
        tiny_model: Path, litellm_local: Any) -> None:  # noqa: F811
    offered = _runs(edit_starts(MODULE, [LINES[:3]]))
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
    assert arguments["old_str"] in _runs(edit_starts(MODULE, [LINES[:3]]))
    assert arguments["new_str"] != arguments["old_str"]


def test_only_an_edit_of_a_file_with_runs_is_re_decided() -> None:
    choices = EditChoices.of_tools(CORE, ToolBox(select_tools("core")).edit_arguments(),
                                   {"calc.py": [(["def add(a, b):\n"], 1)]})
    assert choices.edit_arguments == {"str_replace": ("path", "old_str", "new_str")}
    assert choices.stops() == ['"old_str": "']
    edit = '<tool_call>{"name": "str_replace", "arguments": {"path": "calc.py", "old_str": "'
    assert _edit_head(edit, choices) == (edit, [(["def add(a, b):\n"], 1)], "new_str")
    assert _edit_head(edit + 'x", "new_str": "y"}}</tool_call>', choices) is not None
    assert _edit_head(edit.replace("calc.py", "other.py"), choices) is None  # nothing shown
    assert _edit_head('<tool_call>{"name": "bash", "arguments": {"command": "echo \\"old_str'
                      '\\": \\""}}</tool_call>', choices) is None


@pytest.mark.model
@pytest.mark.usefixtures("model_ready", "docker_ready")
def test_the_demo_is_fixed_under_whole_edit_decoding(tmp_path: Path) -> None:
    """The README's demo with `--tool-grammar edits`: a real episode of the shipped model, whose
    edit replaces a run that occurs once in the module (`return a - b` alone occurs twice)."""
    demo = tmp_path / "demo"
    agent = [sys.executable, "-m", "agent.cli"]
    subprocess.run([*agent, "examples", "init", str(demo), "--force"], check=True,
                   capture_output=True, timeout=120)
    module = (demo / "repo" / "calculator" / "operations.py").read_text()
    proc = subprocess.run(
        [*agent, "solve", str(demo / "issue.md"), "--repo", str(demo / "repo"),
         "--max-steps", "6", "--max-tokens", "256", "--repo-map-tokens", "0",
         "--tool-grammar", "edits", "--json"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reward"] == 1, result["test_output"]
    assert "+    return a + b" in result["patch"]
    edits = [json.loads(event.arguments)
             for event in read_trajectory(Path(result["trajectory_path"])).events
             if event.type == "tool_call_started" and event.name == "str_replace"]
    assert edits and module.count(edits[0]["old_str"]) == 1


def test_a_sampled_start_is_drawn_afresh_unless_seeded() -> None:
    even = [0.0] * 8
    assert len({_pick(even, 1.0, None) for _ in range(40)}) > 1
    assert len({_pick(even, 1.0, 7) for _ in range(10)}) == 1
    assert _pick([0.0, 3.0, 1.0], 0.0, None) == 1  # greedy: the likeliest
