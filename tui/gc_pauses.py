"""Keeping the UI's pauses short: the garbage collector's full collections are the longest.

At start-up the heap is large (litellm's tables, pydantic models) and a full collection over it
stops the UI for ~300 ms; later, while a reply streams in, full collections still take 30-70 ms,
long enough to make a key press wait. Young collections take a few milliseconds.
"""

from __future__ import annotations

import gc

DEFERRED_THRESHOLD = 1_000_000
"""Generation-2 threshold while deferred: in effect, no full collection."""

_normal_threshold = gc.get_threshold()[2]


def freeze_startup_heap() -> None:
    """Leave everything allocated so far out of all later collections (it lives on anyway)."""
    gc.freeze()


def defer_full_collections(deferred: bool) -> None:
    """While a turn runs, collect only the young generations; after it, collect as usual."""
    first, second, _ = gc.get_threshold()
    gc.set_threshold(first, second, DEFERRED_THRESHOLD if deferred else _normal_threshold)
