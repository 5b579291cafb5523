"""The repository side of task synthesis: make a source a git repository, find its source and
test files, say which tests import a module, and export one buggy snapshot per task as a bundle.

A task's bundle holds one root commit, the repository with the bug in it, on `main`: the agent
sees no history, so no diff leads it to the fix.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

BASE_BRANCH = "apprentice-base"
EXCLUDED_DIRS = {"tests", "test", "testing", "docs", "doc", "examples", "example", "benchmark",
                 "benchmarks", "scripts", "tools", "build", "dist", ".github"}
"""Directories whose files are never mutated (their code is not the library's)."""
_IDENTITY = {
    "GIT_AUTHOR_NAME": "apprentice", "GIT_AUTHOR_EMAIL": "agent@apprentice.invalid",
    "GIT_COMMITTER_NAME": "apprentice", "GIT_COMMITTER_EMAIL": "agent@apprentice.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}
"""Fixed identity and dates: the same source gives the same commits."""


class RepositoryError(ValueError):
    """A source cannot be used for synthesis; the message says what to do."""


def git(repo: Path, *args: str, stdin: bytes | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run git in `repo`; raise RepositoryError with git's message if it fails."""
    full_env = {**os.environ, **_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})}
    done = subprocess.run(["git", "-C", str(repo), "-c", "commit.gpgSign=false", *args],
                          input=stdin, capture_output=True, timeout=300, env=full_env)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()
        raise RepositoryError(f"git {args[0]} in {repo} failed: {reason}")
    return done.stdout.decode(errors="replace")


@dataclass
class Repository:
    """A source prepared for synthesis: a git repository at `base` (on BASE_BRANCH)."""

    name: str
    source: Path
    path: Path
    base: str
    files: list[str] = field(default_factory=list)
    """Every tracked file."""

    def read(self, path: str) -> str:
        return git(self.path, "show", f"{self.base}:{path}")


def prepare_repository(source: Path, work: Path) -> Repository:
    """Clone a git repository (its HEAD), or make an unpacked source distribution one."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise RepositoryError(f"{source} is not a directory: give a git repository or an "
                              "unpacked source distribution (tar xzf NAME.tar.gz)")
    dest = Path(work).resolve() / source.name  # git runs with -C: a relative path would nest
    if dest.exists():
        shutil.rmtree(dest)
    if (source / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(source), str(dest)],
                       check=True, capture_output=True, timeout=600)
        git(dest, "checkout", "--quiet", "-B", BASE_BRANCH)
    else:
        shutil.copytree(source, dest, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        git(dest, "init", "--quiet", "-b", BASE_BRANCH)
        git(dest, "add", "-A", "--force")
        git(dest, "commit", "--quiet", "--no-verify", "-m", f"{source.name}: source")
    base = git(dest, "rev-parse", "HEAD").strip()
    files = git(dest, "ls-files", "-z").split("\0")
    return Repository(source.name, source, dest, base, [f for f in files if f])


def is_test_file(path: str) -> bool:
    name = PurePosixPath(path).name
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")
                                     or name == "conftest.py")


def source_files(repo: Repository) -> list[str]:
    """The library's Python files: not tests, docs, examples or set-up scripts."""
    found = []
    for path in repo.files:
        parts = PurePosixPath(path).parts
        if (not path.endswith(".py") or is_test_file(path) or parts[-1] in ("setup.py",
                "conftest.py", "noxfile.py", "fabfile.py")
                or any(p in EXCLUDED_DIRS or p.startswith(".") for p in parts[:-1])):
            continue
        found.append(path)
    return found


def module_name(path: str) -> str:
    """`src/pkg/mod.py` -> `pkg.mod`; `pkg/__init__.py` -> `pkg`."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[0] in ("src", "lib"):
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, path: str) -> set[str]:
    """Dotted names a file imports (`from a import b` gives both `a` and `a.b`)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    package = module_name(path).split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return found


class TestSelector:
    """Which test files import a module, directly; None means "run them all"."""

    def __init__(self, repo: Repository) -> None:
        self.tests = [f for f in repo.files if is_test_file(f) and not f.endswith("conftest.py")]
        self.imports = {f: imported_modules(repo.read(f), f) for f in self.tests}

    def for_module(self, path: str) -> list[str] | None:
        module = module_name(path)
        if not module:
            return None
        direct = [t for t, names in self.imports.items() if module in names]
        return direct or None


def export_task(repo: Repository, path: str, text: str, bundle: Path,
                message: str) -> tuple[str, str]:
    """Commit the repository with `path` replaced by `text` as a root commit, write it as a
    bundle holding only that commit on `main`; return (commit, gold patch)."""
    blob = git(repo.path, "hash-object", "-w", "--stdin", stdin=text.encode()).strip()
    index = repo.path / ".git" / "apprentice-synthesis.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        git(repo.path, "read-tree", repo.base, env=env)
        mode = git(repo.path, "ls-tree", repo.base, "--", path).split()[0]
        git(repo.path, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        tree = git(repo.path, "write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)
    commit = git(repo.path, "commit-tree", tree, "-m", message).strip()
    patch = git(repo.path, "diff", commit, repo.base, "--", path)
    export = repo.path.parent / f"{repo.name}.export.git"
    if not export.exists():
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(export)],
                       check=True, capture_output=True, timeout=60)
        (export / "objects" / "info" / "alternates").write_text(
            str(repo.path / ".git" / "objects") + "\n")
    git(export, "update-ref", "refs/heads/main", commit)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    git(export, "bundle", "create", "--quiet", str(bundle.resolve()), "HEAD", "main")
    return commit, patch
