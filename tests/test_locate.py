"""The `locate` tool: fault localisation by the tests' line coverage, in a real Docker sandbox."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from finetune.synthesis_oracle import locate_first
from tools.base import ToolBox, ToolContext
from tools.control import select_tools
from tools.locate import Locate
from tools.sandbox import DockerSandbox, SandboxConfig

LIBRARY = '''\
def scale(values, factor):
    return [v * factor for v in values]


def mean(values):
    total = 0
    for v in values:
        total += v
    return total / (len(values) + 1)


def describe(values):
    return {"mean": mean(values), "n": len(values)}
'''

TESTS = '''\
from stats.core import describe, mean, scale


def test_scale():
    assert scale([1, 2], 3) == [3, 6]


def test_describe_counts():
    assert describe([5])["n"] == 1


def test_mean():
    assert mean([2, 4]) == 3


def test_scale_empty():
    assert scale([], 2) == []
'''


def make_repo(root: Path, src_layout: bool = False, addopts: str | None = None) -> Path:
    package = root / ("src/stats" if src_layout else "stats")
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core.py").write_text(LIBRARY)
    (root / "tests").mkdir()
    (root / "tests" / "test_core.py").write_text(TESTS)
    if addopts is not None:
        (root / "pyproject.toml").write_text(f'[tool.pytest.ini_options]\naddopts = "{addopts}"\n')
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    root.chmod(0o777)
    for path in root.rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return root


@pytest.fixture
def sandbox_for(docker_ready):
    started: list[DockerSandbox] = []

    def start(root: Path) -> ToolContext:
        sandbox = DockerSandbox(SandboxConfig(), root)
        sandbox.start()
        started.append(sandbox)
        return ToolContext(workspace=root, sandbox=sandbox)

    yield start
    for sandbox in started:
        sandbox.close()


@pytest.mark.parametrize(("src_layout", "addopts"), [
    (False, None), (True, None),
    (False, "--cov=stats --cov-report=term"),  # a plugin the sandbox lacks: run without them
])
def test_locate_ranks_the_function_the_failing_test_runs_first(tmp_path, sandbox_for,
                                                                     src_layout, addopts):
    root = make_repo(tmp_path / "repo", src_layout, addopts)
    ctx = sandbox_for(root)
    observation = ToolBox([Locate()]).call("locate", {"test": "tests/test_core.py::test_mean"},
                                           ctx)
    assert not observation.is_error, observation.output
    assert "4 tests of tests/test_core.py: 1 failed, 3 passed" in observation.output
    first = observation.data["suspects"][0]
    prefix = "src/" if src_layout else ""
    assert (first["path"], first["def_line"], first["function"]) == \
        (f"{prefix}stats/core.py", 5, "mean")
    assert first["score"] == pytest.approx(2 ** -0.5, abs=1e-4)  # a passing test runs it too
    assert f"{prefix}stats/core.py:5 mean (score 0.71" in observation.output.splitlines()[1]
    assert all("test_core" not in s["path"] for s in observation.data["suspects"])
    # The first suspect's source is shown, to its end, and counts as shown for the edit grammar.
    assert f"{prefix}stats/core.py, lines 5-9:\n     5\tdef mean(values):" in observation.output
    assert observation.output.endswith("     9\t    return total / (len(values) + 1)")
    assert (observation.data["read"], observation.data["lines"]) == (f"{prefix}stats/core.py",
                                                                     [5, 9])


SLOW_TESTS = '''\
from stats.core import mean, scale


def test_many_lines():
    total = 0
    for _ in range(400_000):
        total += len(scale([1], 1))
    assert total == 400_000


def test_mean():
    assert mean([2, 4]) == 3
'''


def test_a_test_that_outlasts_the_deadline_is_left_out_not_waited_for(tmp_path, sandbox_for,
                                                                       monkeypatch):
    # Traced, the first test runs millions of lines (a real suite's slow test, which made
    # `locate` time out on more-itertools); its tracing stops at the deadline and its result
    # is left out, and the failing test, run last, is still traced whole.
    monkeypatch.setattr("tools.locate.TRACE_BUDGET_S", 1.0)
    root = make_repo(tmp_path / "repo")
    (root / "tests" / "test_core.py").write_text(SLOW_TESTS)
    ctx = sandbox_for(root)
    observation = ToolBox([Locate()]).call("locate", {"test": "tests/test_core.py::test_mean"},
                                           ctx)
    assert not observation.is_error, observation.output
    assert observation.output.startswith("Ran 1 tests of tests/test_core.py: 1 failed, 0 passed "
                                         "(stopped early: out of time)")
    assert observation.data["suspects"][0]["function"] == "mean"
    assert observation.data["suspects"][0]["score"] == pytest.approx(1.0)


def test_locate_bad_input_gets_a_clear_error_and_changes_nothing(tmp_path, sandbox_for):
    root = make_repo(tmp_path / "repo")
    ctx = sandbox_for(root)
    box = ToolBox([Locate()])
    before = sorted(p.name for p in root.rglob("*"))
    missing = box.call("locate", {"test": "tests/test_core.py::test_nope"}, ctx)
    assert missing.is_error and "no test tests/test_core.py::test_nope ran" in missing.output
    assert "Its failing tests: tests/test_core.py::test_mean." in missing.output
    not_a_file = box.call("locate", {"test": "../etc/passwd::x"}, ctx)
    assert not_a_file.is_error and "not a test file of the workspace" in not_a_file.output
    by_name = box.call("locate", {"test": "test_mean"}, ctx)  # a test's bare name: its id
    assert not by_name.is_error and by_name.data["suspects"][0]["function"] == "mean"
    folder_dropped = box.call("locate", {"test": "test_core.py::test_mean"}, ctx)
    assert folder_dropped.is_error
    assert "Files named test_core.py: tests/test_core.py." in folder_dropped.output
    passing = box.call("locate", {"test": "tests/test_core.py::test_scale"}, ctx)
    assert not passing.is_error and "passed: nothing to locate" in passing.output
    assert box.call("locate", {}, ctx).is_error
    assert sorted(p.name for p in root.rglob("*")) == before


def test_locate_is_in_the_full_tool_set_and_can_be_added_to_core():
    assert "locate" in [tool.name for tool in select_tools("full")]
    assert [tool.name for tool in select_tools("core,locate")] == \
        ["bash", "view", "create", "str_replace", "grep", "locate", "finish"]
    assert "locate" not in [tool.name for tool in select_tools("core")]


def test_locate_first_oracle_replaces_the_search_and_keeps_the_fix():
    calls = [{"name": "view", "arguments": {"path": "tests/test_core.py", "view_range": [1, 30]}},
             {"name": "grep", "arguments": {"pattern": r"def mean\(", "include": "*.py"}},
             {"name": "view", "arguments": {"path": "stats/core.py", "view_range": [5, 35]}},
             {"name": "str_replace", "arguments": {"path": "stats/core.py", "old_str": "a",
                                                   "new_str": "b"}},
             {"name": "finish", "arguments": {"summary": "done"}}]
    plain = locate_first(calls, "tests/test_core.py::test_mean", "stats/core.py")
    assert [c["name"] for c in plain] == ["locate", "view", "str_replace", "finish"]
    assert plain[0]["arguments"] == {"test": "tests/test_core.py::test_mean"}
    assert plain[1:] == calls[2:]
    ranked_second = locate_first(calls, "tests/test_core.py::test_mean", "stats/core.py",
                                 ("stats/core.py", 13))
    assert ranked_second[1]["arguments"]["view_range"][0] == 13
    shown = locate_first(calls, "tests/test_core.py::test_mean", "stats/core.py", view=False)
    assert [c["name"] for c in shown] == ["locate", "str_replace", "finish"]
    with pytest.raises(ValueError, match="never views"):
        locate_first(calls, "tests/test_core.py::test_mean", "other.py")


def test_an_oracle_skips_the_view_only_when_locate_showed_every_text_it_replaces():
    from finetune.locate_oracles import LocateRun, _shows_fix
    from finetune.suite import SuiteTask

    def task(old: str) -> SuiteTask:
        return SuiteTask(instance_id="t", problem_statement="p", base_commit="abcd",
                         repo_path="r", line=4, oracle=[
                             {"name": "view", "arguments": {"path": "m.py"}},
                             {"name": "str_replace", "arguments": {"path": "m.py",
                                                                   "old_str": old,
                                                                   "new_str": "x"}}])

    source = "def total(a, b):\n    s = a - b\n    return s"
    shown = LocateRun("t", 1, [["m.py", 3, "total"]], shown=[3, 5], source=source)
    assert _shows_fix(shown, task("    s = a - b\n"))
    assert not _shows_fix(shown, task("    s = a - b\n    return s\n    # after\n"))
    second = LocateRun("t", 2, [["m.py", 9, "other"], ["m.py", 3, "total"]], shown=[9, 12],
                       source=source)
    assert not _shows_fix(second, task("    s = a - b\n"))
    # No source shown (locate could not read it): the oracle keeps its view.
    assert not _shows_fix(LocateRun("t", 1, [["m.py", 3, "total"]]), task("    s = a - b\n"))


def test_function_source_covers_decorators_signature_and_body_only(tmp_path):
    from tools.locate import SOURCE_LINES, function_source

    (tmp_path / "m.py").write_text(
        "import functools\n\n\n@functools.cache\ndef f(\n    a,\n) -> int:\n    if a:\n"
        "        return 1\n\n    return 2\n\n\ndef g():\n    pass\n"
        + "def long():\n" + "    x = 1\n" * (SOURCE_LINES + 10))
    assert function_source(tmp_path, "m.py", 4) == (11, [
        "@functools.cache", "def f(", "    a,", ") -> int:", "    if a:", "        return 1", "",
        "    return 2"])
    last, lines = function_source(tmp_path, "m.py", 16)
    assert len(lines) == SOURCE_LINES and last == 16 + SOURCE_LINES - 1
    assert function_source(tmp_path, "m.py", 999) == (999, [])
    assert function_source(tmp_path, "missing.py", 1) == (1, [])


def test_a_probe_report_of_the_wrong_shape_is_no_report():
    from tools.locate import MARKER, parse_probe

    good = {"outcome": "failed", "failed": 1, "passed": 0, "suspects": [
        {"path": "a.py", "def_line": 1, "function": "f", "line": 2, "score": 1.0}]}
    assert parse_probe(f"noise\n{MARKER}{json.dumps(good)}\n") == good
    for bad in ("{}", "[1]", "{not json", json.dumps({**good, "failed": "1"}),
                json.dumps({**good, "suspects": [{"path": 1}]})):
        assert parse_probe(f"{MARKER}{bad}") is None, bad
