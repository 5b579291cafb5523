"""Patches as the selector of several attempts reads them.

A patch (a git diff from the base commit) splits into its source change and the tests the
attempt wrote (`split_patch`), and has a normal form (`change_id`) under which the same change
written the same way compares equal: comments, docstrings, blank lines, spacing, parentheses
and quote style do not count in Python files, trailing spaces and blank lines in the others.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tools.host_git import isolated_env

GIT_TIMEOUT_S = 120
_DIFF_HEAD = re.compile(r'^diff --git "?a/(.+?)"? "?b/(.+?)"?$')
TEST_DIRS = {"test", "tests", "testing", "__tests__", "spec"}


@dataclass(frozen=True)
class FileDiff:
    """The part of a patch that changes one file."""

    path: str
    text: str


def file_diffs(patch: str) -> list[FileDiff]:
    """The patch cut at each `diff --git` line, one part per file (named by its new path)."""
    parts: list[FileDiff] = []
    lines: list[str] = []
    path = ""
    for line in patch.splitlines(keepends=True):
        head = _DIFF_HEAD.match(line.rstrip("\n"))
        if head:
            if lines and path:
                parts.append(FileDiff(path, "".join(lines)))
            path, lines = head.group(2), [line]
        elif path:
            lines.append(line)
    if lines and path:
        parts.append(FileDiff(path, "".join(lines)))
    return parts


def is_test_path(path: str) -> bool:
    """A test file by the usual conventions: under a tests/ folder, `test_*.py`, `*_test.py`,
    `conftest.py`, `*.test.js` / `*.spec.ts` and the like."""
    pure = PurePosixPath(path)
    name = pure.name
    if any(part in TEST_DIRS for part in pure.parts[:-1]):
        return True
    stem = name.split(".")[0]
    return (name == "conftest.py" or stem.startswith("test_") or stem.endswith("_test")
            or ".test." in name or ".spec." in name)


@dataclass(frozen=True)
class SplitPatch:
    """A patch as its source change and the tests it adds or changes."""

    source: str
    tests: str
    test_files: tuple[str, ...]


def split_patch(patch: str) -> SplitPatch:
    parts = file_diffs(patch)
    tests = [p for p in parts if is_test_path(p.path)]
    return SplitPatch("".join(p.text for p in parts if not is_test_path(p.path)),
                      "".join(p.text for p in tests), tuple(p.path for p in tests))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                          timeout=GIT_TIMEOUT_S, env=isolated_env())


def base_files(repo: Path, commit: str, paths: list[str], dest: Path) -> None:
    """Write the files among `paths` that exist at `commit` into `dest`."""
    listed = _git(repo, "ls-tree", "-r", "-z", "--name-only", commit, "--", *paths)
    present = [p for p in listed.stdout.decode(errors="replace").split("\0") if p]
    if not present:
        return
    archive = _git(repo, "archive", "--format=tar", commit, "--", *present)
    if archive.returncode != 0:
        raise ValueError(f"git archive of {commit} failed: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryFile() as tar_file:
        tar_file.write(archive.stdout)
        tar_file.seek(0)
        with tarfile.open(fileobj=tar_file) as tar:
            tar.extractall(dest, filter="data")


def patched_files(repo: Path, commit: str, patch: str) -> dict[str, tuple[str | None, str | None]]:
    """Each file `patch` changes -> (its text at `commit`, its text after the patch); None
    where it does not exist. Only those files are read, into a folder of our own; raises
    ValueError when the patch does not apply."""
    paths = [d.path for d in file_diffs(patch)]
    if not paths:
        return {}
    with tempfile.TemporaryDirectory(prefix="apprentice-patch-") as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        before.mkdir()
        base_files(repo, commit, paths, before)
        subprocess.run(["cp", "-a", f"{before}/.", str(after)], check=True, timeout=60)
        # `after` is no repository, so git applies there as `patch` would, reading no config
        applied = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=after,
                                 input=patch.encode(), capture_output=True,
                                 timeout=GIT_TIMEOUT_S,
                                 env={**isolated_env(), "GIT_CEILING_DIRECTORIES": tmp})
        if applied.returncode != 0:
            raise ValueError(f"the patch does not apply: "
                             f"{applied.stderr.decode(errors='replace').strip()}")
        return {path: (_read(before / path), _read(after / path)) for path in paths}


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return None


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                          | ast.AsyncFunctionDef):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]


def normal_form(path: str, text: str) -> str:
    """`text` with what does not change behaviour taken out: for Python (when it parses) the
    code as `ast.unparse` writes it, without comments or docstrings; else its non-blank lines
    without trailing spaces."""
    if path.endswith(".py"):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            pass
        else:
            _drop_docstrings(tree)
            return ast.unparse(tree)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def change_id(repo: Path, commit: str, source_patch: str) -> str | None:
    """A digest of what `source_patch` changes, in normal form (`normal_form` of each file it
    leaves different); None when it changes nothing that counts (an empty patch, comments
    only). Raises ValueError when it does not apply."""
    changed = []
    for path, (before, after) in sorted(patched_files(repo, commit, source_patch).items()):
        old = None if before is None else normal_form(path, before)
        new = None if after is None else normal_form(path, after)
        if old != new:
            changed.append([path, new])
    if not changed:
        return None
    return hashlib.sha256(json.dumps(changed).encode()).hexdigest()[:16]
