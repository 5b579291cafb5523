"""grep and glob over the workspace, skipping .git and what .gitignore ignores."""

from __future__ import annotations

import fnmatch
import functools
import re
import subprocess
from pathlib import Path

from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.paths import display_path, resolve_in_workspace

MAX_MATCHES = 200
MAX_LINE_CHARS = 300


def workspace_files(workspace: Path) -> list[str]:
    """Files of the workspace, relative, honouring .gitignore (falls back to a walk)."""
    try:
        listed = subprocess.run(
            ["git", "-c", "safe.directory=*", "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            cwd=workspace, capture_output=True, timeout=30, check=True,
        ).stdout.decode()
        names = [n for n in listed.split("\0") if n]
        return sorted(n for n in names if (workspace / n).is_file())
    except (subprocess.SubprocessError, OSError):
        return sorted(
            str(p.relative_to(workspace)) for p in workspace.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(workspace).parts
        )


class GrepArgs(BaseModel):
    pattern: str = Field(description="Regular expression (Python syntax) to search for.")
    path: str | None = Field(None, description="File or directory to search (default: all).")
    include: str | None = Field(None, description="Only files matching this glob, e.g. '*.py'.")


class Grep(Tool):
    """Search file contents with a regular expression; prints path:line:text for each match."""

    name = "grep"
    Args = GrepArgs

    def run(self, args: GrepArgs, ctx: ToolContext) -> Observation:
        try:
            regex = re.compile(args.pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {args.pattern!r}: {exc}") from None
        prefix = ""
        if args.path:
            target = resolve_in_workspace(args.path, ctx.workspace)
            if not target.exists():
                raise ToolError(f"{args.path} does not exist.")
            prefix = display_path(target, ctx.workspace)
            prefix = "" if prefix == "." else prefix
        matches: list[str] = []
        total = 0
        for name in workspace_files(ctx.workspace):
            if prefix and not (name == prefix or name.startswith(prefix.rstrip("/") + "/")):
                continue
            if args.include and not fnmatch.fnmatch(Path(name).name, args.include) \
                    and not fnmatch.fnmatch(name, args.include):
                continue
            try:
                text = (ctx.workspace / name).read_text()
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if regex.search(line):
                    total += 1
                    if len(matches) < MAX_MATCHES:
                        matches.append(f"{name}:{number}:{line[:MAX_LINE_CHARS]}")
        if not matches:
            return Observation(f"No matches for {args.pattern!r}.")
        more = f"\n[{total - len(matches)} more matches not shown]" if total > len(matches) else ""
        return Observation("\n".join(matches) + more)


class GlobArgs(BaseModel):
    pattern: str = Field(description="Glob such as '**/*.py' or 'src/*.js'.")


class Glob(Tool):
    """List files whose path matches a glob pattern (** matches any directories)."""

    name = "glob"
    Args = GlobArgs

    def run(self, args: GlobArgs, ctx: ToolContext) -> Observation:
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
