"""The built-in curriculum: many small repositories, each with one failing test whose fix needs
the tools (find the file, read it, make a small edit, run the tests, finish).

    generate_curriculum(Path("suites/tool-use"), train=64, test=24, seed=0)

Each task is a tiny Python package (`<domain>/<module>.py` with the buggy function among correct
ones, a second module, and their tests), committed in a git repository and stored as a bundle in
the suite. The `train` and `test` splits are drawn from disjoint domains, so they share no
package, module, noun or function name; the kinds of bug are the same. Every task carries its
gold patch and the tool calls of an oracle that knows the fix (`finetune.oracle`); both are
checked when the task is made: the test fails before the fix and passes after it.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.bug_templates import TEMPLATES, BugCase, NewFunction, new_function
from finetune.name_variants import twin_of, vary
from finetune.suite import SuiteTask, write_suite

TEST_COMMAND = "python3 -m pytest -q"
KINDS = [*TEMPLATES, "missing_file"]

Domain = tuple[list[str], list[str]]
"""(module names, nouns) of a package."""

TRAIN_DOMAINS: dict[str, Domain] = {
    "shop": (["pricing", "basket", "stock"], ["price", "coupon", "order", "item", "receipt"]),
    "school": (["grades", "roster", "lessons"], ["score", "pupil", "lesson", "mark", "exam"]),
    "garden": (["plants", "beds", "seeds"], ["seed", "flower", "tree", "weed", "bulb"]),
    "bank": (["accounts", "ledger", "loans"], ["deposit", "account", "payment", "loan", "cheque"]),
    "music": (["playlist", "tracks", "albums"], ["song", "track", "album", "artist", "chord"]),
    "kitchen": (["recipes", "pantry", "menu"], ["recipe", "egg", "spoon", "meal", "onion"]),
    "travel": (["trips", "tickets", "routes"], ["trip", "ticket", "route", "flight", "hotel"]),
    "sports": (["league", "matches", "teams"], ["goal", "match", "team", "player", "lap"]),
}
TEST_DOMAINS: dict[str, Domain] = {
    "library": (["catalogue", "members", "shelving"], ["novel", "reader", "page", "author"]),
    "weather": (["forecast", "readings", "stations"], ["cloud", "storm", "station", "degree"]),
    "farm": (["herd", "fields", "harvest"], ["cow", "field", "crop", "goat", "barn"]),
    "space": (["orbits", "missions", "probes"], ["planet", "rocket", "probe", "comet", "moon"]),
}
SPLIT_DOMAINS = {"train": TRAIN_DOMAINS, "test": TEST_DOMAINS}
TRAIN_PACKAGES = [
    "inventory", "billing", "payroll", "clinic", "museum", "harbour", "railway", "bakery",
    "census", "fleet", "studio", "theatre", "zoo", "market", "warehouse", "parking", "cinema",
    "festival", "gallery", "pharmacy", "courier", "dairy", "vineyard", "fishery", "atlas",
    "survey", "toolbox", "helpers", "core", "utils", "common", "mathkit", "textkit", "datakit",
    "pyshop", "app", "shop_utils", "bank_core", "my_package", "school_app", "tracker",
    "scheduler", "geometry", "ledgerly", "quickcalc", "numtools", "hotel_app", "lib",
]
"""Package names a train task may get instead of its domain's (`vary_packages`), so the model
learns to copy whatever path grep printed rather than the eight it trained on."""

STATEMENTS = [
    "`{call}` {got} instead of `{expected}`. The test `{test_id}` fails. Fix the code in the "
    "`{package}` package so that the tests pass.",
    "Bug in `{package}.{module}`: `{call}` should return `{expected}` but {got}. Make "
    "`{test_id}` pass.",
    "The test `{test_id}` is failing: `{call}` {got}; it should return `{expected}`. "
    "Please fix it.",
]
ISSUE_STATEMENTS = [
    "# `{function}` returns the wrong result\n\n`{package}.{call}` {got} instead of "
    "`{expected}`. The test `{test_id}` fails. Fix `{function}` so that the tests pass.",
    "# Wrong result from `{function}`\n\n`{call}` {got}, but it should return `{expected}` "
    "(see `{test_id}`). The rest of `{package}` looks fine.",
]
"""Statements written like an issue file, used for varied (train) tasks only."""
CREATE_STATEMENT = ("`tests/{test_file}` fails because `{package}/{module}.py` does not exist. "
                    "Create `{package}/{module}.py` with a function {description}.")


@dataclass
class Blueprint:
    """The files of one task's repository before and after the fix."""

    buggy_files: dict[str, str]
    fixed_files: dict[str, str]
    statement: str
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    oracle: list[dict[str, Any]]


