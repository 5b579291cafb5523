"""The system prompt and the fixed messages the loop sends."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from tools.paths import is_git_reserved
from tools.sandbox.base import truncate_middle
from tools.workspace_fs import WorkspaceFS

SYSTEM_TEMPLATE = """You are apprentice, a careful software engineer working in a git repository.
You act only through the tools you are given; every call runs inside a sandbox where the
repository is at /workspace (paths may be given relative to it).

How to work:
{steps}
The repository ({repo_name}) has these top-level entries:
{listing}
{repo_map}{rules}"""

EDITING_STEPS = """\
1. Read the task. Find the relevant files ({find_tools}) before changing anything.
2. Make small, precise edits ({edit_tools}). Keep the project's style.
3. Run the tests with bash to check your change: {test_command}
4. When the task is done, call finish with a short summary. Call exactly one tool per step
   if unsure. Never ask the user questions: you are on your own until you finish.
"""

READ_ONLY_STEPS = """\
1. Read the task. Find the relevant files ({find_tools}).
2. You cannot edit files or run commands here: read, then answer.
3. When you know the answer, call finish with it as the summary. Call exactly one tool per
   step if unsure. Never ask the user questions: you are on your own until you finish.
"""

NO_TOOL_CALL_NUDGE = (
    "Your reply contained no tool call. Act with one of the tools (for example view, "
    "str_replace or bash), or call finish with a summary if the task is done."
)

REPO_MAP_SECTION = """
A map of the repository (its most referred-to definitions, with line numbers{more}):
{repo_map}
"""

RULES_FILES = ("AGENTS.md", "CLAUDE.md", ".apprentice.md")
MAX_LISTING = 40


MAX_RULES_CHARS = 8_000


def top_level_listing(workspace: Path) -> str:
    marks = {"dir": "/", "link": "@"}
    entries = [e.name + marks.get(e.kind, "") for e in WorkspaceFS(workspace).list_dir()
               if not is_git_reserved(e.name)]
    shown = entries[:MAX_LISTING]
    more = [f"... and {len(entries) - len(shown)} more"] if len(entries) > len(shown) else []
    return "\n".join(f"  {e}" for e in shown + more) or "  (empty)"


def project_rules(workspace: Path) -> str:
    """The first rules file of the repository, read without leaving the workspace: a link out
    of it, a FIFO or a file that is not UTF-8 is reported in its place, never followed."""
    fs = WorkspaceFS(workspace)
    for name in RULES_FILES:
        kind = fs.kind(name)
        if kind == "missing" or kind == "dir":
            continue
        try:
            text = fs.read_bytes(name, MAX_RULES_CHARS * 4).decode("utf-8", errors="replace")
        except OSError as exc:
            return f"\n(The project's rules file {name} was not read: {exc.strerror}.)\n"
        text, _ = truncate_middle(text.strip(), MAX_RULES_CHARS)
        return f"\nThe project's rules ({name}):\n{text}\n"
    return ""


FIND_TOOLS = ("glob", "grep", "view")
EDIT_TOOLS = ("str_replace", "insert", "create")


def _named(names: tuple[str, ...], tools: Collection[str] | None) -> str:
    return ", ".join(n for n in names if tools is None or n in tools) or "bash"


def system_prompt(workspace: Path, repo_name: str, test_command: str, repo_map: str = "",
                  tools: Collection[str] | None = None) -> str:
    """The system prompt; `repo_map` (from `tools.repo_map`) is shown when given; `tools` (the
    session's tool names; None: all) picks the tools the instructions name."""
    more = "; the repo_map tool\nshows more" if tools is None or "repo_map" in tools else ""
    read_only = tools is not None and not {"bash", *EDIT_TOOLS} & set(tools)
    steps = READ_ONLY_STEPS if read_only else EDITING_STEPS
    return SYSTEM_TEMPLATE.format(
        steps=steps.format(find_tools=_named(FIND_TOOLS, tools),
                           edit_tools=_named(EDIT_TOOLS, tools), test_command=test_command),
        repo_name=repo_name,
        listing=top_level_listing(workspace),
        repo_map=REPO_MAP_SECTION.format(repo_map=repo_map, more=more) if repo_map else "",
        rules=project_rules(workspace),
    )


def task_message(problem_statement: str) -> str:
    return f"Solve this issue in the repository:\n\n{problem_statement}"
