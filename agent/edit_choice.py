"""Whole-edit decoding for local models (`--tool-grammar edits`): the text an edit replaces
starts at the shown line the model most likely writes whole, among the runs the tool would
accept, and the replacement must change it.

Greedy decoding under the `paths` grammar picks an edit's `old_str` token by token, so its first
tokens decide: four spaces begin most lines, and the SFT model wrote `    return rv` in toolz
tasks whose bug sat two lines higher, or a line that occurs twice, which the tool refuses. Yet
given the right line, its first changed token was its likeliest at that point in 5 of the 9
toolz tasks with one changed line. Here, once a generated call opens an edit's `old_str` in a
file the model was shown:

1. each shown line that starts a run occurring once in the file (what `str_replace` accepts)
   is scored by the model's log-probability of writing that whole line; the best start is
   taken (greedy) or one is drawn (temperature above 0, at that temperature), and the run goes
   on, past the shortest unique one, for as long as the model would rather copy the next line
   than close the string (at most `MAX_RUN_LINES`);
2. the rest of the call is generated after it, under the grammar;
3. if the replacement copies the run, the reply diverges where the model is least sure of the
   copy (the largest log-probability of another token over the copied one, among tokens that
   keep the JSON string open and do change the text), and the rest is generated after that.

Scoring reuses the prompt's key/value cache (cropped back after each pass): one short forward
pass per start line. The reply's token ids and log-probabilities are those of the final text
under the raw distribution, as for any other reply.

Measured (README, *Whole-edit decoding*): it does not raise held-out pass@1, so it is opt-in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.tool_protocol import parse_tool_calls

if TYPE_CHECKING:
    from agent.local_model import Generation, LocalModel

MAX_RUN_LINES = 8
"""A run longer than this to be unique is not offered (the tool's hint is the way out)."""
DIVERGE_TOP_K = 20
"""Alternatives considered at each position of a copied replacement."""


@dataclass
class EditChoices:
    """What whole-edit decoding needs: the editing tools and, per file, the runs to choose from."""

    edit_arguments: dict[str, tuple[str, str, str]]
    """Editing tool -> its (file, replaced text, replacement) arguments."""
    starts: dict[str, list[tuple[list[str], int]]]
    """File -> where the runs of shown lines the tool accepts start (`edit_starts`)."""

    @classmethod
    def of_tools(cls, tools: list[dict[str, Any]], edit_arguments: dict[str, tuple[str, str]],
                 starts: dict[str, list[tuple[list[str], int]]]) -> EditChoices:
        """For the editing tools among `tools` whose replaced text is followed, in the schema,
        by the replacement (the argument after it)."""
        found = {}
        for tool in tools:
            function = tool.get("function", tool)
            names = list((function.get("parameters") or {}).get("properties") or {})
            file_argument, text_argument = edit_arguments.get(function["name"], ("", ""))
            if text_argument in names[:-1]:
                found[function["name"]] = (file_argument, text_argument,
                                           names[names.index(text_argument) + 1])
        return cls(found, starts)

    def stops(self) -> list[str]:
        """Where a generated edit is cut short: the opening of its replaced text, which is
        decided here instead."""
        return [f"{json.dumps(text)}: \"" for _, text, _ in self.edit_arguments.values()]


def edit_starts(text: str, shown_runs: list[list[str]]) -> list[tuple[list[str], int]]:
    """Per shown line (blank ones aside) that starts a run of shown lines occurring once in
    `text`: the shown lines from it (at most `MAX_RUN_LINES`) and how many of them the
    shortest such run takes. Every longer run from there occurs once too."""
    starts = []
    for run in shown_runs:
        for index, line in enumerate(run):
            if not line.strip():
                continue
            lines = run[index:index + MAX_RUN_LINES]
            shortest = next((n for n in range(1, len(lines) + 1)
                             if text.count("".join(lines[:n])) == 1), None)
            if shortest is not None:
                starts.append((lines, shortest))
    return starts


def _in_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def generate_with_edit_choice(local: LocalModel, base_ids: list[int], prompt_ids: list[int],
                              choices: EditChoices, options: dict[str, Any],
                              on_text: Callable[[str], None] | None = None) -> Generation:
    """`generate` (`options` are its arguments), with an edit of a file with runs re-decided
    as the module says. The reply stops at the opening of an edit's replaced text; a reply cut
    there that is not such an edit (its text only looked like one) is generated again whole.
    `base_ids` is `prompt_ids` without the reply's prefix."""
    from agent.local_model import generate

    stops = [*(options.get("stop") or []), *choices.stops()]
    gen = generate(local, prompt_ids, on_text=on_text, **{**options, "stop": stops})
    for stop in ("", *choices.stops()):
        edit = _edit_head(gen.text + stop, choices)
        if edit is not None:
            return _refine_edit(local, base_ids, edit, options)
    cut = local.tokenizer.decode(gen.completion_ids, skip_special_tokens=True)
    if any(stop in cut for stop in choices.stops()):
        return generate(local, prompt_ids, on_text=on_text, **options)
    return gen


def _refine_edit(local: LocalModel, base_ids: list[int],
                 edit: tuple[str, list[tuple[list[str], int]], str],
                 options: dict[str, Any]) -> Generation:
    from agent.local_model import Generation, generate

    head, starts, replacement = edit
    opening = f"\", {json.dumps(replacement)}: \""
    tokenizer = local.tokenizer
    temperature = options.get("temperature") or 0.0
    with local.lock:
        runs, scores = _score_runs(local, base_ids + _ids(tokenizer, head), starts)
    run = runs[_pick(scores, temperature, options.get("seed"))]
    start = head + _in_string(run) + opening
    rest = {**options, "on_text": None}
    refined = generate(local, base_ids + _ids(tokenizer, start),
                       **_budget(rest, tokenizer, options.get("prefix") or "", start))
    replaced = _replacement(refined.text, replacement)
    if replaced == run:
        with local.lock:
            forced = _diverge(local, base_ids + _ids(tokenizer, start), _in_string(run))
        if forced is not None:
            start += forced
            refined = generate(local, base_ids + _ids(tokenizer, start),
                               **_budget(rest, tokenizer, options.get("prefix") or "", start))
    prefix = options.get("prefix") or ""
    completion = _ids(tokenizer, refined.text[len(prefix):])
    prompt_ids = base_ids + _ids(tokenizer, prefix)
    with local.lock:
        logprobs = _logprobs(local, prompt_ids, completion)
    return Generation(refined.text, prompt_ids, completion, logprobs, refined.finish_reason)


def _edit_head(text: str, choices: EditChoices
               ) -> tuple[str, list[tuple[list[str], int]], str] | None:
    """(the reply up to the opening of an edit's replaced text, the runs it may be, the
    replacement's argument) when `text` starts an edit of a file with runs; else None. The
    rest of the reply does not matter: it may be cut short."""
    for name, (file_argument, text_argument, replacement) in choices.edit_arguments.items():
        start = f'{{"name": {json.dumps(name)}, "arguments": {{'
        key = f'{json.dumps(text_argument)}: "'
        if start not in text or key not in text:
            continue
        head = text[: text.index(key) + len(key)]
        try:
            before = json.loads(head[head.index(start) + len(start) - 1:] + '"}')
        except json.JSONDecodeError:
            continue
        file = before.get(file_argument) if isinstance(before, dict) else None
        starts = choices.starts.get(file) if isinstance(file, str) else None
        if starts and list(before)[-1] == text_argument:
            return head, starts, replacement
    return None


def _budget(options: dict[str, Any], tokenizer: Any, prefix: str, start: str) -> dict[str, Any]:
    """`options` for generating after `start`: the reply's token budget less what `start` adds
    to the original prefix."""
    from agent.local_model import DEFAULT_MAX_TOKENS

    spent = len(_ids(tokenizer, start)) - len(_ids(tokenizer, prefix))
    budget = options.get("max_tokens") or DEFAULT_MAX_TOKENS
    return {**options, "prefix": start, "max_tokens": max(1, budget - spent)}


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _replacement(text: str, argument: str) -> str | None:
    _, calls = parse_tool_calls(text)
    try:
        value = json.loads(calls[0]["function"]["arguments"]).get(argument) if calls else None
    except (json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _pick(scores: list[float], temperature: float, seed: int | None) -> int:
    if temperature <= 0:
        return max(range(len(scores)), key=scores.__getitem__)
    import torch

    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:  # a fresh generator's default seed is fixed: every draw would be the same
        generator.seed()
    weights = torch.softmax(torch.tensor(scores) / temperature, dim=0)
    return int(torch.multinomial(weights, 1, generator=generator).item())


def _prompt_cache(local: LocalModel, prompt_ids: list[int]) -> tuple[Any, Any]:
    """The key/value cache of `prompt_ids` (the last call's, extended) and the logits after its
    last token; the cache becomes the model's shared one, holding `prompt_ids`."""
    import torch

    from agent.local_model import _reusable_cache, cache_argument

    past = _reusable_cache(local, prompt_ids)
    done = len(local.cached_ids) if past is not None else 0
    with torch.inference_mode():
        out = local.model(torch.tensor([prompt_ids[done:]]), use_cache=True,
                          **{cache_argument(): past})
    local.cache, local.cached_ids = getattr(out, cache_argument()), list(prompt_ids)
    return local.cache, out.logits[0, -1:].float()


def _forward(local: LocalModel, cache: Any, ids: list[int], last: Any) -> Any:
    """Log-probabilities of the next token after the cached prompt and after each of `ids`
    (len(ids) + 1 rows); the cache is cut back to the prompt afterwards."""
    import torch

    from agent.local_model import cache_argument

    with torch.inference_mode():
        out = local.model(torch.tensor([ids]), use_cache=True, **{cache_argument(): cache})
    cache.crop(-len(ids))  # transformers 5: a negative count of tokens to drop
    return torch.log_softmax(torch.cat([last, out.logits[0].float()]), dim=-1)


def _score_runs(local: LocalModel, prompt_ids: list[int],
                starts: list[tuple[list[str], int]]) -> tuple[list[str], list[float]]:
    """Per start, the run the model would write from there and log P(its first line |
    prompt), from one pass over the start's lines. The run ends at the first line end, past
    the shortest unique run, where the model would rather close the string than go on
    copying (greedy decoding's choice there); at the last line offered otherwise."""
    import torch

    tokenizer = local.tokenizer
    close = _ids(tokenizer, '",')
    cache, last = _prompt_cache(local, prompt_ids)
    runs: list[str] = []
    scores: list[float] = []
    for lines, shortest in starts:
        whole = tokenizer(_in_string("".join(lines)), add_special_tokens=False,
                          return_offsets_mapping=True)
        ids, ends = whole["input_ids"], [end for _, end in whole["offset_mapping"]]
        logprobs = _forward(local, cache, ids, last)
        taken = logprobs[torch.arange(len(ids)), torch.tensor(ids)]
        first = len(_in_string(lines[0]))
        scores.append(float(taken[[i for i, end in enumerate(ends) if end <= first]].sum()))
        count = len(lines)
        for candidate in range(shortest, len(lines)):
            length = len(_in_string("".join(lines[:candidate])))
            if len(close) == 1 and length in ends:
                boundary = ends.index(length) + 1
                if logprobs[boundary, close[0]] >= logprobs[boundary, ids[boundary]]:
                    count = candidate
                    break
        runs.append("".join(lines[:count]))
    return runs, scores


def _diverge(local: LocalModel, prompt_ids: list[int], copied: str) -> str | None:
    """The text of the copy up to the position where another token is likeliest relative to
    the copied one, plus that token; None when no token there keeps the string open and
    changes it."""
    import torch

    tokenizer = local.tokenizer
    ids = _ids(tokenizer, copied)
    cache, last = _prompt_cache(local, prompt_ids)
    logprobs = _forward(local, cache, ids, last)
    best: tuple[float, str] | None = None
    for position, token in enumerate(ids):
        before = tokenizer.decode(ids[:position])
        remaining = copied[len(before):]
        top = torch.topk(logprobs[position], DIVERGE_TOP_K)
        for value, candidate in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            text = tokenizer.decode([candidate])
            if candidate == token or not _keeps_string(text) or remaining.startswith(text):
                continue
            gap = value - float(logprobs[position, token])
            if best is None or gap > best[0]:
                best = (gap, before + text)
            break
    return best[1] if best is not None and not math.isinf(best[0]) else None


def _keeps_string(text: str) -> bool:
    """Whether `text` can follow inside a JSON string without ending or breaking it."""
    return bool(text) and '"' not in text and "\\" not in text and \
        all(ord(c) >= 0x20 for c in text)


def _logprobs(local: LocalModel, prompt_ids: list[int], completion: list[int]) -> list[float]:
    """Each completion token's log-probability under the raw distribution."""
    if not completion:
        return []
    cache, last = _prompt_cache(local, prompt_ids)
    logprobs = _forward(local, cache, completion, last)
    return [float(logprobs[i, t]) for i, t in enumerate(completion)]