def _module_source(domain: str, functions: list[str]) -> str:
    return f'"""{domain.capitalize()} helpers."""\n\n\n' + "\n\n".join(functions)


def _test_source(package: str, module: str, names: list[str], tests: list[str]) -> str:
    imports = f"from {package}.{module} import {', '.join(sorted(names))}\n\n\n"
    return imports + "\n\n".join(tests)


TWIN_SHARE = 0.5
"""Share of varied tasks whose buggy line also appears, correct, in a neighbour function."""


def _distractors(rng: random.Random, nouns: list[str], exclude: str, count: int,
                 variants: random.Random | None = None) -> list[BugCase]:
    kinds = rng.sample([k for k in TEMPLATES if k != exclude], count)
    cases = []
    for kind in kinds:
        noun = rng.choice(nouns)
        case = TEMPLATES[kind](noun, rng)
        cases.append(vary(case, noun, variants) if variants else case)
    return cases


def _anchored_edit(function_source: str, old: str, new: str) -> tuple[str, str]:
    """The edit widened to start at the function's first line (unique in its module) and end
    at the end of the edited line, for a buggy snippet that recurs elsewhere."""
    end = function_source.index(old) + len(old)
    if not old.endswith("\n"):
        line_end = function_source.find("\n", end)
        end = len(function_source) if line_end < 0 else line_end
    anchored = function_source[:end]
    return anchored, anchored.replace(old, new, 1)


def _behaviour(source: str, call: str) -> str:
    """What `call` does with `source` loaded: 'returns X' or 'raises E'."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # our own generated code
    try:
        return f"returns `{eval(call, namespace)!r}`"
    except Exception as exc:
        return f"raises `{type(exc).__name__}: {exc}`"


def _passes(source: str, test: str, name: str) -> bool:
    namespace: dict[str, Any] = {}
    exec(source + "\n\n" + test, namespace)
    try:
        namespace[name]()
    except Exception:
        return False
    return True


MISTAKES = ("bare_path", "unchanged")
"""Mistakes a recovering oracle makes first (`mistake_share`), each one the model was seen to
make: an edit of the module's file name without its folder (the tool names the real path), and
an edit that changes nothing (`return coutn` for `return coutn`; for a module constant, the
value it should have, because the constant was not in view: the tool quotes the line it holds).
A missing module's oracle instead first greps for the function the tests import."""


