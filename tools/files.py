"""File tools: view, create, str_replace, insert and undo_edit, confined to the workspace.

Every file operation goes through `tools.workspace_fs`, so a symbolic link (even one the sandbox
plants between two calls) never leads a read or a write out of the workspace."""

from __future__ import annotations

import difflib
from pathlib import PurePosixPath

from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext, ToolError
from tools.paths import is_git_reserved, workspace_relative
from tools.search import workspace_files
from tools.syntax import syntax_error
from tools.workspace_fs import FileAccessError, WorkspaceFS

MAX_VIEW_CHARS = 16_000
MAX_LISTED_ENTRIES = 500
SNIPPET_CONTEXT = 4
MAX_SNIPPET_LINE = 300
MAX_SUGGESTIONS = 3
CLOSE_PATH = 0.8
"""difflib similarity above which an existing path is suggested for a missing one."""
CLOSE_LINE = 0.75
"""difflib similarity above which a file line is quoted for an old_str that is not there."""


def _history(ctx: ToolContext) -> dict[str, list[str | None]]:
    return ctx.edit_history


def _read_text(fs: WorkspaceFS, relative: str) -> str:
    """The text of a regular file in the workspace, or a ToolError saying why not."""
    try:
        return fs.read_text(relative)
    except FileNotFoundError:
        raise ToolError(f"{relative} does not exist.{_did_you_mean(fs, relative)}") from None
    except IsADirectoryError:
        raise ToolError(f"{relative} is a directory; use view on a file or glob to list "
                        "files.") from None
    except UnicodeDecodeError:
        raise ToolError(f"{relative} is not a UTF-8 text file.") from None
    except OSError as exc:
        raise ToolError(f"{_reason(exc)}.") from None


def _existing_text(fs: WorkspaceFS, relative: str) -> str | None:
    """The text of `relative` if it is a file, None if nothing is there; else a ToolError."""
    kind = fs.kind(relative)
    if kind == "missing":
        return None
    if kind == "dir":
        raise ToolError(f"{relative} is a directory.")
    return _read_text(fs, relative)


def _did_you_mean(fs: WorkspaceFS, relative: str) -> str:
    """' Did you mean a/b.py?' naming the workspace files whose path ends with `relative` (a
    path given without its folder, `catalogue.py` for `library/catalogue.py`), else the ones
    closest to it (a misspelt path, `library/shelfing.py`), else ''."""
    suffix = "/" + relative.strip("/")
    files = workspace_files(fs.root)
    found = [name for name in files if name.endswith(suffix)]
    found = found or difflib.get_close_matches(relative, files, MAX_SUGGESTIONS, CLOSE_PATH)
    if not found:
        return ""
    shown = " or ".join(found[:MAX_SUGGESTIONS])
    more = f" (and {len(found) - MAX_SUGGESTIONS} more)" if len(found) > MAX_SUGGESTIONS else ""
    return f" Did you mean {shown}{more}?"


def _reason(exc: OSError) -> str:
    return exc.strerror if isinstance(exc, FileAccessError) and exc.strerror else str(exc)


def _write_checked(fs: WorkspaceFS, relative: str, old: str | None, new: str,
                   ctx: ToolContext) -> None:
    """Write `new`, refusing it if it breaks the syntax of a file that parsed before."""
    suffix = PurePosixPath(relative)
    error = syntax_error(suffix, new)
    if error and (old is None or syntax_error(suffix, old) is None):
        raise ToolError(f"edit refused: {relative} would no longer parse ({error}). Fix and "
                        "retry.")
    try:
        fs.write_text(relative, new, owner=fs.owner())
    except OSError as exc:
        raise ToolError(f"could not write {relative}: {_reason(exc)}.") from None
    _history(ctx).setdefault(relative, []).append(old)


READ = "read"
"""`Observation.data` key: the file a view showed the model..."""
LINES = "lines"
"""... and the first and last of its lines shown whole."""


def _target(path: str, ctx: ToolContext) -> tuple[WorkspaceFS, str]:
    return WorkspaceFS(ctx.workspace), workspace_relative(path)


