"""Task synthesis: mutations, pytest reports, statements, splits, and one real run end to end in
the Docker sandbox on a small repository made here (kept, survived, collection, timeout)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from agent.episode import EpisodeConfig
from finetune.evaluate import EvalOptions, evaluate
from finetune.locate_oracles import locate_suite, with_locate_oracles
from finetune.mutations import KINDS, apply_site, find_sites
from finetune.pytest_outcomes import parse_report, split_node_id
from finetune.statements import Failure, excerpt, write_statement
from finetune.suite import SuiteTask, load_suite
from finetune.synthesis import SynthesisError, SynthesisOptions, assign_splits, synthesize
from finetune.synthesis_oracle import oracle_script, unique_edit
from finetune.synthesis_repo import imported_modules, module_name
from trajectories.verify import verify_patch

LIBRARY = '''\
"""A tiny library."""


def add(a, b):
    return a + b


def untested(x):
    return x * 2


def spin(n):
    i = 0
    while i < n:
        i += 1
    return i


def make_default():
    value = 2
    if value != 2:
        raise RuntimeError("bad default")
    return value


DEFAULT = make_default()
'''
TESTS = '''\
from calc.core import DEFAULT, add, spin


def test_add():
    assert add(2, 3) == 5


def test_spin():
    assert spin(3) == 3


def test_default():
    assert DEFAULT == 2
'''


def _repo(root: Path, files: dict[str, str], git: bool = True) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if git:
        run = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*run, "init", "-q"], check=True)
        subprocess.run([*run, "add", "-A"], check=True)
        subprocess.run([*run, "commit", "-qm", "init"], check=True)
    return root


def _calc(tmp_path: Path) -> Path:
    return _repo(tmp_path / "calc-repo", {
        "calc/__init__.py": "", "calc/core.py": LIBRARY, "tests/test_core.py": TESTS,
        "calc/legacy.py": 'def old():\n    print "python 2"\n',
    })


# --- mutations ------------------------------------------------------------------------------

SAMPLE = '''\
def f(items, limit=3, flag=True):
    """Docstring stays."""
    total = 0
    for i in range(len(items)):
        if items[i] < limit and not flag:
            total += items[i] * 2
        seen = max(total, 1)
    out = items[1:limit]
    out.append(seen)
    return sorted(out, key=None) if total == 0 else out.lower()
'''


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_changes_the_function_and_keeps_it_valid(kind: str) -> None:
    sites = find_sites(SAMPLE, "m.py", [kind])
    assert sites, f"{kind} found nothing to change in the sample"
    for site in sites:
        buggy = apply_site(site)
        assert buggy != SAMPLE
        compile(buggy, "m.py", "exec")
        assert '"""Docstring stays."""' in buggy
        assert site.function == "f" and site.kind == kind


def test_mutations_change_exactly_one_thing() -> None:
    flips = {apply_site(s) for s in find_sites("def g(a, b):\n    return a < b\n", "m.py",
                                                ["flip_comparison"])}
    assert flips == {"def g(a, b):\n    return a <= b\n"}
    (one,) = find_sites("def g(x):\n    return x[1:n or 2]\n", "m.py", ["off_by_one"])[:1]
    assert "x[1:(n or 2) - 1]" in apply_site(one)  # parenthesised: precedence kept
    module_level = "X = 1 + 2\nclass C:\n    Y = 3 < 4\n"
    assert find_sites(module_level, "m.py") == []  # only function bodies change


def test_unique_edit_grows_until_unique() -> None:
    before = "a = 1\nx = 0\nb = 2\nx = 0\n"
    after = "a = 1\nx = 0\nb = 2\nx = 1\n"
    edit = unique_edit(before, after)
    assert before.count(edit.old) == 1 and before.replace(edit.old, edit.new) == after


def test_oracle_greps_only_names_it_was_shown_and_views_the_fix() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(40))
    original = f"def far(a):\n{body}    return a + x0\n"
    buggy = original.replace("return a + x0", "return a - x0")
    test = "from m import far\n\n\ndef test_far():\n    assert far(1) == 1\n"
    calls = {named: oracle_script("m.py", buggy, original, "far", "tests/test_m.py::test_far",
                                  test, "pytest -q", "grep_first", named=named)
             for named in (True, False)}
    assert [c["name"] for c in calls[True]][:2] == ["grep", "view"]
    first = calls[False][0]  # not named in the statement: the test (which calls it) comes first
    assert first["name"] == "view" and first["arguments"]["path"] == "tests/test_m.py"
    assert [c["name"] for c in calls[False][1:3]] == ["grep", "view"]
    start, end = calls[True][1]["arguments"]["view_range"]
    assert start == 1 and end >= 42  # the changed line (42) lies past the 30-line window


# --- pytest reports and statements ----------------------------------------------------------

REPORT = """\
=================================== FAILURES ===================================
___________________________________ test_add ___________________________________
tests/test_core.py:5: in test_add
    assert add(2, 3) == 5