def _oracle_fix(path: str, source: str, old: str, new: str, function: str,
                note: str, first_try: tuple[str, str] | None = None,
                mistake: str | None = None) -> list[dict[str, Any]]:
    """grep the function, view the file from its `def` on (the line grep printed, so the
    function comes first; from the edited line when that is above it), replace, test, finish.
    With `first_try`, an edit whose `old_str` is not unique comes first: the tool refuses it
    and the oracle anchors it and tries again. With a `mistake` (see `MISTAKES`), a refused
    edit comes first and the oracle recovers from what the tool said."""
    line = next(n for n, text in enumerate(source.splitlines(), 1)
                if text.startswith(f"def {function}("))
    edited = source[:source.index(old)].count("\n") + 1
    if mistake != "unchanged":
        line = min(line, edited)  # a module constant above the function: show it too
    retry = [] if first_try is None else [{"name": "str_replace", "arguments": {
        "path": path, "old_str": first_try[0], "new_str": first_try[1]}}]
    if mistake == "bare_path":
        retry = [{"name": "str_replace", "arguments": {
            "path": path.rsplit("/", 1)[-1], "old_str": old, "new_str": new}}]
    elif mistake == "unchanged" and line > edited:  # the constant is above what was viewed
        retry = [{"name": "str_replace", "arguments": {"path": path, "old_str": new,
                                                        "new_str": new}}]
    elif mistake == "unchanged":
        retry = [{"name": "str_replace", "arguments": {"path": path, "old_str": old,
                                                        "new_str": old}}]
    return [
        {"name": "grep", "arguments": {"pattern": f"def {function}"}},
        {"name": "view", "arguments": {"path": path, "view_range": [line, -1]}},
        *retry,
        {"name": "str_replace", "arguments": {"path": path, "old_str": old, "new_str": new}},
        {"name": "bash", "arguments": {"command": TEST_COMMAND}},
        {"name": "finish", "arguments": {"summary": note}},
    ]


def fix_blueprint(kind: str, domain: str, modules: list[str], nouns: list[str],
                  rng: random.Random, variants: random.Random | None = None,
                  twin_share: float = TWIN_SHARE, recovery_share: float = 0.0,
                  mistake: str | None = None) -> Blueprint:
    """A repository whose module holds a buggy function of template `kind`. With `variants`,
    names are varied (`finetune.name_variants`), a `twin_share` of the tasks get a twin of the
    buggy line, and a `recovery_share` of those an oracle that first tries the ambiguous edit.
    A `mistake` (`MISTAKES`) makes the oracle recover from it, unless it already recovers."""
    module, other = rng.sample(modules, 2)
    noun = rng.choice(nouns)
    target = TEMPLATES[kind](noun, rng)
    helpers = _distractors(rng, [n for n in nouns if n not in target.function], kind, 3,
                           variants)
    twin = None
    if variants is not None:
        target = vary(target, noun, variants)
        if variants.random() < twin_share:
            twin = twin_of(target, noun, kind)
    neighbours, elsewhere = helpers[:2], helpers[2:]
    order = [target, *neighbours]
    rng.shuffle(order)  # `rng` draws the same numbers with or without variants
    if twin is not None:
        order.insert(variants.randrange(len(order) + 1) if variants else 0, twin)
    path, test_path = f"{domain}/{module}.py", f"tests/test_{module}.py"
    other_path, other_test = f"{domain}/{other}.py", f"tests/test_{other}.py"

    def sources(fixed: bool) -> dict[str, str]:
        bodies = [c.fixed if (fixed or c is not target) else c.buggy for c in order]
        return {
            path: _module_source(domain, bodies),
            other_path: _module_source(domain, [c.fixed for c in elsewhere]),
        }

    buggy, fixed = sources(False), sources(True)
    old, new = target.old, target.new
    first_try = None
    if buggy[path].count(old) != 1:  # the snippet recurs elsewhere: anchor it on the `def`
        if variants is not None and recovery_share and variants.random() < recovery_share:
            first_try = (old, new)
        old, new = _anchored_edit(target.buggy, old, new)
    common = {
        test_path: _test_source(domain, module, [c.function for c in order],
                                [c.test for c in order]),
        other_test: _test_source(domain, other, [c.function for c in elsewhere],
                                 [c.test for c in elsewhere]),
    }
    got = _behaviour(buggy[path], target.call)
    if _passes(buggy[path], target.test, f"test_{target.function}") or not all(
            _passes(fixed[path], c.test, f"test_{c.function}") for c in order):
        raise AssertionError(f"template {kind} made a task whose test does not judge the fix")
    test_id = f"{test_path}::test_{target.function}"
    template = rng.choice(STATEMENTS)  # drawn either way, so `rng` stays in step
    if variants is not None:
        template = variants.choice([template, *ISSUE_STATEMENTS])
    statement = template.format(
        call=target.call, got=got, expected=repr(target.expected), test_id=test_id,
        package=domain, module=module, function=target.function)
    others = [f"{test_path}::test_{c.function}" for c in [*neighbours, *([twin] if twin else [])]]
    others += [f"{other_test}::test_{c.function}" for c in elsewhere]
    mistake = None if first_try else mistake
    return Blueprint({**buggy, **common}, {**fixed, **common}, statement, [test_id],
                     sorted(others), _oracle_fix(path, buggy[path], old, new,
                                                 target.function, target.fix_note, first_try,
                                                 mistake))


