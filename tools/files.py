"""File tools: view, create, str_replace, insert and undo_edit, confined to the workspace."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.paths import display_path, match_workspace_owner, resolve_in_workspace
from tools.syntax import syntax_error

MAX_VIEW_CHARS = 16_000
SNIPPET_CONTEXT = 4


def _history(ctx: ToolContext) -> dict[str, list[str | None]]:
    return ctx.state.setdefault("edit_history", {})


def _read_text(path: Path, shown: str) -> str:
    if not path.exists():
        raise ToolError(f"{shown} does not exist.")
    if path.is_dir():
        raise ToolError(f"{shown} is a directory; use view on a file or glob to list files.")
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise ToolError(f"{shown} is not a UTF-8 text file.") from None


def _write_checked(path: Path, old: str | None, new: str, ctx: ToolContext) -> None:
    """Write `new`, refusing it if it breaks the syntax of a file that parsed before."""
    error = syntax_error(path, new)
    if error and (old is None or syntax_error(path, old) is None):
        shown = display_path(path, ctx.workspace)
        raise ToolError(f"edit refused: {shown} would no longer parse ({error}). Fix and retry.")
    _history(ctx).setdefault(str(path), []).append(old)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    match_workspace_owner(path, ctx.workspace)


def _numbered(lines: list[str], start: int) -> str:
    return "\n".join(f"{n:6d}\t{line}" for n, line in enumerate(lines, start))


def _snippet(text: str, around_line: int, shown: str) -> str:
    lines = text.splitlines()
    first = max(1, around_line - SNIPPET_CONTEXT)
    last = min(len(lines), around_line + SNIPPET_CONTEXT)
    body = _numbered(lines[first - 1 : last], first)
    return f"Edited {shown}. Lines {first}-{last} now read:\n{body}"


class ViewArgs(BaseModel):
    path: str = Field(description="File or directory, relative to the repository root.")
    view_range: list[int] | None = Field(
        None, description="Optional [first, last] line numbers (1-based, last=-1 for the end)."
    )


class View(Tool):
    """Show a file with line numbers (optionally a line range), or list a directory."""

    name = "view"
    Args = ViewArgs

    def run(self, args: ViewArgs, ctx: ToolContext) -> Observation:
        path = resolve_in_workspace(args.path, ctx.workspace)
        shown = display_path(path, ctx.workspace)
        if path.is_dir():
            entries = sorted(
                p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if p.name != ".git"
            )
            return Observation(f"Directory {shown}:\n" + "\n".join(entries))
        lines = _read_text(path, shown).splitlines()
        first, last = 1, len(lines)
        if args.view_range is not None:
            if len(args.view_range) != 2:
                raise ToolError("view_range must be [first, last].")
            first, last = args.view_range
            last = len(lines) if last == -1 else last
            if not 1 <= first <= max(last, 1) or last > len(lines):
                raise ToolError(f"view_range {args.view_range} is invalid: {shown} has "
                                f"{len(lines)} lines.")
        body = _numbered(lines[first - 1 : last], first)
        if len(body) > MAX_VIEW_CHARS:
            body = body[:MAX_VIEW_CHARS] + "\n... [cut: use view_range to see the rest]"
        return Observation(body or f"{shown} is empty.")


class CreateArgs(BaseModel):
    path: str = Field(description="File to create or overwrite, relative to the repository root.")
    file_text: str = Field(description="The whole content of the file.")


class Create(Tool):
    """Create a new file (or overwrite one) with the given content."""

    name = "create"
    Args = CreateArgs

    def run(self, args: CreateArgs, ctx: ToolContext) -> Observation:
        path = resolve_in_workspace(args.path, ctx.workspace)
        shown = display_path(path, ctx.workspace)
        if path.is_dir():
            raise ToolError(f"{shown} is a directory.")
        old = path.read_text() if path.exists() else None
        _write_checked(path, old, args.file_text, ctx)
        verb = "Overwrote" if old is not None else "Created"
        return Observation(f"{verb} {shown} ({len(args.file_text.splitlines())} lines).",
                           data={"path": shown})


class StrReplaceArgs(BaseModel):
    path: str = Field(description="File to edit, relative to the repository root.")
    old_str: str = Field(description="Exact text to replace; must occur exactly once.")
    new_str: str = Field("", description="Replacement text.")


class StrReplace(Tool):
    """Replace one exact, unique occurrence of old_str in a file with new_str."""

    name = "str_replace"
    Args = StrReplaceArgs

    def run(self, args: StrReplaceArgs, ctx: ToolContext) -> Observation:
        path = resolve_in_workspace(args.path, ctx.workspace)
        shown = display_path(path, ctx.workspace)
        text = _read_text(path, shown)
        if not args.old_str:
            raise ToolError("old_str is empty; give the exact text to replace.")
        count = text.count(args.old_str)
        if count == 0:
            raise ToolError(f"old_str was not found in {shown}. View the file and copy the text "
                            "exactly, including indentation.")
        if count > 1:
            lines = [text[: i].count("\n") + 1 for i in _occurrences(text, args.old_str)]
            raise ToolError(f"old_str occurs {count} times in {shown} (lines {lines}); include "
                            "more surrounding lines to make it unique.")
        start = text.index(args.old_str)
        new_text = text.replace(args.old_str, args.new_str, 1)
        _write_checked(path, text, new_text, ctx)
        line = text[:start].count("\n") + 1
        return Observation(_snippet(new_text, line, shown), data={"path": shown})


def _occurrences(text: str, needle: str) -> list[int]:
    found, at = [], text.find(needle)
    while at != -1:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


class InsertArgs(BaseModel):
    path: str = Field(description="File to edit, relative to the repository root.")
    insert_line: int = Field(description="Insert after this line number (0 for the top).")
    new_str: str = Field(description="Text to insert.")


class Insert(Tool):
    """Insert text after a given line of a file (0 inserts at the top)."""

    name = "insert"
    Args = InsertArgs

    def run(self, args: InsertArgs, ctx: ToolContext) -> Observation:
        path = resolve_in_workspace(args.path, ctx.workspace)
        shown = display_path(path, ctx.workspace)
        text = _read_text(path, shown)
        lines = text.splitlines(keepends=True)
        if not 0 <= args.insert_line <= len(lines):
            raise ToolError(f"insert_line {args.insert_line} is out of range: {shown} has "
                            f"{len(lines)} lines.")
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        block = args.new_str if args.new_str.endswith("\n") else args.new_str + "\n"
        new_text = "".join(lines[: args.insert_line]) + block + "".join(lines[args.insert_line :])
        _write_checked(path, text, new_text, ctx)
        return Observation(_snippet(new_text, args.insert_line + 1, shown), data={"path": shown})


class UndoEditArgs(BaseModel):
    path: str = Field(description="File whose last edit to undo.")


class UndoEdit(Tool):
    """Undo the last edit made to a file with create, str_replace or insert."""

    name = "undo_edit"
    Args = UndoEditArgs

    def run(self, args: UndoEditArgs, ctx: ToolContext) -> Observation:
        path = resolve_in_workspace(args.path, ctx.workspace)
        shown = display_path(path, ctx.workspace)
        history = _history(ctx).get(str(path))
        if not history:
            raise ToolError(f"no edit of {shown} to undo.")
        previous = history.pop()
        if previous is None:
            path.unlink(missing_ok=True)
            return Observation(f"Undid the creation of {shown}; it no longer exists.",
                               data={"path": shown})
        path.write_text(previous)
        return Observation(f"Restored {shown} to its content before the last edit.",
                           data={"path": shown})
