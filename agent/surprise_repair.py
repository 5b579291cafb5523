"""Candidate one-line repairs of a suspicious function, read off a language model's surprise.

A small model does not write the fix of an unseen bug as a tool call, but read as a plain
language model of code it often prefers the fixed line to the buggy one (`bench_base_choice.py`:
8 of 13 held-out tasks). So: one forward pass over the function (with the lines before it as
context) gives, at every token, the model's likeliest tokens. Where the code's token is not the
likeliest, four edits of that line are candidates: the model's token in place of the code's
(`replace`) or before it (`insert`), the code's token left out (`delete`), or the rest of the
line written greedily from the model's token (`rewrite`). Candidates that still parse are
scored by how much likelier the whole window is with the edit, best first. The caller tries
them by running the failing test (`interleaved` gives the order): several attempts chosen by
running them, at the scale of one line (`bench/bench_surprise_repair.py` measures it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

HOWS = ("replace", "insert", "delete", "rewrite")


@dataclass(frozen=True)
class LineEdit:
    """Line `line` (1-based, of the file) changed from `old` to `new`."""

    line: int
    old: str
    new: str
    gain: float
    """log P(window with the edit) - log P(window), in nats."""
    how: str

    def apply(self, source: str) -> str:
        """`source` with this edit made; ValueError when the line is no longer `old`."""
        lines = source.splitlines(keepends=True)
        if not 1 <= self.line <= len(lines) or lines[self.line - 1].rstrip("\r\n") != self.old:
            raise ValueError(f"line {self.line} is not {self.old!r}")
        ending = lines[self.line - 1][len(self.old):]
        lines[self.line - 1] = self.new + ending
        return "".join(lines)


@dataclass
class SurpriseOptions:
    context_lines: int = 30
    """Lines before the function read as context (not edited)."""
    positions: int = 16
    """The most surprising tokens of the function whose alternatives are tried."""
    alternatives: int = 2
    """The model's likeliest tokens tried at each such position."""
    rewrite_tokens: int = 24
    """At most this many tokens written for a `rewrite` (it ends at the line's end)."""
    limit: int = 40
    """At most this many candidates returned."""
    python: bool = True
    """Keep only candidates after which the file still parses as Python."""


def candidate_edits(model: Any, tokenizer: Any, source: str, first: int, last: int,
                    options: SurpriseOptions | None = None) -> list[LineEdit]:
    """One-line edits of the code lines among `first`..`last` (1-based, inclusive) of
    `source`, best first. For Python, the `def` lines, the docstring, comments and blank lines
    are read but not edited."""
    import torch

    options = options or SurpriseOptions()
    lines = source.splitlines(keepends=True)
    first, last = max(1, first), min(len(lines), last)
    editable = editable_lines(source, first, last) if options.python else \
        {n for n in range(first, last + 1) if lines[n - 1].strip()}
    if not editable:
        return []
    start = max(1, first - options.context_lines)
    window = "".join(lines[start - 1:last])
    ids = tokenizer(window, add_special_tokens=False)["input_ids"]
    offsets = _char_offsets(tokenizer, ids, window)
    if len(ids) < 2 or offsets is None:
        return []  # a tokenizer that does not give the text back cannot edit it exactly
    line_of = [start + window.count("\n", 0, at) for at in offsets]
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
    logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)

    surprise = sorted(((float(logprobs[t - 1].max() - logprobs[t - 1, ids[t]]), t)
                       for t in range(1, len(ids)) if line_of[t] in editable
                       and window[offsets[t]:offsets[t + 1] if t + 1 < len(ids) else None].strip()),
                      reverse=True)
    window_lines = window.splitlines(keepends=True)
    drafts: dict[tuple[int, str], str] = {}
    for gap, t in surprise[:options.positions]:
        if gap <= 0:
            break
        tails: list[tuple[str, list[int]]] = [("delete", ids[t + 1:])]
        for alternative in _likeliest(logprobs[t - 1], ids[t], options.alternatives, tokenizer):
            tails += [("replace", [alternative, *ids[t + 1:]]),
                      ("insert", [alternative, *ids[t:]]),
                      ("rewrite", [alternative, *_greedy_line(model, out.past_key_values, t,
                                                               alternative, options, tokenizer)])]
        for how, tail in tails:
            edited = _edited_line(tokenizer, ids[:t], tail, line_of[t] - start, window_lines,
                                  how == "rewrite")
            if edited is not None and edited[1] != window_lines[edited[0]].rstrip("\r\n"):
                drafts.setdefault(edited, how)

    edits: list[LineEdit] = []
    for (index, new), how in drafts.items():
        edit = LineEdit(start + index, window_lines[index].rstrip("\r\n"), new, 0.0, how)
        if edit.line in editable and (not options.python or _parses(edit.apply(source))):
            edits.append(edit)
    scored = _window_gains(model, tokenizer, window, start, edits, ids, logprobs,
                           out.past_key_values)
    scored.sort(key=lambda edit: edit.gain, reverse=True)
    return scored[:options.limit]


def interleaved(per_function: list[list[LineEdit]], min_gain: float = 0.0
                ) -> list[tuple[int, LineEdit]]:
    """(function index, edit) in the order to try them: round-robin over the functions (most
    suspicious first), each function's best first, leaving out the edits whose gain is below
    `min_gain` (by default those that make the code less likely than it was)."""
    kept = [[edit for edit in edits if edit.gain >= min_gain] for edits in per_function]
    order: list[tuple[int, LineEdit]] = []
    for rank in range(max((len(edits) for edits in kept), default=0)):
        order += [(index, edits[rank]) for index, edits in enumerate(kept) if rank < len(edits)]
    return order


