"""Example repositories with a known bug and a failing test, for the demo and for tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLES_ROOT = Path(__file__).parent / "examples"
RENAMED = {"gitignore.txt": ".gitignore"}
"""Files stored under another name so they do not act on this repository."""


def example_names() -> list[str]:
    return sorted(p.name for p in EXAMPLES_ROOT.iterdir() if (p / "repo").is_dir())


def init_example(name: str, dest: Path, force: bool = False) -> tuple[Path, Path]:
    """Create `dest/repo` (a git repository with one commit) and `dest/issue.md`.

    Reuses an existing copy unless `force`; returns (repo path, issue path)."""
    source = EXAMPLES_ROOT / name
    if not (source / "repo").is_dir():
        known = ", ".join(example_names())
        raise ValueError(f"unknown example {name!r}; known examples: {known}")
    dest = Path(dest).expanduser().resolve()
    repo, issue = dest / "repo", dest / "issue.md"
    if (repo / ".git").is_dir() and issue.is_file() and not force:
        return repo, issue
    if repo.exists():
        shutil.rmtree(repo)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "repo", repo)
    for stored, real in RENAMED.items():
        for path in repo.rglob(stored):
            path.rename(path.with_name(real))
    shutil.copy(source / "issue.md", issue)
    git = ["git", "-C", str(repo), "-c", "user.name=apprentice", "-c",
           "user.email=agent@apprentice.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Initial commit"], check=True)
    return repo, issue