def _clip(line: str) -> str:
    if len(line) <= MAX_SNIPPET_LINE:
        return line
    return line[:MAX_SNIPPET_LINE] + f" ... [{len(line) - MAX_SNIPPET_LINE} more characters]"


def _numbered(lines: list[str], start: int) -> str:
    return "\n".join(f"{n:6d}\t{line}" for n, line in enumerate(lines, start))


def _snippet(text: str, around_line: int, shown: str) -> str:
    lines = [_clip(line) for line in text.splitlines()]
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
    read_only = True
    Args = ViewArgs
    path_arguments = ("path",)

    def run(self, args: ViewArgs, ctx: ToolContext) -> Observation:
        fs, shown = _target(args.path, ctx)
        if fs.kind(shown) == "dir":
            return Observation(_listing(fs, shown))
        lines = _read_text(fs, shown).splitlines()
        first, last = 1, len(lines)
        past_end = False
        if args.view_range is not None:
            if len(args.view_range) != 2:
                raise ToolError("view_range must be [first, last].")
            first, last = args.view_range
            last = len(lines) if last == -1 else last
            if not 1 <= first <= min(max(last, 1), max(len(lines), 1)):
                raise ToolError(f"view_range {args.view_range} is invalid: {shown} has "
                                f"{len(lines)} lines.")
            past_end = last > len(lines)
            last = min(last, len(lines))
        body = _numbered(lines[first - 1 : last], first)
        if len(body) > MAX_VIEW_CHARS:
            body = body[:MAX_VIEW_CHARS]
            last = first + body.count("\n") - 1  # the last line shown whole
            body += "\n... [cut: use view_range to see the rest]"
        elif past_end:
            body += f"\n[{shown} ends at line {len(lines)}]"
        return Observation(body or f"{shown} is empty.", data={READ: shown, LINES: [first, last]})


def _listing(fs: WorkspaceFS, shown: str) -> str:
    try:
        found = fs.list_dir(shown)
    except OSError as exc:
        raise ToolError(f"{_reason(exc)}.") from None
    marks = {"dir": "/", "link": "@"}
    entries = [e.name + marks.get(e.kind, "") for e in found
               if not is_git_reserved(e.name)]
    shown_entries = entries[:MAX_LISTED_ENTRIES]
    more = len(entries) - len(shown_entries)
    tail = [f"... and {more} more entries"] if more else []
    return f"Directory {shown}:\n" + "\n".join(shown_entries + tail)


class CreateArgs(BaseModel):
    path: str = Field(description="File to create or overwrite, relative to the repository root.")
    file_text: str = Field(description="The whole content of the file.")


class Create(Tool):
    """Create a new file (or overwrite one) with the given content."""
    error_changes_nothing = True

    name = "create"
    Args = CreateArgs

    def run(self, args: CreateArgs, ctx: ToolContext) -> Observation:
        fs, shown = _target(args.path, ctx)
        if shown == ".":
            raise ToolError("the repository root is a directory; give a file path.")
        old = _existing_text(fs, shown)
        _write_checked(fs, shown, old, args.file_text, ctx)
        verb = "Overwrote" if old is not None else "Created"
        return Observation(f"{verb} {shown} ({len(args.file_text.splitlines())} lines).",
                           data={"path": shown})


class StrReplaceArgs(BaseModel):
    path: str = Field(description="File to edit, relative to the repository root.")
    old_str: str = Field(description="Exact text to replace; must occur exactly once.")
    new_str: str = Field("", description="Replacement text.")


