"""Whether a synthesized fix can be read off the buggy function and the statement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from finetune.evaluate import EpisodeOutcome, summarize_kinds
from finetune.fix_in_view import enclosing_function, fix_in_view, mark_suite, unseen_tokens
from finetune.suite import SuiteError, SuiteTask

MODULE = '''\
import itertools


def assoc(d, key, value):
    d2 = dict(d)
    d2[key] = value
    return d2


def cons(el, seq):
    """Add el to the beginning of a sequence."""
    return itertools.chain([el], seq)


def keyfilter(predicate, d):
    rv = {}
    for k, v in d.items():
        if predicate(k):
            rv[k] = v
    return rv
'''


def _with(old: str, new: str) -> str:
    assert MODULE.count(old) == 1
    return MODULE.replace(old, new)


def test_a_fix_made_of_what_the_function_shows_is_in_view() -> None:
    removed = _with("    return d2\n", "    pass\n")
    assert fix_in_view(removed, MODULE, "assoc returned None")
    inverted = _with("if predicate(k)", "if not predicate(k)")
    assert fix_in_view(inverted, MODULE, "keyfilter kept the wrong keys")
    flipped = _with("return d2", "return d2 if False else None")  # keywords are always known
    assert fix_in_view(MODULE, flipped, "")


def test_a_fix_that_writes_what_nothing_shows_is_not() -> None:
    removed = _with("    return itertools.chain([el], seq)\n", "    pass\n")
    # `itertools` is imported at the top of the file, outside the function shown
    assert unseen_tokens(removed, MODULE, "cons returned None") == ["itertools", "chain"]
    assert not fix_in_view(removed, MODULE, "cons returned None")
    # ...unless the statement shows them
    assert fix_in_view(removed, MODULE, "expected itertools.chain to be returned")


def test_the_function_is_the_innermost_holding_the_line() -> None:
    source = "def outer():\n    x = 1\n\n    def inner():\n        return x\n    return inner\n"
    assert enclosing_function(source, 5) == "def inner():\n        return x"
    assert enclosing_function(source, 2).startswith("def outer():")
    assert enclosing_function("x = 1\n", 1) == "x = 1\n"  # outside any function
    assert enclosing_function("def f(:\n", 1) == "def f(:\n"  # does not parse


def test_mark_suite_reads_the_bundle_and_the_gold_patch(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    broken = _with("    return itertools.chain([el], seq)\n", "    pass\n")
    (repo / "m.py").write_text(broken)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (repo / "m.py").write_text(MODULE)
    patch = subprocess.run([*git, "diff"], capture_output=True, text=True, check=True).stdout
    suite = tmp_path / "suite"
    (suite / "repos").mkdir(parents=True)
    subprocess.run([*git, "bundle", "create", "-q", str(suite / "repos" / "t.bundle"), "HEAD"],
                   check=True)
    task = {"instance_id": "t", "problem_statement": "cons returned None", "base_commit": base,
            "repo_path": "repos/t.bundle", "patch": patch, "path": "m.py"}
    marked = {**task, "instance_id": "u", "fix_in_view": True}  # already marked: kept as is
    (suite / "tasks.jsonl").write_text(json.dumps(task) + "\n" + json.dumps(marked) + "\n")

    assert mark_suite(suite) == (1, 2)
    rows = [json.loads(line) for line in (suite / "tasks.jsonl").read_text().splitlines()]
    assert [row["fix_in_view"] for row in rows] == [False, True]
    assert mark_suite(suite) == (1, 2)  # a second run changes nothing

    task["instance_id"], task["patch"] = "v", patch.replace("-    pass", "-    skip")
    (suite / "tasks.jsonl").write_text(json.dumps(task) + "\n")
    before = (suite / "tasks.jsonl").read_text()
    with pytest.raises(SuiteError, match="task v: its gold patch does not apply"):
        mark_suite(suite)
    assert (suite / "tasks.jsonl").read_text() == before  # nothing lost


def test_eval_summary_counts_kinds_and_fixes_in_view() -> None:
    def task(name: str, **extra: object) -> SuiteTask:
        return SuiteTask.model_validate({"instance_id": name, "problem_statement": "s",
                                         "base_commit": "abcd", "repo_path": "r", **extra})

    tasks = [task("a", kind="remove_return", fix_in_view=True),
             task("b", kind="remove_return", fix_in_view=False),
             task("c", kind="invert_condition", fix_in_view=True), task("d")]
    episodes = [EpisodeOutcome("a", 0, reward=1), EpisodeOutcome("a", 1, reward=0),
                EpisodeOutcome("b", 0, reward=0), EpisodeOutcome("c", 0, reward=None),
                EpisodeOutcome("d", 0, reward=1), EpisodeOutcome("c", 1, broken=True)]
    summary = summarize_kinds(tasks, episodes)
    assert summary == {
        "by_kind": {"invert_condition": {"passed": 0, "episodes": 1},
                    "remove_return": {"passed": 1, "episodes": 3}},
        "fix_in_view": {"in_view": {"passed": 1, "episodes": 3},
                        "not_in_view": {"passed": 0, "episodes": 1}},
    }
    assert summarize_kinds([task("d")], [EpisodeOutcome("d", 0, reward=1)]) == {}