def create_blueprint(domain: str, modules: list[str], nouns: list[str],
                     rng: random.Random, search_first: bool = False) -> Blueprint:
    """A repository whose tests import a module that the issue asks to create. With
    `search_first`, the oracle first greps for the function (finding nothing)."""
    module, new_module = rng.sample(modules, 2)
    wanted: NewFunction = new_function(rng.choice(nouns), rng)
    helpers = _distractors(rng, nouns, "", 2)
    path, new_path = f"{domain}/{module}.py", f"{domain}/{new_module}.py"
    test_path, new_test = f"tests/test_{module}.py", f"tests/test_{new_module}.py"
    files = {
        path: _module_source(domain, [c.fixed for c in helpers]),
        test_path: _test_source(domain, module, [c.function for c in helpers],
                                [c.test for c in helpers]),
        new_test: _test_source(domain, new_module, [wanted.function], [wanted.test]),
    }
    new_source = _module_source(domain, [wanted.source])
    if not _passes(new_source, wanted.test, f"test_{wanted.function}"):
        raise AssertionError("missing_file template made a test its own solution fails")
    statement = CREATE_STATEMENT.format(test_file=f"test_{new_module}.py", package=domain,
                                        module=new_module, description=wanted.description)
    search = [{"name": "grep", "arguments": {"pattern": f"def {wanted.function}"}}]
    oracle = [
        *(search if search_first else []),
        {"name": "view", "arguments": {"path": new_test}},
        {"name": "create", "arguments": {"path": new_path, "file_text": new_source}},
        {"name": "bash", "arguments": {"command": TEST_COMMAND}},
        {"name": "finish", "arguments": {"summary": f"Created {new_path} with "
                                                    f"{wanted.function}."}},
    ]
    return Blueprint(files, {**files, new_path: new_source}, statement,
                     [f"{new_test}::test_{wanted.function}"],
                     sorted(f"{test_path}::test_{c.function}" for c in helpers), oracle)


def _base_files(domain: str) -> dict[str, str]:
    return {
        "README.md": f"# {domain}\n\nSmall {domain} helpers. Run the tests with "
                     f"`{TEST_COMMAND}`.\n",
        "pytest.ini": "[pytest]\ntestpaths = tests\npythonpath = .\n",
        ".gitignore": "__pycache__/\n.pytest_cache/\n",
        f"{domain}/__init__.py": f'"""{domain.capitalize()} helpers."""\n',
    }


def _git(repo: Path, *args: str, text_input: str | None = None) -> str:
    env_args = ["-c", "user.name=apprentice", "-c", "user.email=agent@apprentice.invalid",
                "-c", "commit.gpgSign=false"]
    proc = subprocess.run(["git", "-C", str(repo), *env_args, *args], capture_output=True,
                          text=True, check=True, timeout=60, input=text_input)
    return proc.stdout


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def build_repository(blueprint: Blueprint, domain: str, bundle: Path) -> tuple[str, str]:
    """Commit the buggy repository, write it as a git bundle; return (base commit, gold patch)."""
    with tempfile.TemporaryDirectory(prefix="apprentice-curriculum-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        _git(repo, "init", "-q", "-b", "main")
        _write(repo, {**_base_files(domain), **blueprint.buggy_files})
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "Initial commit")
        base = _git(repo, "rev-parse", "HEAD").strip()
        _write(repo, blueprint.fixed_files)
        _git(repo, "add", "-A")
        patch = _git(repo, "diff", "--cached", "HEAD")
        _git(repo, "reset", "-q", "--hard", "HEAD")
        bundle.parent.mkdir(parents=True, exist_ok=True)
        _git(repo, "bundle", "create", str(bundle.resolve()), "--all")
    return base, patch


