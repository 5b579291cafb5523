"""The tables of `.apprentice.toml` beyond `[sandbox]`: where `[mcp]` and `[hooks]` come from.

Two files are read, with the same schema:
- the repository's `.apprentice.toml` at the session's base commit (from git, never from a
  working tree the model can edit), and
- the user's own `config.toml` in the apprentice home ($APPRENTICE_HOME), which applies to
  every repository.

What the repository's file asks to run on the host must be trusted first (`tools.host_trust`);
the user's file is the user's own and is trusted as it is.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tools.locations import data_dir
from tools.sandbox.repo_image import SETUP_FILE, read_files

USER_FILE = "config.toml"
"""The user's file, in the apprentice home."""
Source = Literal["repository", "user"]


class ProjectFileError(ValueError):
    """A configuration file is not valid TOML or not what its schema accepts."""


@dataclass(frozen=True)
class ProjectTables:
    """One table (`mcp`, `hooks`) as each file gives it (empty where it has none)."""

    repository: dict[str, Any]
    user: dict[str, Any]
    repository_file: str
    user_file: str


def user_config_path() -> Path:
    return data_dir() / USER_FILE


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectFileError(f"{where} is not valid TOML: {exc}") from None


def repository_file(repo: Path, commit: str) -> dict[str, Any]:
    """The repository's .apprentice.toml at `commit`, parsed (empty when there is none)."""
    content = read_files(repo, commit, [SETUP_FILE])[SETUP_FILE]
    if content is None:
        return {}
    try:
        text = content.decode()
    except UnicodeDecodeError:
        raise ProjectFileError(f"{SETUP_FILE} of {repo} at {commit[:12]} is not UTF-8") from None
    return _parse(text, f"{SETUP_FILE} of {repo} at {commit[:12]}")


def user_file() -> dict[str, Any]:
    """The user's config.toml, parsed (empty when there is none)."""
    path = user_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return _parse(text, str(path))


def read_tables(repo: Path, commit: str, table: str) -> ProjectTables:
    """Table `table` of the repository's file at `commit` and of the user's file."""
    found = repository_file(repo, commit).get(table, {})
    mine = user_file().get(table, {})
    for value, where in ((found, SETUP_FILE), (mine, str(user_config_path()))):
        if not isinstance(value, dict):
            raise ProjectFileError(f"[{table}] of {where} must be a table")
    return ProjectTables(found, mine, f"{SETUP_FILE} of {repo} at {commit[:12]}",
                         str(user_config_path()))
