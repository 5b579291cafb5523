"""Git on the host, run so that nothing the sandbox can write decides what it executes.

The sandbox writes the session's files, including `.gitattributes`, `.gitmodules`, nested
repositories and its own `/workspace/.git` (config, hooks, fsmonitor). Git executes programs
named in configuration (hooks, `core.fsmonitor`, filters, `diff.external`, textconv, pagers,
`core.sshCommand`, includes of any of these), so every host-side git command here:

- never discovers a repository from the working tree: it is given `--git-dir` (the host-only
  worktree metadata, or an empty repository of our own for listings), so the sandbox's
  `.git/config` and hooks are never read;
- reads no system or global configuration (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL`), and
  no inherited `GIT_*` variables, so the only configuration is the user's repository config
  (host-only: the sandbox never sees it) plus the settings below, which come last and win;
- turns off hooks, fsmonitor and the untracked cache, and empties every filter, diff and merge
  driver the repository config defines, so a `.gitattributes` the sandbox writes cannot make
  git run one of them on the sandbox's files; `--no-ext-diff --no-textconv` on diffs does the
  same for `diff.external`.

That is enough because those are the only ways git turns data into a command: executable
configuration (all of it now ours or the user's, with drivers emptied), hooks (off) and
attributes naming drivers (emptied).
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tools.locations import data_dir

GIT_TIMEOUT = 300.0
"""Seconds any one git command on the host may take."""

LIST_TIMEOUT = 30.0
"""Seconds a listing of the workspace may take."""

SAFE_SETTINGS = {
    "core.hooksPath": os.devnull,
    "core.fsmonitor": "false",
    "core.untrackedCache": "false",
    "core.attributesFile": os.devnull,
    "core.pager": "cat",
    "core.sshCommand": "false",
    "core.askPass": "",
    "credential.helper": "",
    "diff.external": "",
    "protocol.allow": "never",  # no network: only the local clone of the sandbox copy
    "protocol.file.allow": "always",
    "diff.ignoreSubmodules": "all",  # never run git inside a nested repository the agent made
    "status.submoduleSummary": "false",
    "submodule.recurse": "false",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "safe.directory": "*",
}
"""Settings of every host-side git command; they override anything the repository config says."""

DRIVER_KEYS = {
    "filter": ("clean", "smudge", "process"),
    "diff": ("command", "textconv"),
    "merge": ("driver",),
}
"""Per-driver settings that name a program, emptied wherever the repository config has them."""


IGNORED_BY_AGENT = "__pycache__/\n*.pyc\n.pytest_cache/\n.mypy_cache/\n.ruff_cache/\n"
"""Build litter the sandbox produces, kept out of checkpoints, patches and listings."""


class GitFailed(RuntimeError):
    """A git command failed; the message holds git's own error."""


def isolated_env(extra: Mapping[str, str] | None = None,
                 config_files: tuple[Path, ...] = ()) -> dict[str, str]:
    """The environment of a host git command: no inherited GIT_* variables, no system or global
    config, `SAFE_SETTINGS`, the drivers of `config_files` emptied, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_ATTR_NOSYSTEM="1",
               GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", GIT_OPTIONAL_LOCKS="0")
    settings = {**SAFE_SETTINGS, **_emptied_drivers(config_files), **(extra or {})}
    for index, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    return env


def _emptied_drivers(config_files: tuple[Path, ...]) -> dict[str, str]:
    """`filter.X.clean` = "" and so on for every driver X named in the given config files."""
    emptied: dict[str, str] = {}
    for config in config_files:
        try:
            info = config.stat()
        except OSError:
            continue
        emptied.update(_drivers_of(str(config), info.st_mtime_ns, info.st_size))
    return emptied


@functools.lru_cache(maxsize=64)
def _drivers_of(config: str, mtime_ns: int, size: int) -> dict[str, str]:
    """The emptied drivers of one config file, as it is now (cached until it changes)."""
    del mtime_ns, size  # the cache key: a changed file is read again
    done = subprocess.run(
        ["git", "config", "--file", config, "--includes", "--name-only", "--get-regexp",
         r"^(filter|diff|merge)\..*\."], env=_plain_env(), capture_output=True, text=True,
        errors="replace", timeout=30,
    )
    emptied: dict[str, str] = {}
    for name in done.stdout.split():
        section, _, rest = name.partition(".")
        driver = rest.rpartition(".")[0]
        for key in DRIVER_KEYS.get(section, ()):
            emptied[f"{section}.{driver}.{key}"] = ""
        if section == "filter":
            emptied[f"filter.{driver}.required"] = "false"
    return emptied


def _plain_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return env


def run_git(args: list[str], env: dict[str, str], cwd: Path | None = None,
            timeout: float = GIT_TIMEOUT) -> str:
    """Run `git ARGS` and return its stdout; raise GitFailed with git's stderr otherwise."""
    try:
        done = subprocess.run(
            ["git", *args], env=env, cwd=cwd, capture_output=True, text=True,
            errors="replace", timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitFailed(f"git {args[0]} took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        raise GitFailed(done.stderr.strip() or f"git {' '.join(args)} exited {done.returncode}")
    return done.stdout


def agent_excludes_file() -> Path:
    """A file of `IGNORED_BY_AGENT`, for `core.excludesFile`."""
    path = data_dir() / "git-excludes"
    if not path.exists() or path.read_text() != IGNORED_BY_AGENT:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(IGNORED_BY_AGENT)
    return path


def _listing_git_dir() -> Path:
    """An empty repository of our own: with it, git lists a folder as all untracked files."""
    path = data_dir() / "listing.git"
    if not (path / "HEAD").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        run_git(["init", "-q", "--bare", "--template=", str(path)], isolated_env())
    return path


def list_files(root: Path) -> list[str]:
    """Files under `root`, relative, minus what its .gitignore files and `IGNORED_BY_AGENT`
    ignore, never inside `.git` or a nested repository.

    Git walks the folder against an empty repository of our own (see the module docstring), so
    no configuration, hook or attribute from `root` is read. Symbolic links are listed as
    entries, never followed. Raises GitFailed when git fails or takes too long.
    """
    extra = {"core.excludesFile": str(agent_excludes_file())}
    listed = run_git(
        [f"--git-dir={_listing_git_dir()}", f"--work-tree={root}", "ls-files", "-z",
         "--others", "--exclude-standard"],
        isolated_env(extra), cwd=root, timeout=LIST_TIMEOUT,
    )
    return sorted(n for n in dict.fromkeys(listed.split("\0")) if n and not n.endswith("/"))