def generate_curriculum(dest: Path, train: int = 64, test: int = 24, seed: int = 0,
                        force: bool = False, vary_train: bool = True,
                        twin_share: float = TWIN_SHARE, recovery_share: float = 0.0,
                        vary_packages: bool = False, mistake_share: float = 0.0) -> Path:
    """Write a suite of `train` + `test` tasks into `dest` (bundles under `dest/repos`).

    With `vary_train`, train tasks get varied names, issue-like statements and twins of the
    buggy line (`finetune.name_variants`) from a generator of their own, so the test split is
    the same task for task either way (its figures stay comparable across runs). `twin_share`
    and `recovery_share`: see `fix_blueprint`. With `vary_packages`, a train task's package is
    drawn from `TRAIN_PACKAGES` (its modules and nouns stay its domain's), also from a generator
    of its own. A `mistake_share` of the train tasks get an oracle that first makes a mistake
    the model makes and recovers from the tool's answer (`MISTAKES`; always `unchanged` for a
    module constant), drawn by a third generator."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise FileExistsError(f"{dest} is not empty; pass force=True (--force) to replace it")
        shutil.rmtree(dest)
    rng = random.Random(seed)
    tasks: list[SuiteTask] = []
    for split, count in (("train", train), ("test", test)):
        domains = SPLIT_DOMAINS[split]
        variants = random.Random(f"{seed}-variants") if split == "train" and vary_train else None
        packages = (random.Random(f"{seed}-packages") if split == "train" and vary_packages
                    else None)
        mistakes = random.Random(f"{seed}-mistakes") if split == "train" else None
        for index in range(count):
            kind = KINDS[index % len(KINDS)]
            domain = rng.choice(sorted(domains))
            modules, nouns = domains[domain]
            package = packages.choice(TRAIN_PACKAGES) if packages else domain
            mistake = None
            if mistakes is not None and mistakes.random() < mistake_share:
                mistake = "unchanged" if kind == "wrong_constant" else mistakes.choice(MISTAKES)
            if kind == "missing_file":
                blueprint = create_blueprint(package, modules, nouns, rng, mistake is not None)
            else:
                blueprint = fix_blueprint(kind, package, modules, nouns, rng, variants,
                                          twin_share, recovery_share, mistake)
            instance_id = f"{split}-{index:03d}-{package}-{kind.replace('_', '-')}"
            bundle = dest / "repos" / f"{instance_id}.bundle"
            base, patch = build_repository(blueprint, package, bundle)
            tasks.append(SuiteTask.model_validate({
                "instance_id": instance_id, "problem_statement": blueprint.statement,
                "base_commit": base, "repo_path": str(bundle.relative_to(dest)),
                "test_command": TEST_COMMAND, "split": split,
                "FAIL_TO_PASS": blueprint.fail_to_pass, "PASS_TO_PASS": blueprint.pass_to_pass,
                "patch": patch, "oracle": blueprint.oracle, "kind": kind, "domain": domain,
            }))
    meta = {"name": dest.name, "generator": "finetune.curriculum", "seed": seed,
            "splits": {"train": train, "test": test}, "kinds": KINDS, "vary_train": vary_train,
            "vary_packages": vary_packages,
            "twin_share": twin_share, "recovery_share": recovery_share,
            "mistake_share": mistake_share,
            "description": "Small Python repositories with one failing test each; train and "
                           "test use disjoint domains and names."}
    return write_suite(dest, tasks, meta)


def vocabulary(split: str) -> set[str]:
    """Every package, module and noun of a split's domains (for checking disjointness)."""
    words: set[str] = set()
    for domain, (modules, nouns) in SPLIT_DOMAINS[split].items():
        words.update([domain, *modules, *nouns])
    if split == "train":
        words.update(TRAIN_PACKAGES)
    return words
