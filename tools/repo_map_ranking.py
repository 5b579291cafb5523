"""Ranking for the repository map: PageRank over files and the names they define and use."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tools.repo_map import RepoMap

DAMPING = 0.85
ATTRIBUTE_WEIGHT = 0.25
"""A call `x.name()` may mean any `name`; a bare or imported name is what it says."""
COMMON_NAMES = frozenset({"get", "set", "list", "dict", "str", "int", "len", "type", "print",
    "open", "range", "super", "isinstance", "items", "keys", "values", "append", "extend", "pop",
    "update", "join", "split", "strip", "format", "copy", "read", "write", "close", "add",
    "remove", "insert", "index", "count", "sort", "find", "replace", "startswith", "endswith",
    "lower", "upper", "encode", "decode", "push", "map", "filter", "forEach", "then", "size",
    "clear", "contains", "equals", "hashCode", "toString", "run", "call", "apply", "bind", "main",
    "init", "new", "next", "iter", "send", "log", "debug", "info", "warning", "error",
    "exception", "warn", "emit", "parse", "load", "dump", "dumps", "loads", "sum", "min", "max",
    "any", "all", "float", "bool", "tuple", "object", "bytes", "repr", "hash", "getattr",
    "setattr", "hasattr", "delattr", "sorted", "reversed", "zip", "enumerate", "abs", "round",
    "vars", "callable", "id", "input"})
"""Names so common (builtins, container methods) that defining one says little."""
TEST_FILE = re.compile(r"(^|/)(tests?|__tests__|spec)/|(^|/)test_[^/]*$|_test\.[a-z]+$|"
                       r"\.(test|spec)\.[a-z]+$")
TEST_WEIGHT = 0.1
"""Tests define fixtures and helpers with generic names; what they define is rarely what the
rest of the code is built on."""


class Ranking:
    """PageRank over files and names, and every definition's score."""

    def __init__(self, repo: RepoMap, focus: set[str], mentioned: set[str]):
        self.repo, self.focus, self.mentioned = repo, focus, mentioned
        self.paths = sorted(repo.entries)
        arrays = [repo.arrays(repo.entries[p]) for p in self.paths]
        self.n_files, n_names = len(arrays), len(repo.names)
        self.all_defs, self.all_def_files = _joined([a[0] for a in arrays])
        self.all_def_index = np.concatenate(
            [np.arange(len(a[0])) for a in arrays]) if arrays else np.zeros(0, np.int64)
        def_names, def_files = _joined([a[1] for a in arrays])
        ref_names, ref_files = _joined([a[2] for a in arrays])
        ref_weights = np.concatenate([a[3] for a in arrays]) if arrays else np.zeros(0)
        self.definers = np.bincount(def_names, minlength=n_names).astype(float)
        weight = repo.name_weights(n_names) * np.minimum(1.0, 5.0 / np.maximum(self.definers, 1))
        self.mentioned_ids = [repo.names[n] for n in mentioned if n in repo.names]
        weight[self.mentioned_ids] *= 10.0
        useful = self.definers[ref_names] > 0
        ref_names, ref_files = ref_names[useful], ref_files[useful]
        edge = np.sqrt(ref_weights[useful]) * weight[ref_names]
        # A file passes on at most its rank: all of it once its references weigh 1 (one plain
        # reference), less when it only makes weak ones; the rest goes back to the teleport.
        out = np.maximum(np.bincount(ref_files, weights=edge, minlength=self.n_files), 1.0)
        edge = edge / out[ref_files]
        kept = 1.0 - np.bincount(ref_files, weights=edge, minlength=self.n_files)
        share = 1.0 / np.maximum(self.definers, 1.0)
        self.rank = self._pagerank((ref_files, ref_names, edge),
                                   (self.n_files + def_names, def_files, share[def_names]), kept)

    def _teleport(self) -> Any:
        """Where a random walk restarts: as often among all files as among the files in focus,
        half as often among files the task names, as often among the names it mentions."""
        n_files = self.n_files
        teleport = np.zeros(n_files + len(self.definers))
        teleport[:n_files] = 1.0 / max(n_files, 1)
        focused = [i for i, p in enumerate(self.paths) if p in self.focus]
        named = [i for i, p in enumerate(self.paths) if p not in self.focus and
                 os.path.splitext(os.path.basename(p))[0] in self.mentioned]
        names = [n_files + i for i in self.mentioned_ids if self.definers[i] > 0]
        for group, mass in ((focused, 1.0), (named, 0.5), (names, 1.0)):
            if group:
                teleport[group] += mass / len(group)
        return teleport / teleport.sum()

    def _pagerank(self, file_to_name: tuple[Any, Any, Any], name_to_file: tuple[Any, Any, Any],
                  kept: Any) -> Any:
        """Power iteration; each edge list is (sources, targets, weights)."""
        n_files, size = self.n_files, self.n_files + len(self.definers)
        teleport = self._teleport()
        rank = teleport.copy()
        last = self.repo.last_rank
        if last is not None and last[0] == self.paths:
            rank[:len(last[1])] = last[1][:size]  # names are only ever added, at the end
            rank /= rank.sum()
        for _ in range(100):
            new = np.bincount(file_to_name[1] + n_files,
                              weights=rank[file_to_name[0]] * file_to_name[2], minlength=size)
            new[:n_files] = np.bincount(name_to_file[1],
                                        weights=rank[name_to_file[0]] * name_to_file[2],
                                        minlength=n_files)
            leak = float(rank[:n_files] @ kept)
            new = DAMPING * new + (DAMPING * leak + 1 - DAMPING) * teleport
            done = np.abs(new - rank).sum() < 1e-6
            rank = new
            if done:
                break
        self.repo.last_rank = (self.paths, rank)
        return rank

    def order(self, limit: int) -> list[tuple[int, int]]:
        """(file index, definition index) of the `limit` best definitions, best first."""
        names, files = self.all_defs, self.all_def_files
        if not len(names):
            return []
        score = self.rank[self.n_files + names] / self.definers[names] \
            + 0.02 * self.rank[files]
        factor = np.ones(self.n_files)
        factor[[i for i, p in enumerate(self.paths) if TEST_FILE.search(p)]] = TEST_WEIGHT
        factor[[i for i, p in enumerate(self.paths) if p in self.focus]] = 2.0
        score = score * factor[files]
        top = np.argsort(-score, kind="stable")[:limit]
        return [(int(files[i]), int(self.all_def_index[i])) for i in top]

    def render(self, chosen: list[tuple[int, int]]) -> str:
        by_file: dict[int, set[int]] = {}
        for f, d in chosen:
            by_file.setdefault(f, set()).add(d)
        lines: list[str] = []
        for f, wanted in by_file.items():
            defs = self.repo.entries[self.paths[f]].tags.defs
            shown = set()
            for d in wanted:
                while d >= 0 and d not in shown:
                    shown.add(d)
                    d = defs[d][2]
            lines.append(f"{self.paths[f]}:")
            for d in sorted(shown):
                depth, parent = 0, defs[d][2]
                while parent >= 0:
                    depth, parent = depth + 1, defs[parent][2]
                lines.append(f"{defs[d][1]:>5}: {'  ' * depth}{defs[d][3]}")
        return "\n".join(lines)


def _joined(parts: list[Any]) -> tuple[Any, Any]:
    """The arrays end to end, and for each value the index of the array it came from."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    return np.concatenate(parts), np.repeat(np.arange(len(parts)), sizes)
