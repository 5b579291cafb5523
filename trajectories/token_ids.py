"""Token ids of local-model calls, stored without quadratic growth.

A local model reports, per call, the whole prompt's ids plus the completion's ids and logprobs.
Each prompt repeats the previous prompt and completion (the context only grows, until a
compaction rewrites it), so storing every prompt whole makes a file grow with the square of the
episode length. On disk a record keeps the completion ids and logprobs as they are and replaces
`prompt_ids` by a delta against the previous call's prompt + completion in the same file:

    {"call": 3, "prompt_shared": 812, "prompt_tail": [...], "prompt_length": 845,
     "completion_ids": [...], "completion_logprobs": [...], "model_path": ..., ...}

`prompt_ids == (previous prompt_ids + previous completion_ids)[:prompt_shared] + prompt_tail`.
The longest common prefix is taken, not assumed: a chat template may re-tokenise the previous
reply differently from how it was generated, and a compaction shares almost nothing, so the
delta is exact in every case and merely bigger when little is shared. `call` numbers the records
of a file, so a reader notices a lost record instead of rebuilding ids on the wrong base.

Prompt ids are kept (rather than re-rendered from the messages) because they are what the model
actually read; training on them needs no tokenizer and cannot drift from a changed template.
"""

from __future__ import annotations

from typing import Any

DELTA_KEYS = ("call", "prompt_shared", "prompt_tail", "prompt_length")


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix (binary search over C-speed slice compares)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class TokenIdsCompactor:
    """Turns full token-id records into delta records, one file's calls in order."""

    def __init__(self) -> None:
        self.calls = 0
        self.previous: list[int] = []

    def compact(self, record: dict[str, Any]) -> dict[str, Any]:
        prompt = record.get("prompt_ids")
        if not isinstance(prompt, list):
            return record
        completion = list(record.get("completion_ids") or [])
        shared = common_prefix_length(self.previous, prompt)
        out = {k: v for k, v in record.items() if k != "prompt_ids"}
        out.update(call=self.calls, prompt_shared=shared, prompt_tail=prompt[shared:],
                   prompt_length=len(prompt))
        self.calls += 1
        self.previous = [*prompt, *completion]
        return out


class TokenIdsExpander:
    """Restores full records from a file's records in order (the inverse of the compactor).

    Records written whole (schema version 1) pass through unchanged. When a record's base is
    missing (a lost line), its `prompt_ids` is None and `prompt_ids_error` says why."""

    def __init__(self) -> None:
        self.expected_call = 0
        self.previous: list[int] | None = []

    def expand(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        if record is None or "prompt_tail" not in record:
            return record
        out = {k: v for k, v in record.items() if k not in DELTA_KEYS}
        call, shared = record.get("call", self.expected_call), record["prompt_shared"]
        base = self.previous if call == self.expected_call else None
        if base is None and shared > 0:
            out["prompt_ids"] = None
            out["prompt_ids_error"] = (f"token record {call} is a delta on record {call - 1}, "
                                       "which is missing from the file")
            self.previous = None
        else:
            prompt = [*(base or [])[:shared], *record["prompt_tail"]]
            if len(prompt) != record.get("prompt_length", len(prompt)):
                out["prompt_ids"] = None
                out["prompt_ids_error"] = f"token record {call} does not match its base"
                self.previous = None
            else:
                out["prompt_ids"] = prompt
                self.previous = [*prompt, *(record.get("completion_ids") or [])]
        self.expected_call = call + 1
        return out