def editable_lines(source: str, first: int, last: int) -> set[int]:
    """The lines of `first`..`last` that hold code: not blank, not only a comment, not the
    header (decorators and `def`) or docstring of the function that starts at `first`."""
    lines = source.splitlines()
    skipped: set[int] = set()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        tree = None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and first <= node.lineno <= last:
            body = node.body[0]
            skipped.update(range(node.lineno, body.lineno))
            if isinstance(body, ast.Expr) and isinstance(body.value, ast.Constant) \
                    and isinstance(body.value.value, str):
                skipped.update(range(body.lineno, (body.end_lineno or body.lineno) + 1))
            decorators = [d.lineno for d in node.decorator_list]
            skipped.update(range(min(decorators, default=node.lineno), node.lineno))
    return {n for n in range(first, last + 1)
            if n not in skipped and lines[n - 1].strip()
            and not lines[n - 1].lstrip().startswith("#")}


def _char_offsets(tokenizer: Any, ids: list[int], text: str) -> list[int] | None:
    """Where each token starts in `text`, or None when the tokens do not spell `text`."""
    if tokenizer.decode(ids) != text:
        return None
    offsets, at = [], 0
    for token in ids:
        offsets.append(at)
        at += len(tokenizer.decode([token]))
    if at == len(text):
        return offsets
    return [len(tokenizer.decode(ids[:t])) for t in range(len(ids))]  # a character split


def _likeliest(row: Any, actual: int, count: int, tokenizer: Any) -> list[int]:
    """The `count` likeliest tokens other than `actual` that stay on one line."""
    picked: list[int] = []
    for token in row.topk(count + 4).indices.tolist():
        if token != actual and "\n" not in tokenizer.decode([token]):
            picked.append(token)
        if len(picked) == count:
            break
    return picked


def _greedy_line(model: Any, cache: Any, at: int, first_token: int, options: SurpriseOptions,
                 tokenizer: Any) -> list[int]:
    """What the model writes greedily after the window's first `at` tokens and `first_token`,
    up to the first token that holds a line break (the window's cache, cut at `at`)."""
    import torch

    past = _cut(cache, at)
    written: list[int] = []
    token = first_token
    with torch.no_grad():
        for _ in range(options.rewrite_tokens):
            out = model(torch.tensor([[token]]), use_cache=True, **{_cache_name(): past})
            past = out.past_key_values
            token = int(out.logits[0, -1].argmax())
            written.append(token)
            if "\n" in tokenizer.decode([token]):
                break
    return written


def _edited_line(tokenizer: Any, head: list[int], tail: list[int], index: int,
                 window_lines: list[str], rewrite: bool) -> tuple[int, str] | None:
    """(`index`, its new text) when the tokens change exactly that line of the window (the one
    the first token of `tail` falls in), else None."""
    text = tokenizer.decode(head + tail)
    if rewrite:
        line_start = len("".join(window_lines[:index]))
        return index, text[line_start:].split("\n", 1)[0].rstrip("\r")
    new_lines = text.splitlines(keepends=True)
    if len(new_lines) != len(window_lines):
        return None
    changed = [i for i, (a, b) in enumerate(zip(window_lines, new_lines, strict=True)) if a != b]
    if changed != [index]:
        return None
    return index, new_lines[index].rstrip("\r\n")


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _window_gains(model: Any, tokenizer: Any, window: str, start: int, edits: list[LineEdit],
                  ids: list[int], logprobs: Any, cache: Any) -> list[LineEdit]:
    """The edits with `gain` set: the window's log-likelihood with the edit, minus without.
    The tokens before the first that differs count the same both ways, so only the rest is
    run, on the window's key/value cache cut there."""
    import torch

    actual = logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    scored: list[LineEdit] = []
    for edit in edits:
        new_ids = tokenizer(_shifted(edit, start).apply(window), add_special_tokens=False)[
            "input_ids"]
        common, limit = 0, min(len(ids), len(new_ids)) - 1
        while common < limit and ids[common] == new_ids[common]:
            common += 1
        common = max(common, 1)
        rest = new_ids[common:]
        new = float(logprobs[common - 1, rest[0]])
        if len(rest) > 1:
            with torch.no_grad():
                out = model(torch.tensor([rest]), use_cache=True,
                            **{_cache_name(): _cut(cache, common)})
            following = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)
            new += float(following.gather(-1, torch.tensor(rest[1:])[:, None]).sum())
        old = float(actual[common - 1:].sum())
        scored.append(LineEdit(edit.line, edit.old, edit.new, new - old, edit.how))
    return scored


def _cut(cache: Any, length: int) -> Any:
    """A copy of `cache` holding its first `length` tokens."""
    import copy

    past = copy.deepcopy(cache)
    past.crop(length - past.get_seq_length())  # transformers 5: a negative count to drop
    return past


def _cache_name() -> str:
    from agent.local_model import cache_argument

    return cache_argument()


def _shifted(edit: LineEdit, start: int) -> LineEdit:
    """`edit` renumbered for a window whose first line is the file's line `start`."""
    return LineEdit(edit.line - start + 1, edit.old, edit.new, edit.gain, edit.how)