E   assert -1 == 5
E    +  where -1 = add(2, 3)
________________________________ TestX.test_y[a - b] ___________________________
calc/core.py:5: in helper
    return a - b
E   TypeError: boom
=========================== short test summary info ============================
PASSED tests/test_core.py::test_spin
FAILED tests/test_core.py::test_add - assert -1 == 5
FAILED tests/test_core.py::TestX::test_y[a - b] - TypeError: boom
ERROR tests/test_other.py - ModuleNotFoundError: No module named 'freezegun'
1 failed, 1 passed in 0.02s
"""


def test_report_gives_node_ids_outcomes_and_sections() -> None:
    report = parse_report(REPORT)
    assert report.outcomes == {"tests/test_core.py::test_spin": "passed",
                               "tests/test_core.py::test_add": "failed",
                               "tests/test_core.py::TestX::test_y[a - b]": "failed"}
    assert report.collection_errors == ["tests/test_other.py"]
    assert "where -1 = add(2, 3)" in report.failure_text("tests/test_core.py::test_add")
    assert "TypeError" in report.failure_text("tests/test_core.py::TestX::test_y[a - b]")
    assert split_node_id("t.py::x[a - b] - msg - more") == ("t.py::x[a - b]", "msg - more")


def test_statement_hides_the_changed_file_and_line() -> None:
    report = parse_report(REPORT)
    node = "tests/test_core.py::TestX::test_y[a - b]"
    trace = excerpt(report.failure_text(node), "calc/core.py", ["return a - b"])
    assert "return a - b" not in trace and "calc/core.py" not in trace
    assert "TypeError: boom" in trace
    first = Failure("tests/test_core.py::test_add", "assert -1 == 5",
                    report.failure_text("tests/test_core.py::test_add"))
    texts = {write_statement([first], "pytest", "calc/core.py", ["return a - b"],
                             random.Random(seed))[0] for seed in range(30)}
    assert len(texts) == 3  # bug report, CI log, "X returns Y, expected Z"
    assert any("`add(2, 3)` returns `-1`, expected `5`" in t for t in texts)
    assert all("a - b" not in t for t in texts)


def test_imports_select_tests_and_modules_have_dotted_names() -> None:
    assert module_name("src/pkg/mod.py") == "pkg.mod"
    assert module_name("pkg/__init__.py") == "pkg"
    found = imported_modules("from pkg import mod\nfrom . import util\nimport os.path\n",
                             "pkg/tests/test_a.py")
    assert {"pkg.mod", "pkg.tests.util", "os.path"} <= found


def test_splits_hold_out_whole_files_and_near_duplicates_stay_together() -> None:
    tasks = [SuiteTask.model_validate({
        "instance_id": f"t{i}", "problem_statement": "x", "base_commit": "abcd",
        "repo_path": "r", "repo_name": f"r{i % 3}", "path": f"f{i % 5}.py",
        "function": "fn", "kind": "swap_operator"}) for i in range(60)]
    for split_by in ("file", "repo"):
        options = SynthesisOptions(repos=[Path(".")], out=Path("o"), split_by=split_by)
        assign_splits(tasks, options)
        by_group: dict[str, set[str]] = {}
        for task in tasks:
            extra = task.model_extra or {}
            group = extra["repo_name"] if split_by == "repo" else \
                f"{extra['repo_name']}:{extra['path']}:{extra['function']}:{extra['kind']}"
            by_group.setdefault(group, set()).add(task.split)
        assert all(len(splits) == 1 for splits in by_group.values())
        assert {t.split for t in tasks} == {"train", "test"}


# --- bad input ------------------------------------------------------------------------------

def test_refuses_existing_output_reserved_source_and_no_tests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "x").mkdir(parents=True)
    lib = _repo(tmp_path / "lib", {"lib/a.py": "def f():\n    return 1\n"})
    with pytest.raises(FileExistsError, match="--force"):
        synthesize(SynthesisOptions(repos=[lib], out=out))
    reserved = tmp_path / "more-itertools-11.2.1"
    reserved.mkdir()
    with pytest.raises(SynthesisError, match="--split test"):
        synthesize(SynthesisOptions(repos=[reserved], out=tmp_path / "o2"))
    with pytest.raises(SynthesisError, match="no tests"):
        synthesize(SynthesisOptions(repos=[lib], out=tmp_path / "o3"))
    other = _repo(tmp_path / "other", {"other/b.py": "def g():\n    return 2\n"})
    with pytest.raises(SynthesisError, match="no repository could be used.*no tests"):
        synthesize(SynthesisOptions(repos=[lib, other], out=tmp_path / "o4"))


@pytest.mark.docker
def test_tests_that_cannot_run_in_the_sandbox_name_the_setup(tmp_path: Path,
                                                            docker_ready: None) -> None:
    lib = _repo(tmp_path / "needs", {
        "lib/__init__.py": "", "lib/a.py": "def f():\n    return 1\n",
        "tests/test_a.py": "import freezegun\nfrom lib.a import f\n\n\ndef test_f():\n"
                           "    assert f() == 1\n"}, git=False)
    with pytest.raises(SynthesisError, match=r"freezegun.*\.apprentice\.toml"):
        synthesize(SynthesisOptions(repos=[lib], out=tmp_path / "out"))


# --- end to end -----------------------------------------------------------------------------

@pytest.mark.docker
def test_synthesis_end_to_end_in_the_sandbox(tmp_path: Path, docker_ready: None) -> None:
    out = tmp_path / "suite"
    report = synthesize(SynthesisOptions(
        repos=[_calc(tmp_path)], out=out, kinds=["swap_operator", "change_constant",
                                                 "remove_statement"],
        timeout=6, workers=2, split="train"), log=lambda _: None)
    (repo,) = report["repos"]
    counts = repo["counts"]
    assert repo["tests_passing"] == 3
    assert counts["unparsable_files"] == 1  # calc/legacy.py (Python 2)
    for reason in ("kept", "survived", "collection", "timeout"):
        assert counts.get(reason, 0) >= 1, (reason, counts)
    assert counts["tried"] == sum(counts.get(r, 0) for r in (
        "kept", "survived", "collection", "timeout", "error", "no_change", "invalid",
        "over_limit", "gold_fails"))
    assert json.loads((out / "synthesis.json").read_text())["tasks"] == repo["kept"]

    suite = load_suite(out)
    assert len(suite.tasks) == repo["kept"] and not suite.problems
    add = next(t for t in suite.tasks if "a - b" in t.patch)
    assert add.FAIL_TO_PASS == ["tests/test_core.py::test_add"]
    assert set(add.PASS_TO_PASS) == {"tests/test_core.py::test_spin",
                                     "tests/test_core.py::test_default"}
    assert "a - b" not in add.problem_statement and "test_add" in add.problem_statement
    kept = {(t.model_extra or {})["function"] for t in suite.tasks}
    assert kept <= {"add", "spin"}  # untested: survived; make_default: breaks collection
    assert not any("-        i -= 1" in t.patch for t in suite.tasks)  # that loop never ends
    assert all(isinstance((t.model_extra or {}).get("fix_in_view"), bool) for t in suite.tasks)
    assert (add.model_extra or {})["fix_in_view"] is True  # `a - b` back to `a + b`

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(out / add.repo_path), str(clone)], check=True)
    assert subprocess.run(["git", "-C", str(clone), "rev-list", "--count", "HEAD"],
                          capture_output=True, text=True).stdout.strip() == "1"  # no history
    args = (clone, add.base_commit)
    lists = (add.test_command, add.FAIL_TO_PASS, add.PASS_TO_PASS)
    assert verify_patch(*args, "", *lists).reward == 0  # FAIL_TO_PASS fails at the base
    assert verify_patch(*args, add.patch, *lists).reward == 1  # the gold patch passes

    evaluation = evaluate(suite, EvalOptions(model="oracle", split="train", workers=2,
                                             output_dir=tmp_path / "eval"))
    assert evaluation.summary["pass@1"] == 1.0, evaluation.episodes
    for key in ("by_kind", "fix_in_view"):  # every episode counted once, and passed
        counts = evaluation.summary[key].values()
        assert sum(c["episodes"] for c in counts) == len(suite.tasks)
        assert all(c["passed"] == c["episodes"] for c in counts)
    assert set(evaluation.summary["by_kind"]) <= {"swap_operator", "change_constant",
                                                  "remove_statement"}

    # Oracles that find the bug with `locate` (in a fresh sandbox per task) still pass.
    runs = locate_suite(suite, workers=2)
    assert {r.instance_id for r in runs} == {t.instance_id for t in suite.tasks}
    assert next(r for r in runs if r.instance_id == add.instance_id).rank == 1
    relocated, changed = with_locate_oracles(suite, runs, tmp_path / "suite-locate")
    assert changed == sum(r.rank is not None for r in runs) >= 1
    moved = load_suite(relocated)
    assert not moved.problems
    first = next(t for t in moved.tasks if t.instance_id == add.instance_id).oracle[0]
    assert first == {"name": "locate", "arguments": {"test": "tests/test_core.py::test_add"}}
    episode = EpisodeConfig(tools="core,locate")
    evaluation = evaluate(moved, EvalOptions(model="oracle", split="train", workers=2,
                                             output_dir=tmp_path / "eval-locate",
                                             episode=episode))
    assert evaluation.summary["pass@1"] == 1.0, evaluation.episodes


@pytest.mark.docker
def test_a_remote_validation_job_leaves_no_temporary_folder(tmp_path: Path, docker_ready: None,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A job for a worker elsewhere (the repository as a bundle, as Ray sends it) clones into a
    temporary root of its own, and removes all of it when the job ends."""
    import tempfile

    from finetune.synthesis_jobs import run_baseline, validation_source
    from finetune.synthesis_repo import prepare_repository
    from tools.sandbox import SandboxConfig

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    repo = prepare_repository(_calc(tmp_path), tmp_path / "work")
    source = validation_source(repo.name, repo.path, repo.base, "python3 -m pytest -q",
                               SandboxConfig(), tmp_path / "scratch", portable=True)
    result = run_baseline(source, 300, output_dir=tmp_path / "out", pool=None,
                          on_open=lambda _: None)
    assert "tests/test_core.py::test_add" in result.baseline.passing
    assert list(temp.iterdir()) == []


def test_a_relative_work_folder_still_exports_tasks(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`agent finetune synthesize SRC --out suite` from the suite's parent: git runs in the
    repository (-C), so a relative work path would point inside itself."""
    from finetune.synthesis_repo import export_task, prepare_repository

    source = _calc(tmp_path)
    monkeypatch.chdir(tmp_path)
    repo = prepare_repository(source, Path("suite") / ".work")
    assert repo.path.is_absolute()
    text = repo.read("calc/core.py").replace("a + b", "a - b", 1)
    commit, patch = export_task(repo, "calc/core.py", text, Path("suite/repos/t.bundle"),
                                "planted")
    assert (tmp_path / "suite" / "repos" / "t.bundle").is_file() and "a - b" in patch
