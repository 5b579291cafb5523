"""`agent hooks list|trust`: the hooks a session on a repository runs, and trusting the
repository's."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.project import RepoOption, fail, repository_head

if TYPE_CHECKING:
    from agent.hooks_config import HooksConfig

hooks_app = typer.Typer(help="Hooks, host commands around a session's events: list, trust.",
                        no_args_is_help=True)


def _load(repo: Path) -> tuple[Path, HooksConfig]:
    from agent.hooks_config import load_hooks
    from tools.project_file import ProjectFileError
    from tools.sandbox import SandboxError

    root, commit = repository_head(repo)
    try:
        return root, load_hooks(root, commit)
    except (ProjectFileError, SandboxError) as exc:
        raise fail(str(exc)) from None


@hooks_app.command("list")
def hooks_list(
    repo: RepoOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the hooks (config.toml and .apprentice.toml) and whether each runs."""
    root, config = _load(repo)
    rows = [{"event": h.event, "command": h.hook.describe(), "matcher": h.hook.matcher,
             "timeout": h.hook.timeout, "source": h.source,
             "runs": h.source == "user" or config.trusted} for h in config.hooks]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no hooks: add [[hooks.EVENT]] tables to .apprentice.toml (or to config.toml in "
              "the apprentice home)", file=sys.stderr)
        return
    for row in rows:
        matcher = f" (tools: {row['matcher']})" if row["matcher"] else ""
        state = "runs" if row["runs"] else "untrusted, does not run"
        print(f"{row['event']}{matcher} [{row['source']}, {state}]: {row['command']}")
    if config.untrusted():
        print(f"the repository's hooks run on this machine once trusted: review them, then "
              f"run `agent hooks trust --repo {root}`")


@hooks_app.command("trust")
def hooks_trust(repo: RepoOption = Path(".")) -> None:
    """Trust the repository's hooks as they are at HEAD, with the files they run."""
    from tools.host_trust import trust

    root, config = _load(repo)
    theirs = [h for h in config.hooks if h.source == "repository"]
    if not theirs:
        print("nothing to trust: the repository's .apprentice.toml has no hooks")
        return
    trust(root, "hooks", config.repository_digest)
    print(f"trusted for {root}:")
    for hook in theirs:
        print(f"  {hook.event}: {hook.hook.describe()}")
    for path, digest in sorted(config.files.items()):
        print(f"  runs {path} (sha256 {digest[:12]})")
    print("any change to these hooks or files needs trusting again")
