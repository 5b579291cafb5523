"""Which hooks a session runs: the `[hooks]` tables of .apprentice.toml and the user's config.

    [[hooks.pre_tool_use]]
    matcher = "bash"                       # tool names it applies to (a regex); default: all
    command = ["python3", "hooks/guard.py"]
    timeout = 10                           # seconds (default 30)

    [[hooks.stop]]
    command = "python3 -m pytest -q -x || { echo 'the tests fail' >&2; exit 2; }"

A command is a list (run as it is) or a string (run by `bash -c`). Hooks from the user's own
config.toml (the apprentice home) always run; the repository's run only once the user has
trusted them (`agent hooks trust`), and again only after trusting any change to them or to
the repository files they name.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tools.host_trust import digest, is_trusted, named_files
from tools.project_file import ProjectFileError, Source, read_tables

HookEvent = Literal["pre_tool_use", "post_tool_use", "user_prompt_submit", "pre_compact",
                    "stop"]
HOOK_EVENTS: tuple[HookEvent, ...] = get_args(HookEvent)
TOOL_EVENTS = ("pre_tool_use", "post_tool_use")


class HookCommand(BaseModel):
    """One hook: a command run on the host when its event happens."""

    model_config = ConfigDict(extra="forbid")

    command: str | list[str] = Field(
        description="A list (the program and its arguments) or a string run by `bash -c`.")
    matcher: str | None = Field(
        None, description="pre/post_tool_use only: the tool names it applies to, as a regular "
        "expression matching the whole name (`bash`, `str_replace|create`); default: every tool.")
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds before it is killed.")

    @field_validator("command")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        if not (value.strip() if isinstance(value, str) else value):
            raise ValueError("the command is empty")
        return value

    @field_validator("matcher")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {value!r} is not a regular expression: {exc}") from None
        return value

    def argv(self) -> list[str]:
        return ["bash", "-c", self.command] if isinstance(self.command, str) else self.command

    def describe(self) -> str:
        return self.command if isinstance(self.command, str) else shlex.join(self.command)

    def applies_to(self, tool: str | None) -> bool:
        return self.matcher is None or tool is None or re.fullmatch(self.matcher, tool) is not None


class HooksTable(BaseModel):
    """A `[hooks]` table: a list of hooks per event."""

    model_config = ConfigDict(extra="forbid")

    pre_tool_use: list[HookCommand] = []
    post_tool_use: list[HookCommand] = []
    user_prompt_submit: list[HookCommand] = []
    pre_compact: list[HookCommand] = []
    stop: list[HookCommand] = []

    def entries(self) -> list[tuple[HookEvent, HookCommand]]:
        return [(event, hook) for event in HOOK_EVENTS for hook in getattr(self, event)]


@dataclass(frozen=True)
class ConfiguredHook:
    """A hook, the event it is for, and which file configured it."""

    event: HookEvent
    hook: HookCommand
    source: Source


@dataclass(frozen=True)
class HooksConfig:
    """Every configured hook, and whether the repository's are trusted."""

    hooks: list[ConfiguredHook]
    repository_digest: str
    """What `agent hooks trust` records: the repository's hooks and the files they name."""
    files: dict[str, str]
    """The repository files the repository's hooks name, with their trusted content's sha256."""
    trusted: bool
    """Whether the user trusted exactly these repository hooks (True when there are none)."""

    def runnable(self) -> list[ConfiguredHook]:
        """The hooks that run: the user's, and the repository's once trusted."""
        return [h for h in self.hooks if h.source == "user" or self.trusted]

    def untrusted(self) -> list[ConfiguredHook]:
        return [] if self.trusted else [h for h in self.hooks if h.source == "repository"]


def _table(value: dict, where: str) -> HooksTable:
    try:
        return HooksTable.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'hooks'}: {e['msg']}"
                             for e in exc.errors())
        events = ", ".join(HOOK_EVENTS)
        raise ProjectFileError(f"[hooks] of {where}: {problems} (events: {events})") from None


def load_hooks(repo: Path, commit: str) -> HooksConfig:
    """The hooks of the user's config.toml and of the repository's .apprentice.toml at
    `commit`, with the repository's trust."""
    tables = read_tables(repo, commit, "hooks")
    mine = _table(tables.user, tables.user_file)
    theirs = _table(tables.repository, tables.repository_file)
    files = named_files([hook.command for _, hook in theirs.entries()], repo, commit)
    value = digest(theirs.model_dump(), files)
    hooks = [ConfiguredHook(event, hook, "user") for event, hook in mine.entries()]
    hooks += [ConfiguredHook(event, hook, "repository") for event, hook in theirs.entries()]
    trusted = not theirs.entries() or is_trusted(repo, "hooks", value)
    return HooksConfig(hooks, value, files, trusted)
