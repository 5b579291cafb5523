"""A map of a repository for the model: the definitions the rest of the code refers to most,
fitted to a token budget.

Files are parsed with tree-sitter (`tools.repo_map_languages`) into definitions and references.
Ranking is PageRank over a graph of files and names: a file points to each name it refers to
(weighted by how often, and by how telling the name is), a name points to the files defining it.
Files the session works on and names in the task get the teleport mass, so the map leans
towards them. A definition scores its name's rank shared among the files defining it; the map
lists the best-scoring definitions, grouped by file, as many as fit the budget.

Tags are cached on disk by content hash (SQLite under `data_dir()/repo-map`), shared by every
worktree, and a file whose size and mtime are unchanged is not even read again: after an edit
only the changed files are re-parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tools.base import Observation, Tool, ToolContext
from tools.locations import data_dir
from tools.repo_map_languages import LANGUAGE_BY_SUFFIX, QUERIES, FileTags, parse_file
from tools.repo_map_ranking import ATTRIBUTE_WEIGHT, COMMON_NAMES, Ranking
from tools.repo_map_store import TagStore, source_files, stat_sources
from tools.workspace_fs import WorkspaceFS

__all__ = ["RepoMap", "RepoMapTool", "estimate_tokens", "render_repo_map", "source_files"]

CACHE_VERSION = 2
"""Bump when what `extract_tags` returns changes (its queries are fingerprinted anyway)."""
MAX_FILE_BYTES = 1_000_000
PARALLEL_MIN_FILES = 1000
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


@dataclass
class RefreshStats:
    """What one refresh did."""

    files: int = 0
    parsed: int = 0
    read: int = 0
    seconds: float = 0.0


@dataclass
class _Entry:
    mtime_ns: int
    size: int
    digest: str
    tags: FileTags
    arrays: tuple[Any, ...] | None = None


class RepoMap:
    """The map of one directory tree, kept current by `refresh()`."""

    def __init__(self, root: Path, cache_path: Path | None = None, workers: int | None = None):
        self.root = Path(root).resolve()
        self.store = TagStore(cache_path or data_dir() / "repo-map" / f"tags-{_fingerprint()}.db")
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
        self.entries: dict[str, _Entry] = {}
        self.names: dict[str, int] = {}
        self.lock = threading.Lock()
        self._loaded = False
        self._weights = np.zeros(0)
        self._generation = 0
        self._ranking: tuple[Any, Ranking] | None = None
        self.last_rank: tuple[list[str], Any] | None = None
        """The latest PageRank (files, vector): the next one starts from it, converging sooner."""

    def refresh(self) -> RefreshStats:
        """Bring the tags up to date with the files: only new or changed files are read, and
        only contents never seen before are parsed."""
        started = time.perf_counter()
        stats = RefreshStats()
        known = {} if self._loaded else self.store.files(str(self.root))
        current, pending, restated = self._scan(known, stats)
        cached = self.store.tags(d for _, _, d in pending.values())
        missing = {p: v for p, v in pending.items() if v[2] not in cached}
        parsed = self._parse(list(missing))
        stats.parsed = len(parsed)
        new_tags = {missing[p][2]: tags for p, tags in parsed.items()}
        for path, (mtime, size, digest) in pending.items():
            tags = cached.get(digest) or new_tags.get(digest) or FileTags()
            current[path] = _Entry(mtime, size, digest, tags)
        gone = set(self.entries if self._loaded else known) - set(current)
        changed = {p: e for p, e in current.items() if self.entries.get(p) is not e}
        if changed or gone or new_tags or restated:
            self.store.save(str(self.root), {p: (e.mtime_ns, e.size, e.digest) for p, e in
                                             {**changed, **restated}.items()}, new_tags, gone)
        if changed or gone:
            self._generation += 1
        self.entries, self._loaded = current, True
        stats.files = len(current)
        stats.seconds = time.perf_counter() - started
        return stats

    def _scan(self, known: dict[str, tuple[int, int, str]], stats: RefreshStats) -> tuple[
            dict[str, _Entry], dict[str, tuple[int, int, str]], dict[str, _Entry]]:
        """Files whose entry still holds, files to look up by (mtime, size, hash), and entries
        whose file was touched without changing."""
        current: dict[str, _Entry] = {}
        pending: dict[str, tuple[int, int, str]] = {}
        restated: dict[str, _Entry] = {}
        fs = WorkspaceFS(self.root)
        for path, info in stat_sources(self.root):
            if info.st_size > MAX_FILE_BYTES:
                continue
            entry = self.entries.get(path)
            if entry and (entry.mtime_ns, entry.size) == (info.st_mtime_ns, info.st_size):
                current[path] = entry
                continue
            seen = known.get(path)
            if seen and seen[:2] == (info.st_mtime_ns, info.st_size):
                pending[path] = seen
                continue
            try:
                data = fs.read_bytes(path, MAX_FILE_BYTES)
            except OSError:
                continue
            stats.read += 1
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            if entry and entry.digest == digest:
                entry.mtime_ns, entry.size = info.st_mtime_ns, info.st_size
                current[path] = restated[path] = entry
            else:
                pending[path] = (info.st_mtime_ns, info.st_size, digest)
        return current, pending, restated

    def _parse(self, paths: list[str]) -> dict[str, FileTags]:
        jobs = [(str(self.root), p, LANGUAGE_BY_SUFFIX[os.path.splitext(p)[1].lower()],
                 MAX_FILE_BYTES) for p in paths]
        if self.workers > 1 and len(jobs) >= PARALLEL_MIN_FILES:
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
                results = list(pool.map(parse_file, jobs, chunksize=16))
        else:
            results = [parse_file(job) for job in jobs]
        return dict(results)

    def render(self, max_tokens: int = 1024, focus: Iterable[str] = (), mentioned: str = "",
               count_tokens: Callable[[str], int] | None = None) -> str:
        """The map within `max_tokens`: best definitions first, grouped by file. `focus` are
        files the session works on (relative or absolute paths); `mentioned` is text (the task)
        whose identifiers and file names get a boost."""
        if max_tokens <= 0:
            return ""
        count = count_tokens or estimate_tokens
        with self.lock:
            ranking = self.ranking(self._focus(focus), set(WORD.findall(mentioned)))
            order = ranking.order(max_tokens // 4 + 1)
        low, high, best = 0, len(order), ""
        while low <= high:
            middle = (low + high) // 2
            text = ranking.render(order[:middle])
            if count(text) <= max_tokens:
                best, low = text, middle + 1
            else:
                high = middle - 1
        return best

    def ranking(self, focus: set[str], mentioned: set[str]) -> Ranking:
        """The ranking for these boosts (kept until the files or the boosts change)."""
        key = (self._generation, frozenset(focus), frozenset(mentioned))
        if self._ranking is None or self._ranking[0] != key:
            self._ranking = (key, Ranking(self, focus, mentioned))
        return self._ranking[1]

    def arrays(self, entry: _Entry) -> tuple[Any, ...]:
        """Name ids of a file: every definition, distinct definitions, references and their
        counts (made once per content)."""
        if entry.arrays is None:
            names = self.names
            every = [names.setdefault(d[0], len(names)) for d in entry.tags.defs]
            refs = entry.tags.refs
            ref_ids = [names.setdefault(n.lstrip("."), len(names)) for n in refs]
            weights = [c * ATTRIBUTE_WEIGHT ** 2 if n.startswith(".") else c
                       for n, c in refs.items()]
            entry.arrays = (np.array(every, dtype=np.int64),
                            np.array(list(dict.fromkeys(every)), dtype=np.int64),
                            np.array(ref_ids, dtype=np.int64), np.array(weights, dtype=float))
        return entry.arrays

    def name_weights(self, count: int) -> Any:
        """How telling each name is: private and very short names count less."""
        if len(self._weights) < count:
            extra = np.ones(count - len(self._weights))
            for name, index in self.names.items():
                if index >= len(self._weights):
                    if name.startswith("__") or name in COMMON_NAMES:
                        extra[index - len(self._weights)] = 0.05
                    elif name.startswith("_"):
                        extra[index - len(self._weights)] = 0.2
                    elif len(name) < 4:
                        extra[index - len(self._weights)] = 0.5
            self._weights = np.concatenate([self._weights, extra])
        return self._weights[:count].copy()

    def _focus(self, paths: Iterable[str]) -> set[str]:
        result = set()
        for path in paths:
            candidate = Path(path)
            if candidate.is_absolute():
                try:
                    candidate = candidate.resolve().relative_to(self.root)
                except ValueError:
                    continue
            result.add(candidate.as_posix())
        return result & set(self.entries)

    def close(self) -> None:
        self.store.close()


@cache
def _fingerprint() -> str:
    """Names the cache after the extractor, so tags from older queries are never reused."""
    text = json.dumps([CACHE_VERSION, QUERIES], sort_keys=True)
    return f"v{CACHE_VERSION}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


def estimate_tokens(text: str) -> int:
    """Tokens of `text` under cl100k (litellm's bundled copy), else about 3.5 characters each."""
    encoder = _encoder()
    if encoder is not None:
        return len(encoder.encode(text, disallowed_special=()))
    return int(len(text) / 3.5) + 1


@cache
def _encoder() -> Any:
    import importlib.util

    try:
        if "TIKTOKEN_CACHE_DIR" not in os.environ:
            spec = importlib.util.find_spec("litellm")
            if spec and spec.submodule_search_locations:
                bundled = Path(list(spec.submodule_search_locations)[0]) / \
                    "litellm_core_utils" / "tokenizers"
                if bundled.is_dir():
                    os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except Exception:  # no tiktoken, or its data cannot be had offline
        return None


_maps: OrderedDict[Path, RepoMap] = OrderedDict()
_maps_lock = threading.Lock()
MAX_KEPT_MAPS = 16
"""Maps kept per process (each holds a database connection); the least recently used goes."""


def repo_map_for(root: Path) -> RepoMap:
    """The process's RepoMap of `root` (kept, so later refreshes are incremental)."""
    key = Path(root).resolve()
    with _maps_lock:
        if key not in _maps:
            _maps[key] = RepoMap(key)
            while len(_maps) > MAX_KEPT_MAPS:
                _, oldest = _maps.popitem(last=False)
                with oldest.lock:
                    oldest.close()
        _maps.move_to_end(key)
        return _maps[key]


def release_repo_map(root: Path) -> None:
    """Forget the map of `root` and close its database (the episode on it has ended)."""
    with _maps_lock:
        kept = _maps.pop(Path(root).resolve(), None)
    if kept is not None:
        with kept.lock:
            kept.close()


def render_repo_map(root: Path, max_tokens: int, focus: Iterable[str] = (),
                    mentioned: str = "") -> str:
    """A fresh map of `root`, or "" when it is off (0 tokens) or cannot be made."""
    if max_tokens <= 0:
        return ""
    try:
        repo = repo_map_for(root)
        with repo.lock:
            repo.refresh()
        return repo.render(max_tokens, focus, mentioned)
    except Exception:  # a map is a help, never a reason to fail
        return ""


class RepoMapArgs(BaseModel):
    max_tokens: int = Field(1024, ge=64, le=16_000,
                            description="Size of the map in tokens (default 1024).")


class RepoMapTool(Tool):
    """Show a map of the repository: the most referred-to classes, functions and types with
    their file and line, files you edited and names in the task first. Use it to find your
    way before viewing files."""

    name = "repo_map"
    read_only = True
    Args = RepoMapArgs

    def run(self, args: RepoMapArgs, ctx: ToolContext) -> Observation:
        focus = list(ctx.edit_history)
        text = render_repo_map(ctx.workspace, args.max_tokens, focus,
                               ctx.task_text)
        if not text:
            return Observation("The repository has no source files the map can read "
                               "(Python, JavaScript, TypeScript, Go, Rust, Java, C, C++).")
        return Observation(text, data={"tokens": estimate_tokens(text)})
