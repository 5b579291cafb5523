"""SWE-agent's windowed-editor commands (0.x, and 1.x's `default` config) as our tool calls.

That interface shows a file 100 numbered lines at a time: `open PATH [LINE]`, `goto LINE`,
`scroll_up` / `scroll_down` move the window, `edit N:M` ... `end_of_edit` replaces lines N to
M of the open file, `create PATH` makes an empty file and opens it, `find_file`, `search_dir`
and `search_file` search (`submit [VALUE]` is the importer's). Its state (the open file, the
lines shown) is read back from the recorded observations, which start with
`[File: PATH (N lines total)]` and number each line `12:text`.

The mapping: open, goto and scroll become `view` with the range the observation showed;
create becomes `create` (empty); an edit becomes `str_replace` of the lines it replaced, as
last shown, widened by neighbouring lines until the text is unique in what is known of the
file (or `create` when it replaces the whole file, `insert` when it replaces nothing);
find_file becomes a bash `find`, search_dir and search_file `grep`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

FILE_HEADER = re.compile(r"^\[File: (.+?) \((\d+) lines total\)\]$", re.M)
NUMBERED = re.compile(r"^(\d+):(.*)$")
OPEN_FILE = re.compile(r"^\(Open file: (.+)\)$", re.M)
EDIT = re.compile(r"^edit\s+(\d+)\s*:\s*(\d+)\s*\n(.*?)\n?end_of_edit\s*$", re.DOTALL)
INSERT = re.compile(r"^insert\s+(\d+)\s*\n(.*?)\n?end_of_insert\s*$", re.DOTALL)
REFUSED = ("NOT been applied", "has not been applied", "introduced new syntax error")
WINDOW = 100
VIEWER_COMMANDS = {"open", "goto", "scroll_up", "scroll_down", "create", "edit", "insert",
                   "find_file", "search_dir", "search_file"}
UNMAPPED = {"set_cursors", "filemap", "view_image", "decompile", "disassemble", "exit_forfeit",
            "connect_start", "connect_sendline", "connect_exec", "connect_stop",
            "debug_start", "debug_add_breakpoint", "debug_continue", "debug_step",
            "debug_exec", "debug_stop"}
"""SWE-agent commands with no counterpart here (the cursor editor, EnIGMA's CTF tools)."""

Call = tuple[str, dict[str, Any]]


class UnmappedCommand(ValueError):
    """A command that cannot become one of our tool calls; the message says why."""


def window(observation: str) -> tuple[str, int, int, int] | None:
    """(path, total lines, first shown, last shown) of the last file window in `observation`."""
    observation = observation.replace("\r\n", "\n")
    headers = list(FILE_HEADER.finditer(observation))
    if not headers:
        return None
    header = headers[-1]
    numbers = [int(m.group(1)) for line in observation[header.end():].splitlines()
               if (m := NUMBERED.match(line))]
    if not numbers:
        return None
    return header.group(1), int(header.group(2)), numbers[0], numbers[-1]


@dataclass
class Viewer:
    """What SWE-agent's file viewer showed so far, read from its observations."""

    path: str | None = None
    total: int = 0
    first: int = 1
    lines: dict[str, dict[int, str]] = field(default_factory=dict)

    def observe(self, observation: str) -> None:
        """Take in one observation (a refused edit's preview is not the file)."""
        observation = observation.replace("\r\n", "\n")
        opened = [p for p in OPEN_FILE.findall(observation) if p != "n/a"]
        if OPEN_FILE.search(observation) and not opened:
            self.path = None
        if any(r in observation for r in REFUSED):
            return
        headers = list(FILE_HEADER.finditer(observation))
        if not headers:
            return
        # the header shows the path as typed; "(Open file: ...)" the absolute one
        self.path = opened[-1] if opened else headers[-1].group(1)
        self.total = int(headers[-1].group(2))
        known = self.lines.setdefault(self.path, {})
        for line in observation[headers[-1].end():].splitlines():
            if m := NUMBERED.match(line):
                known[int(m.group(1))] = m.group(2)
        shown = window(observation)
        if shown is not None:
            self.first = shown[2]

    def open_path(self, command: str) -> str:
        if self.path is None:
            raise UnmappedCommand(f"{command!r} with no file open")
        return self.path


def _view(path: str, observation: str, fallback: tuple[int, int] | None) -> Call:
    shown = window(observation)
    if shown is not None:
        return "view", {"path": path, "view_range": [shown[2], shown[3]]}
    if fallback is not None:
        return "view", {"path": path, "view_range": [max(1, fallback[0]), fallback[1]]}
    return "view", {"path": path}


def _unique_span(known: dict[int, str], start: int, end: int, total: int) -> tuple[int, int]:
    """Lines start..end widened by known neighbours until their text occurs once in the
    file (when all of it is known) and is not blank."""
    whole = "\n".join(known[n] for n in range(1, total + 1)) if all(
        n in known for n in range(1, total + 1)) else None
    lo, hi = start, end
    while True:
        text = "\n".join(known[n] for n in range(lo, hi + 1))
        unique = whole is None or whole.count(text) == 1
        if text.strip() and unique:
            return lo, hi
        if lo - 1 in known:
            lo -= 1
        elif hi + 1 in known:
            hi += 1
        else:
            raise UnmappedCommand(f"lines {start}-{end} are not unique in what was shown")


def edit_lines(viewer: Viewer, start: int, end: int, text: str, observation: str) -> Call:
    """`edit start:end` with `text` as a whole-file create, an insert or a str_replace."""
    path = viewer.open_path("edit")
    new = text[:-1] if text.endswith("\n") else text
    known = viewer.lines.get(path, {})
    if not any(r in observation for r in REFUSED):
        viewer.lines[path] = {}  # line numbers shift; the observation shows the new window
    if start <= 1 and end >= viewer.total:
        return "create", {"path": path, "file_text": new + "\n"}
    if end < start:
        return "insert", {"path": path, "insert_line": start - 1, "new_str": new}
    if any(n not in known for n in range(start, end + 1)):
        raise UnmappedCommand(f"edit {start}:{end} of {path} replaces lines never shown")
    lo, hi = _unique_span(known, start, end, viewer.total)
    before = [known[n] for n in range(lo, start)]
    after = [known[n] for n in range(end + 1, hi + 1)]
    return "str_replace", {"path": path,
                           "old_str": "\n".join(known[n] for n in range(lo, hi + 1)),
                           "new_str": "\n".join([*before, new, *after])}


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def text_command(action: str, viewer: Viewer, observation: str) -> Call | None:
    """A thought/action-mode command as our call; None when it is a plain shell command."""
    action = action.strip()
    if m := EDIT.match(action):
        return edit_lines(viewer, int(m.group(1)), int(m.group(2)), m.group(3), observation)
    if m := INSERT.match(action):
        path = viewer.open_path("insert")
        return "insert", {"path": path, "insert_line": int(m.group(1)), "new_str": m.group(2)}
    words = _words(action.splitlines()[0] if action else "")
    head, rest = (words[0], words[1:]) if words else ("", [])
    if head == "edit" and not rest:
        raise UnmappedCommand("SWE-agent's cursor editor (set_cursors, then edit without N:M) "
                              "has no counterpart here")
    if head in UNMAPPED:
        raise UnmappedCommand(f"SWE-agent command {head!r} has no counterpart here")
    if head not in VIEWER_COMMANDS:
        return None
    names = ["path", "line_number"] if head == "open" else {
        "goto": ["line_number"], "create": ["filename"], "find_file": ["file_name", "dir"],
        "search_dir": ["search_term", "dir"], "search_file": ["search_term", "file"],
        }.get(head, [])
    return tool_command(head, dict(zip(names, rest, strict=False)), viewer, observation)


def tool_command(name: str, args: dict[str, Any], viewer: Viewer, observation: str) -> Call:
    """A SWE-agent command (a function-calling tool or a parsed text command) as our call."""
    if name == "open":
        line = int(args["line_number"]) if args.get("line_number") else None
        around = (line - WINDOW // 2, line + WINDOW // 2 - 1) if line else None
        return _view(str(args.get("path", "")), observation, around)
    if name == "goto":
        line = int(args.get("line_number", 1))
        return _view(viewer.open_path(name), observation,
                     (line - WINDOW // 2, line + WINDOW // 2 - 1))
    if name in ("scroll_up", "scroll_down"):
        step = WINDOW if name == "scroll_down" else -WINDOW
        first = viewer.first + step
        return _view(viewer.open_path(name), observation, (first, first + WINDOW - 1))
    if name == "create":
        return "create", {"path": str(args.get("filename", "")), "file_text": ""}
    if name == "find_file":
        folder = shlex.quote(str(args.get("dir") or "."))
        return "bash", {"command": f"find {folder} -type f -name "
                                   f"{shlex.quote(str(args.get('file_name', '')))}"}
    if name in ("search_dir", "search_file"):
        where = args.get("dir") if name == "search_dir" else (args.get("file") or viewer.path)
        call = {"pattern": re.escape(str(args.get("search_term", "")))}
        return "grep", {**call, "path": str(where)} if where else call
    if name == "edit":
        return _tool_edit(args, viewer, observation)
    if name == "insert":
        path = viewer.open_path(name)
        line = int(args["line_number"]) if args.get("line_number") else viewer.total
        return "insert", {"path": path, "insert_line": line, "new_str": str(args.get("text", ""))}
    raise UnmappedCommand(f"SWE-agent tool {name!r} has no counterpart here")


def _tool_edit(args: dict[str, Any], viewer: Viewer, observation: str) -> Call:
    """Function-calling `edit`: search/replace, or lines start..end with replacement_text."""
    if "search" in args:
        if args.get("replace-all"):
            raise UnmappedCommand("edit with replace-all has no counterpart here")
        path = viewer.open_path("edit")
        viewer.lines[path] = {}
        return "str_replace", {"path": path, "old_str": str(args["search"]),
                               "new_str": str(args.get("replace", ""))}
    start = int(args.get("start_line") or 1)
    end = int(args.get("end_line") or viewer.total or start)
    return edit_lines(viewer, start, end, str(args.get("replacement_text", "")), observation)
