"""Which repositories' host-side commands the user has reviewed and trusted.

A cloned repository must not run code on the host unasked: hooks and host MCP servers from its
`.apprentice.toml` run only once the user has trusted them (`agent hooks trust`, `agent mcp
trust`). What is trusted is a digest of exactly what would run (the configuration and the
content of the repository's files it names), per repository and kind; any change to either
makes it untrusted again. The record lives in the apprentice home, never in the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any, Literal

from tools.file_lock import exclusive_lock
from tools.locations import data_dir
from tools.sandbox.repo_image import read_files

TRUST_FILE = "trusted.json"
TrustKind = Literal["hooks", "mcp"]


def trust_path() -> Path:
    return data_dir() / TRUST_FILE


def command_paths(command: str | list[str]) -> set[str]:
    """The words of `command` that could be paths in the repository (relative, inside it)."""
    try:
        words = shlex.split(command) if isinstance(command, str) else command
    except ValueError:  # unbalanced quotes: bash will say so when it runs
        words = command.split() if isinstance(command, str) else command
    paths = set()
    for word in words:
        path = word.removeprefix("./")
        if path and not path.startswith(("/", "-", "~")) and ".." not in Path(path).parts \
                and "\n" not in path:
            paths.add(path)
    return paths


def named_files(commands: list[str | list[str]], repo: Path, commit: str) -> dict[str, str]:
    """The repository files `commands` name as arguments (`python3 hooks/guard.py` names
    hooks/guard.py), with the sha256 of their content at `commit`."""
    candidates = {path for command in commands for path in command_paths(command)}
    if not candidates:
        return {}
    found = read_files(repo, commit, sorted(candidates))
    return {name: hashlib.sha256(content).hexdigest()
            for name, content in found.items() if content is not None}


def digest(config: Any, files: dict[str, str]) -> str:
    """What trust is given to: the configuration (as JSON) and the files it runs."""
    text = json.dumps({"config": config, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _key(repo: Path) -> str:
    return str(Path(repo).resolve())


def _read() -> dict[str, dict[str, str]]:
    try:
        value = json.loads(trust_path().read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def is_trusted(repo: Path, kind: TrustKind, value: str) -> bool:
    """Whether the user trusted exactly `value` (a `digest`) for `kind` in `repo`."""
    return _read().get(_key(repo), {}).get(kind) == value


def trust(repo: Path, kind: TrustKind, value: str) -> None:
    """Record that the user trusts `value` for `kind` in `repo` (replacing what was)."""
    with exclusive_lock(f"{TRUST_FILE}.lock"):
        records = _read()
        records.setdefault(_key(repo), {})[kind] = value
        handle, temporary = tempfile.mkstemp(dir=data_dir(), prefix=".trusted-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(records, out, indent=2, sort_keys=True)
        os.replace(temporary, trust_path())
