"""grep and glob over the workspace, skipping .git and what .gitignore ignores.

The listing comes from `tools.host_git.list_files` (git, with nothing of the workspace's own
configuration), and files are read through `tools.workspace_fs`: links out of the workspace,
FIFOs and huge files are skipped. A search stops at a deadline, and each regular expression
match has a time-out, so a catastrophic pattern cannot hang the host.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import time
from pathlib import Path

import regex
from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.host_git import GitFailed, list_files
from tools.paths import is_git_reserved, workspace_relative
from tools.workspace_fs import WorkspaceFS

MAX_MATCHES = 200
MAX_LINE_CHARS = 300
MAX_PATTERN_CHARS = 1_000
MAX_SEARCHED_BYTES = 2_000_000
"""Files larger than this are not searched."""
SEARCH_DEADLINE_S = 20.0
"""Seconds one grep may take in all; each line's match gets what is left of it."""


def workspace_files(workspace: Path) -> list[str]:
    """Files of the workspace, relative, honouring .gitignore (falls back to a walk)."""
    try:
        return list_files(workspace)
    except (GitFailed, OSError):
        return _walk(workspace)


def tests_named(workspace: Path, name: str, files: list[str] | None = None) -> list[str]:
    """pytest node ids (`path::name`, `path::Class::name`) of the test functions called `name`
    in the workspace's test files (`test_*.py`, `*_test.py`; `files` when already listed), read
    without following links."""
    if not name.isidentifier():
        return []
    fs = WorkspaceFS(workspace)
    definition = re.compile(rf"^([ \t]*)(?:async[ \t]+)?def {re.escape(name)}\(", re.MULTILINE)
    found: list[str] = []
    for file in workspace_files(workspace) if files is None else files:
        base = Path(file).name
        if not (base.startswith("test_") or base.endswith("_test.py")) \
                or not base.endswith(".py"):
            continue
        try:
            text = fs.read_text(file, limit=MAX_SEARCHED_BYTES)
        except (ToolError, OSError, UnicodeDecodeError):
            continue
        for match in definition.finditer(text):
            owner = ""
            if match.group(1):  # a method: the class above it at the margin
                classes = re.findall(r"^class (\w+)", text[:match.start()], re.MULTILINE)
                owner = f"{classes[-1]}::" if classes else ""
            found.append(f"{file}::{owner}{name}")
    return found


def _walk(workspace: Path) -> list[str]:
    """Every regular file under `workspace` found without following links, `.git` skipped."""
    found: list[str] = []
    for folder, dirs, files, _ in os.fwalk(workspace):
        rel = os.path.relpath(folder, workspace)
        dirs[:] = [d for d in dirs if not is_git_reserved(d)]
        found += [name if rel == "." else f"{rel}/{name}" for name in files]
    return sorted(found)


class GrepArgs(BaseModel):
    pattern: str = Field(description="Regular expression (Python syntax) to search for.")
    path: str | None = Field(None, description="File or directory to search (default: all).")
    include: str | None = Field(None, description="Only files matching this glob, e.g. '*.py'.")


class Grep(Tool):
    """Search file contents with a regular expression; prints path:line:text for each match."""

    name = "grep"
    read_only = True
    Args = GrepArgs
    path_arguments = ("path",)

    def run(self, args: GrepArgs, ctx: ToolContext) -> Observation:
        if len(args.pattern) > MAX_PATTERN_CHARS:
            raise ToolError(f"the pattern is {len(args.pattern):,} characters; keep it under "
                            f"{MAX_PATTERN_CHARS:,}.")
        try:
            pattern = regex.compile(args.pattern, flags=regex.VERSION0)
        except (regex.error, re.error, ValueError, OverflowError) as exc:
            raise ToolError(f"invalid regular expression {args.pattern!r}: {exc}") from None
        fs = WorkspaceFS(ctx.workspace)
        prefix = ""
        if args.path:
            prefix = workspace_relative(args.path)
            if fs.kind(prefix) in ("missing", "outside"):
                raise ToolError(f"{args.path} does not exist.")
            prefix = "" if prefix == "." else prefix
        deadline = time.monotonic() + SEARCH_DEADLINE_S
        matches: list[str] = []
        total = 0
        stopped = ""
        for name in workspace_files(ctx.workspace):
            if prefix and not (name == prefix or name.startswith(prefix.rstrip("/") + "/")):
                continue
            if args.include and not fnmatch.fnmatch(Path(name).name, args.include) \
                    and not fnmatch.fnmatch(name, args.include):
                continue
            try:
                text = fs.read_text(name, limit=MAX_SEARCHED_BYTES)
            except (UnicodeDecodeError, OSError):
                continue
            try:
                for number, line in enumerate(text.splitlines(), 1):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    if pattern.search(line, timeout=left):
                        total += 1
                        if len(matches) < MAX_MATCHES:
                            matches.append(f"{name}:{number}:{line[:MAX_LINE_CHARS]}")
            except TimeoutError:
                stopped = (f"\n[search stopped after {SEARCH_DEADLINE_S:.0f} s in {name}: "
                           "simplify the pattern or narrow it with path or include]")
                break
        if not matches:
            return Observation(f"No matches for {args.pattern!r}.{stopped}", is_error=bool(stopped))
        more = f"\n[{total - len(matches)} more matches not shown]" if total > len(matches) else ""
        return Observation("\n".join(matches) + more + stopped)


class GlobArgs(BaseModel):
    pattern: str = Field(description="Glob such as '**/*.py' or 'src/*.js'.")


class Glob(Tool):
    """List files whose path matches a glob pattern (** matches any directories)."""

    name = "glob"
    read_only = True
    Args = GlobArgs

    def run(self, args: GlobArgs, ctx: ToolContext) -> Observation:
        if len(args.pattern) > MAX_PATTERN_CHARS:
            raise ToolError(f"the pattern is {len(args.pattern):,} characters; keep it under "
                            f"{MAX_PATTERN_CHARS:,}.")
        pattern = args.pattern.removeprefix("/workspace/").removeprefix("./")
        found = [n for n in workspace_files(ctx.workspace) if _glob_match(n, pattern)]
        if not found:
            return Observation(f"No files match {args.pattern!r}.")
        shown = found[:MAX_MATCHES]
        hidden = len(found) - len(shown)
        more = f"\n[{hidden} more files not shown]" if hidden else ""
        return Observation("\n".join(shown) + more)


def _glob_match(name: str, pattern: str) -> bool:
    if "/" not in pattern and fnmatch.fnmatch(Path(name).name, pattern):
        return True
    return _translate(pattern).fullmatch(name) is not None


@functools.lru_cache(maxsize=64)
def _translate(pattern: str) -> re.Pattern[str]:
    """A glob (`**` spans folders, `*` and `?` do not) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)
