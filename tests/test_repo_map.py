"""The repository map: tags in eight languages, ranking and boosts, the token budget, the
on-disk cache and incremental refreshes, the tool and `agent map`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.prompts import system_prompt
from tools.base import ToolBox, ToolContext
from tools.control import default_tools
from tools.repo_map import RepoMap, estimate_tokens, render_repo_map, source_files
from tools.repo_map_languages import extract_tags

SAMPLES = {
    "python": ("class Engine(Base):\n    def start(self) -> Power:\n        return ignite(1)\n",
               {"Engine", "start"}, {"Base", "Power", "ignite"}),
    "javascript": ("class Engine extends Base {\n  start() { return ignite(new Power()); }\n}\n"
                   "const stop = () => halt();\n", {"Engine", "start", "stop"},
                   {"Base", "ignite", "Power", "halt"}),
    "typescript": ("interface Options { speed: Speed }\nexport class Engine extends Base {\n"
                   "  start(o: Options): Power { return ignite(o) }\n}\ntype Id = Key<Name>;\n",
                   {"Options", "Engine", "start", "Id"}, {"Speed", "Base", "Power", "ignite",
                                                          "Key", "Name"}),
    "tsx": ("export function Panel(props: Props) { return <div>{render(props)}</div> }\n",
            {"Panel"}, {"Props", "render"}),
    "go": ("package car\ntype Engine struct{ p Power }\nfunc (e *Engine) Start() int {\n"
           "  return ignite(1)\n}\nfunc New() *Engine { return build() }\n",
           {"Engine", "Start", "New"}, {"Power", "ignite", "build"}),
    "rust": ("pub struct Engine { p: Power }\npub trait Drive { fn go(&self); }\n"
             "impl Drive for Engine { fn go(&self) { ignite(); fuel::pump(); } }\n",
             {"Engine", "Drive", "go"}, {"Power", "ignite", "pump"}),
    "java": ("class Engine extends Base implements Drive {\n  Power start() { return ignite(); }\n"
             "}\n", {"Engine", "start"}, {"Base", "Drive", "Power", "ignite"}),
    "c": ("#include \"power.h\"\nstruct engine { int rpm; };\ntypedef struct engine engine_t;\n"
          "int start(engine_t *e) { return ignite(e->rpm); }\n",
          {"engine", "engine_t", "start"}, {"ignite"}),
    "cpp": ("namespace car {\nclass Engine : public Base {\n  void start();\n};\n}\n"
            "void car::Engine::start() { ignite(); power.up(); }\n",
            {"car", "Engine", "start"}, {"Base", "ignite", "up"}),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_definitions_and_references_in_each_language(language: str) -> None:
    source, defs, refs = SAMPLES[language]
    tags = extract_tags(language, source.encode())
    assert {d[0] for d in tags.defs} >= defs
    assert {name.lstrip(".") for name in tags.refs} >= refs
    assert not {name.lstrip(".") for name in tags.refs} & {d[0] for d in tags.defs}
    line, text = next((d[1], d[3]) for d in tags.defs if d[0] == sorted(defs)[0])
    assert sorted(defs)[0] in text and source.splitlines()[line - 1].strip() == text


def test_nesting_is_recorded() -> None:
    source = b"class A:\n    def m(self):\n        pass\n\ndef f():\n    pass\n"
    tags = extract_tags("python", source)
    assert [(d[0], d[2]) for d in tags.defs] == [("A", -1), ("m", 0), ("f", -1)]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


USERS = {f"user_{i}.py": f"from core import Engine\n\ndef job_{i}():\n    return Engine().run()\n"
         for i in range(6)}
TREE = {
    "core.py": "class Engine:\n    def run(self):\n        return 1\n",
    "rare.py": "def rare_helper():\n    return 2\n",
    "feature.py": "from rare import rare_helper\n\ndef feature():\n    return rare_helper()\n",
    "web/app.ts": "import { Engine } from './engine';\nexport function serve(): Engine {"
                  " return boot(); }\n",
    "notes.txt": "class NotCode:\n",
    **USERS,
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "tree", TREE)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "tags.db"


def test_files_are_ranked_by_how_much_others_refer_to_them(tree, cache) -> None:
    repo = RepoMap(tree, cache_path=cache)
    repo.refresh()
    text = repo.render(1024)
    assert text.splitlines()[0] == "core.py:" and "class Engine:" in text.splitlines()[1]
    assert "notes.txt" not in text and "web/app.ts:" in text
    small = repo.render(12)
    assert "class Engine" in small and "rare_helper" not in small


def test_focus_files_and_mentioned_names_are_boosted(tree, cache) -> None:
    repo = RepoMap(tree, cache_path=cache)
    repo.refresh()
    assert "rare_helper" not in repo.render(12)
    assert "rare_helper" in repo.render(12, focus=["feature.py"])
    assert "rare_helper" in repo.render(12, focus=[str(tree / "feature.py")])
    assert "rare_helper" in repo.render(12, mentioned="Why does rare_helper return 2?")


def test_the_map_fits_the_budget(tmp_path, cache) -> None:
    files = {f"pkg/mod_{i}.py": "".join(
        f"def function_{i}_{n}(argument_{n}, other=None):\n    return helper_{n % 5}()\n\n"
        for n in range(30)) for i in range(20)}
    files["pkg/helpers.py"] = "".join(f"def helper_{n}():\n    return {n}\n" for n in range(5))
    repo = RepoMap(write_tree(tmp_path / "big", files), cache_path=cache)
    repo.refresh()
    sizes = []
    for budget in (64, 256, 1024, 4096):
        text = repo.render(budget)
        assert 0 < estimate_tokens(text) <= budget
        sizes.append(len(text))
    assert sizes == sorted(sizes) and sizes[-1] > 5 * sizes[0]
    assert repo.render(64).startswith("pkg/helpers.py:")
    assert repo.render(0) == ""


def test_cache_and_incremental_refresh(tree, cache, tmp_path) -> None:
    repo = RepoMap(tree, cache_path=cache)
    first = repo.refresh()
    assert first.files == len(TREE) - 1 and first.parsed == first.files
    again = repo.refresh()
    assert (again.parsed, again.read) == (0, 0)
    (tree / "rare.py").write_text("def rare_helper():\n    return 2\n\ndef brand_new():\n"
                                  "    return 3\n")
    changed = repo.refresh()
    assert (changed.parsed, changed.read) == (1, 1)
    assert "brand_new" in repo.render(4096)
    (tree / "user_5.py").unlink()
    write_tree(tree, {"extra.go": "package x\nfunc Extra() {}\n"})
    assert repo.refresh().parsed == 1
    text = repo.render(4096)
    assert "user_5.py" not in text and "func Extra()" in text
    repo.close()
    # A new process: nothing is parsed, nothing even read (size and mtime match).
    reopened = RepoMap(tree, cache_path=cache)
    stats = reopened.refresh()
    assert (stats.parsed, stats.read) == (0, 0) and reopened.render(4096) == text
    # A copy elsewhere (another worktree): read, but no content is parsed twice.
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    stats = RepoMap(copy, cache_path=cache).refresh()
    assert stats.read == stats.files and stats.parsed == 0


def test_git_repositories_list_what_git_does(tree) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    (tree / ".gitignore").write_text("build/\n")
    write_tree(tree, {"build/generated.py": "def generated():\n    pass\n"})
    assert "build/generated.py" not in source_files(tree)
    assert "core.py" in source_files(tree) and "notes.txt" not in source_files(tree)


def test_the_tool_and_the_system_prompt(tree) -> None:
    box = ToolBox(default_tools())
    ctx = ToolContext(workspace=tree, edit_history={"feature.py": []})
    observation = box.call("repo_map", json.dumps({"max_tokens": 64}), ctx)
    assert not observation.is_error and "rare_helper" in observation.output
    assert observation.data["tokens"] <= 64
    assert box.call("repo_map", json.dumps({"max_tokens": 1}), ctx).is_error
    empty = tree.parent / "empty"
    empty.mkdir()
    assert "no source files" in box.call("repo_map", "{}", ToolContext(workspace=empty)).output
    text = render_repo_map(tree, 200)
    prompt = system_prompt(tree, "tree", "pytest", text)
    assert "A map of the repository" in prompt and text in prompt
    assert render_repo_map(tree, 0) == ""
    assert "A map of the repository" not in system_prompt(tree, "tree", "pytest")


def test_agent_map_command(tree) -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "map", str(tree), "--tokens",
                           "256"], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("core.py:") and "files, " in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "agent.cli", "map", str(tree / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "not a directory" in bad.stderr


def test_calling_a_parameter_is_not_a_reference() -> None:
    tags = extract_tags("python", b"def apply(tokenizer, count=len):\n"
                                  b"    return tokenizer(text) + helper(count)\n")
    assert set(tags.refs) == {"helper"}
