"""The file, search and control tools on a real workspace, including the ways they refuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.models import default_tool_set
from agent.prompts import system_prompt
from tools.base import ToolBox, ToolContext
from tools.control import default_tools, select_tools


@pytest.fixture
def box() -> ToolBox:
    return ToolBox(default_tools())


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    ws = tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    (ws / "pkg" / "mod.py").write_text("def f(x):\n    return x + 1\n\n\ndef g():\n    return 2\n")
    (ws / "notes.txt").write_text("alpha\nbeta\nalpha beta\n")
    (ws / "ignored.log").write_text("alpha\n")
    (ws / ".gitignore").write_text("*.log\n")
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    return ToolContext(workspace=ws)


def call(box: ToolBox, ctx: ToolContext, name: str, **args):
    return box.call(name, json.dumps(args), ctx)


def test_schemas_have_the_contract_names(box: ToolBox) -> None:
    names = [s["function"]["name"] for s in box.schemas()]
    assert names == ["bash", "view", "create", "str_replace", "insert", "undo_edit", "grep",
                     "glob", "locate", "repo_map", "todo", "task", "finish"]
    view = next(s for s in box.schemas() if s["function"]["name"] == "view")
    assert view["function"]["parameters"]["required"] == ["path"]
    assert view["function"]["description"]


def test_tool_sets_pick_and_order_tools() -> None:
    names = [t.name for t in select_tools("core")]
    assert names == ["bash", "view", "create", "str_replace", "grep", "finish"]
    assert [t.name for t in select_tools("full")] == [t.name for t in default_tools()]
    assert [t.name for t in select_tools("view, bash")] == ["bash", "view", "finish"]
    assert [t.name for t in select_tools("core,glob")][-3:] == ["grep", "glob", "finish"]
    with pytest.raises(ValueError, match="unknown tool set or tool rm_rf.*core"):
        select_tools("bash,rm_rf")
    assert default_tool_set("local/smollm2-135m") == "core"
    assert default_tool_set("local/smollm2-135m+/runs/sft") == "core"
    assert default_tool_set("openai/gpt-4o") == default_tool_set("local/elsewhere") == "full"


def test_the_system_prompt_names_only_the_tools_given(tmp_path: Path) -> None:
    core = [t.name for t in select_tools("core")]
    prompt = system_prompt(tmp_path, "repo", "pytest", "a.py:\n  1: def f", tools=core)
    assert "(grep, view)" in prompt and "(str_replace, create)" in prompt
    assert "glob" not in prompt and "insert" not in prompt and "repo_map tool" not in prompt
    full = system_prompt(tmp_path, "repo", "pytest", "a.py:\n  1: def f")
    assert "(glob, grep, view)" in full and "repo_map tool" in full
    reader = system_prompt(tmp_path, "repo", "pytest", tools=["view", "grep", "finish"])
    assert "cannot edit" in reader and "Run the tests" not in reader  # a read-only subagent


def test_view_numbers_lines_and_ranges(box, ctx) -> None:
    obs = call(box, ctx, "view", path="pkg/mod.py", view_range=[2, 2])
    assert obs.output == "     2\t    return x + 1"
    assert "mod.py" in call(box, ctx, "view", path="/workspace/pkg").output
    tail = call(box, ctx, "view", path="pkg/mod.py", view_range=[5, 99])  # past the end
    assert not tail.is_error
    assert tail.output == "     5\tdef g():\n     6\t    return 2\n[pkg/mod.py ends at line 6]"
    for wrong in ([7, 99], [0, 3], [4, 2]):
        bad = call(box, ctx, "view", path="pkg/mod.py", view_range=wrong)
        assert bad.is_error and "invalid" in bad.output and "has 6 lines" in bad.output


def test_str_replace_requires_a_unique_match(box, ctx) -> None:
    missing = call(box, ctx, "str_replace", path="pkg/mod.py", old_str="nope", new_str="x")
    assert missing.is_error and "not found" in missing.output and "closest" not in missing.output
    twice = call(box, ctx, "str_replace", path="notes.txt", old_str="alpha", new_str="x")
    assert twice.output == ("Error: old_str occurs 2 times in notes.txt: line 1 `alpha`, line 3 "
                            "`alpha beta`; include more surrounding lines to make it unique.")
    before = (ctx.workspace / "pkg/mod.py").read_text()
    same = call(box, ctx, "str_replace", path="pkg/mod.py", old_str="x + 1", new_str="x + 1")
    assert same.is_error and "nothing would change" in same.output
    assert (ctx.workspace / "pkg/mod.py").read_text() == before
    remembered = call(box, ctx, "str_replace", path="pkg/mod.py", old_str="    return x + 5",
                      new_str="    return x + 5")  # written from memory, unchanged: not there
    assert remembered.output == ("Error: old_str was not found in pkg/mod.py. The closest line "
                                 "is 2: `return x + 1`. View the file and copy the text "
                                 "exactly, including indentation.")
    ok = call(box, ctx, "str_replace", path="pkg/mod.py", old_str="x + 1", new_str="x + 2")
    assert not ok.is_error and "x + 2" in ok.output
    assert "x + 2" in (ctx.workspace / "pkg/mod.py").read_text()


def test_a_path_without_its_folder_is_refused_with_the_real_one_named(box, ctx) -> None:
    bare = call(box, ctx, "str_replace", path="mod.py", old_str="x + 1", new_str="x + 2")
    assert bare.is_error and bare.output == "Error: mod.py does not exist. Did you mean pkg/mod.py?"
    assert "x + 1" in (ctx.workspace / "pkg/mod.py").read_text()
    viewed = call(box, ctx, "view", path="/workspace/mod.py")
    assert viewed.is_error and "Did you mean pkg/mod.py?" in viewed.output
    nowhere = call(box, ctx, "view", path="other.py")
    assert nowhere.is_error and nowhere.output == "Error: other.py does not exist."
    partial = call(box, ctx, "view", path="od.py")  # a suffix, but not at a folder boundary
    assert partial.is_error and "Did you mean" not in partial.output
    misspelt = call(box, ctx, "str_replace", path="pkg/mdo.py", old_str="x", new_str="y")
    assert misspelt.output == "Error: pkg/mdo.py does not exist. Did you mean pkg/mod.py?"


def test_edits_that_break_syntax_are_refused(box, ctx) -> None:
    obs = call(box, ctx, "str_replace", path="pkg/mod.py", old_str="return 2", new_str="return (")
    assert obs.is_error and "would no longer parse" in obs.output
    assert "return 2" in (ctx.workspace / "pkg/mod.py").read_text()


def test_insert_create_and_undo(box, ctx) -> None:
    call(box, ctx, "insert", path="pkg/mod.py", insert_line=0, new_str="import os")
    assert (ctx.workspace / "pkg/mod.py").read_text().startswith("import os\n")
    call(box, ctx, "undo_edit", path="pkg/mod.py")
    assert (ctx.workspace / "pkg/mod.py").read_text().startswith("def f")
    call(box, ctx, "create", path="new/file.py", file_text="X = 1\n")
    assert (ctx.workspace / "new/file.py").read_text() == "X = 1\n"
    call(box, ctx, "undo_edit", path="new/file.py")
    assert not (ctx.workspace / "new/file.py").exists()
    assert call(box, ctx, "undo_edit", path="new/file.py").is_error


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.txt", "pkg/../../x", ".git/config"])
def test_paths_outside_the_workspace_are_refused(box, ctx, path: str) -> None:
    obs = call(box, ctx, "create", path=path, file_text="owned")
    assert obs.is_error
    assert not (ctx.workspace.parent / "outside.txt").exists()
    assert not (ctx.workspace.parent / "x").exists()


def test_symlink_escape_is_refused(box, ctx, tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (ctx.workspace / "link").symlink_to(tmp_path / "secret")
    obs = call(box, ctx, "create", path="link/pwned.txt", file_text="x")
    assert obs.is_error and "outside the workspace" in obs.output
    assert not (tmp_path / "secret" / "pwned.txt").exists()


def test_grep_and_glob_skip_gitignored_files(box, ctx) -> None:
    found = call(box, ctx, "grep", pattern="alpha").output.splitlines()
    assert found == ["notes.txt:1:alpha", "notes.txt:3:alpha beta"]
    assert "mod.py:2" in call(box, ctx, "grep", pattern=r"x \+ 1", include="*.py").output
    assert call(box, ctx, "grep", pattern="(").is_error
    assert call(box, ctx, "glob", pattern="**/*.py").output == "pkg/mod.py"
    assert "ignored.log" not in call(box, ctx, "glob", pattern="*").output


def test_bad_calls_become_error_observations(box, ctx) -> None:
    unknown = box.call("rm_rf", "{}", ctx)
    assert unknown.is_error and "unknown tool" in unknown.output and "bash" in unknown.output
    malformed = box.call("view", '{"path": "pkg/mod.py"', ctx)
    assert malformed.is_error and "not valid JSON" in malformed.output
    missing = box.call("str_replace", json.dumps({"path": "pkg/mod.py"}), ctx)
    assert missing.is_error and "old_str" in missing.output and "required" in missing.output
    wrong_type = box.call("todo", json.dumps({"items": "do things"}), ctx)
    assert wrong_type.is_error


def test_todo_and_finish(box, ctx) -> None:
    obs = call(box, ctx, "todo", items=[{"content": "read", "status": "completed"},
                                        {"content": "fix"}])
    assert "[x] read" in obs.output and "[ ] fix" in obs.output
    assert ctx.todo[1]["status"] == "pending"
    done = call(box, ctx, "finish", summary="fixed it")
    assert done.finished and done.data["summary"] == "fixed it"


def test_a_test_file_pytest_did_not_find_gets_a_hint_naming_files_called_like_it(tmp_path):
    from tools.control import missing_test_hint

    (tmp_path / "toolz" / "tests").mkdir(parents=True)
    (tmp_path / "toolz" / "tests" / "test_utils.py").write_text("def test_raises():\n    pass\n")
    (tmp_path / "test_here.py").write_text("def test_a():\n    pass\n")
    dropped = "ERROR: file or directory not found: tests/test_utils.py::test_raises\n"
    assert missing_test_hint(dropped, tmp_path) == (
        "\n[hint: the workspace has no tests/test_utils.py; files named test_utils.py: "
        "toolz/tests/test_utils.py]")
    absolute = "ERROR: not found: /workspace/tests/test_utils.py::test_raises\n"
    assert "toolz/tests/test_utils.py" in missing_test_hint(absolute, tmp_path)
    # A file that exists (the test name was wrong), no such file anywhere, or a path out: nothing.
    for output in ("ERROR: not found: /workspace/test_here.py::test_b\n",
                   "ERROR: file or directory not found: tests/test_nothing.py\n",
                   "ERROR: file or directory not found: ../../etc/test_utils.py\n",
                   "1 passed\n"):
        assert missing_test_hint(output, tmp_path) == "", output


def test_a_test_pytest_did_not_find_gets_a_hint_naming_its_full_node_ids(tmp_path):
    """The 135M model ran `pytest test_reduce` and `pytest toolz/itertoolz.py::test_topk`
    on toolz: the hint names where the test is defined, as pytest wants it."""
    from tools.control import missing_test_hint

    tests = tmp_path / "toolz" / "tests"
    tests.mkdir(parents=True)
    (tests / "test_curried.py").write_text(
        "def test_reduce():\n    pass\n\n\nclass TestCurry:\n    def test_topk(self):\n"
        "        pass\n")
    # A test at the margin after a class is not that class's method.
    (tests / "test_itertoolz.py").write_text(
        "class TestOther:\n    def test_x(self):\n        pass\n\n\ndef test_topk():\n    pass\n")
    (tmp_path / "toolz" / "itertoolz.py").write_text("def topk():\n    pass\n")
    bare = "ERROR: file or directory not found: test_reduce\n"
    assert missing_test_hint(bare, tmp_path) == (
        "\n[hint: pytest found no test_reduce; tests named test_reduce: "
        "toolz/tests/test_curried.py::test_reduce]")
    wrong_file = "ERROR: not found: /workspace/toolz/itertoolz.py::test_topk\n"
    assert missing_test_hint(wrong_file, tmp_path) == (
        "\n[hint: pytest found no toolz/itertoolz.py::test_topk; tests named test_topk: "
        "toolz/tests/test_curried.py::TestCurry::test_topk, "
        "toolz/tests/test_itertoolz.py::test_topk]")
    # No test of that name, or a name pytest would not collect: nothing.
    for output in ("ERROR: file or directory not found: test_nowhere\n",
                   "ERROR: file or directory not found: topk\n"):
        assert missing_test_hint(output, tmp_path) == "", output