class StrReplace(Tool):
    """Replace one exact, unique occurrence of old_str in a file with new_str."""
    error_changes_nothing = True

    name = "str_replace"
    Args = StrReplaceArgs
    path_arguments = ("path",)
    edit_arguments = ("path", "old_str")

    def run(self, args: StrReplaceArgs, ctx: ToolContext) -> Observation:
        fs, shown = _target(args.path, ctx)
        text = _read_text(fs, shown)
        if not args.old_str:
            raise ToolError("old_str is empty; give the exact text to replace.")
        count = text.count(args.old_str)
        if count == 0:
            raise ToolError(f"old_str was not found in {shown}.{_closest_line(text, args.old_str)}"
                            " View the file and copy the text exactly, including indentation.")
        if args.new_str == args.old_str:
            raise ToolError("new_str is the same as old_str, so nothing would change; write the "
                            "corrected text in new_str.")
        if count > 1:
            raise ToolError(f"old_str occurs {count} times in {shown}: "
                            f"{_occurrence_lines(text, args.old_str)}; include more surrounding "
                            "lines to make it unique.")
        start = text.index(args.old_str)
        new_text = text.replace(args.old_str, args.new_str, 1)
        _write_checked(fs, shown, text, new_text, ctx)
        line = text[:start].count("\n") + 1
        return Observation(_snippet(new_text, line, shown), data={"path": shown})


def _closest_line(text: str, old_str: str) -> str:
    """' The closest line is 3: `X = 24`.' for the file line most like old_str's first line
    (an edit written from memory: a constant with the value it should have), else ''."""
    wanted = next((line.strip() for line in old_str.splitlines() if line.strip()), "")
    lines = {line.strip(): n for n, line in reversed(list(enumerate(text.splitlines(), 1)))}
    found = difflib.get_close_matches(wanted, [line for line in lines if line], 1, CLOSE_LINE)
    if not found:
        return ""
    return f" The closest line is {lines[found[0]]}: `{_clip(found[0])}`."


def _occurrence_lines(text: str, needle: str, shown: int = 5) -> str:
    """"line 12 `X = 24`, line 17 `return x * X`" for the first `shown` lines that hold `needle`
    (its first line), so the model sees what tells them apart without another view."""
    lines = text.splitlines()
    numbers = sorted({text[:at].count("\n") + 1 for at in _occurrences(text, needle)})
    quoted = [f"line {n} `{_clip(lines[n - 1].strip())}`" for n in numbers[:shown]]
    more = len(numbers) - shown
    return ", ".join(quoted) + (f" and {more} more" if more > 0 else "")


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
    error_changes_nothing = True

    name = "insert"
    Args = InsertArgs
    path_arguments = ("path",)

    def run(self, args: InsertArgs, ctx: ToolContext) -> Observation:
        fs, shown = _target(args.path, ctx)
        text = _read_text(fs, shown)
        lines = text.splitlines(keepends=True)
        if not 0 <= args.insert_line <= len(lines):
            raise ToolError(f"insert_line {args.insert_line} is out of range: {shown} has "
                            f"{len(lines)} lines.")
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        block = args.new_str if args.new_str.endswith("\n") else args.new_str + "\n"
        new_text = "".join(lines[: args.insert_line]) + block + "".join(lines[args.insert_line :])
        _write_checked(fs, shown, text, new_text, ctx)
        return Observation(_snippet(new_text, args.insert_line + 1, shown), data={"path": shown})


class UndoEditArgs(BaseModel):
    path: str = Field(description="File whose last edit to undo.")


class UndoEdit(Tool):
    """Undo the last edit made to a file with create, str_replace or insert."""
    error_changes_nothing = True

    name = "undo_edit"
    Args = UndoEditArgs

    def run(self, args: UndoEditArgs, ctx: ToolContext) -> Observation:
        fs, shown = _target(args.path, ctx)
        history = _history(ctx).get(shown)
        if not history:
            raise ToolError(f"no edit of {shown} to undo.")
        previous = history.pop()
        try:
            if previous is None:
                fs.unlink(shown)
                return Observation(f"Undid the creation of {shown}; it no longer exists.",
                                   data={"path": shown})
            fs.write_text(shown, previous, owner=fs.owner())
        except OSError as exc:
            history.append(previous)
            raise ToolError(f"could not undo the edit of {shown}: {_reason(exc)}.") from None
        return Observation(f"Restored {shown} to its content before the last edit.",
                           data={"path": shown})
