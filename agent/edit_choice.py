"""Whole-edit decoding for local models (`--tool-grammar edits`): the text an edit replaces is
chosen among the runs the tool would accept by the model's probability of each whole run, and
the replacement must change it.

Greedy decoding under the `paths` grammar picks an edit's `old_str` token by token, so the first
token decides: a run of lines that starts like many others (`    return rv`) wins over the line
the model, scored as a whole, prefers. On held-out toolz the SFT model wrote the line it went on
to change best in five tasks, yet sent it in one, and then copied it unchanged in most of its
edits. Here, once a generated call is an edit of a file the model was shown:

1. each run of shown lines that occurs once in the file (per shown line, the shortest such run
   starting there, or else ending there: what `str_replace` accepts) is scored by the model's
   log-probability of writing it, up to the opening of the replacement; the best is taken
   (greedy) or one is drawn (temperature above 0, at that temperature);
2. the rest of the call is generated after it, under the grammar;
3. if the replacement copies the run, the reply diverges where the model is least sure of the
   copy (the largest log-probability of another token over the copied one, among tokens that
   keep the JSON string open and do change the text), and the rest is generated after that.

Scoring reuses the prompt's key/value cache (cropped back after each run), so it costs one short
forward pass per run. The reply's token ids and log-probabilities are those of the final text
under the raw distribution, as for any other reply.
"""

from __future__ import annotations

import json
import math
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
    runs: dict[str, list[str]]
    """File -> the runs of shown lines the tool accepts (each occurs once in the file)."""

    @classmethod
    def of_tools(cls, tools: list[dict[str, Any]], edit_arguments: dict[str, tuple[str, str]],
                 runs: dict[str, list[str]]) -> EditChoices:
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
        return cls(found, runs)


def unique_runs(text: str, shown_runs: list[list[str]]) -> list[str]:
    """Per shown line (blank ones aside), the shortest run of shown lines that starts there and
    occurs once in `text`, or failing that the shortest that ends there; at most
    `MAX_RUN_LINES` long."""
    found: list[str] = []
    for run in shown_runs:
        for index, line in enumerate(run):
            if not line.strip():
                continue
            forward = ["".join(run[index:end])
                       for end in range(index + 1, min(len(run), index + MAX_RUN_LINES) + 1)]
            backward = ["".join(run[start:index + 1])
                        for start in range(index - 1, max(-1, index - MAX_RUN_LINES), -1)]
            found.extend(next(([c] for c in forward + backward if text.count(c) == 1), []))
    return list(dict.fromkeys(found))


def _in_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def refine_edit(local: LocalModel, base_ids: list[int], gen: Generation, choices: EditChoices,
                options: dict[str, Any]) -> Generation:
    """`gen` with its edit re-decided as the module says; `gen` itself when it is not an edit
    of a file with runs to choose from. `base_ids` is the prompt without the reply's prefix;
    `options` are `generate`'s."""
    from agent.local_model import Generation, generate

    edit = _edit_head(gen.text, choices)
    if edit is None:
        return gen
    head, runs, replacement = edit
    opening = f"\", {json.dumps(replacement)}: \""
    tokenizer = local.tokenizer
    temperature = options.get("temperature") or 0.0
    with local.lock:
        scores = _score_continuations(local, base_ids + _ids(tokenizer, head),
                                      [_in_string(run) + opening for run in runs])
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


def _edit_head(text: str, choices: EditChoices) -> tuple[str, list[str], str] | None:
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
        runs = choices.runs.get(file) if isinstance(file, str) else None
        if runs and list(before)[-1] == text_argument:
            return head, runs, replacement
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
    weights = torch.softmax(torch.tensor(scores) / temperature, dim=0)
    return int(torch.multinomial(weights, 1, generator=generator).item())


def _prompt_cache(local: LocalModel, prompt_ids: list[int]) -> tuple[Any, Any]:
    """The key/value cache of `prompt_ids` (the last call's, extended) and the logits after its
    last token; the cache becomes the model's shared one, holding `prompt_ids`."""
    import torch

    from agent.local_model import _reusable_cache

    past = _reusable_cache(local, prompt_ids)
    done = len(local.cached_ids) if past is not None else 0
    with torch.inference_mode():
        out = local.model(torch.tensor([prompt_ids[done:]]), past_key_values=past, use_cache=True)
    local.cache, local.cached_ids = out.past_key_values, list(prompt_ids)
    return local.cache, out.logits[0, -1:].float()


def _forward(local: LocalModel, cache: Any, ids: list[int], last: Any) -> Any:
    """Log-probabilities of each of `ids` (rows) after the cached prompt; the cache is cut back
    to the prompt afterwards."""
    import torch

    with torch.inference_mode():
        out = local.model(torch.tensor([ids]), past_key_values=cache, use_cache=True)
    cache.crop(-len(ids))  # transformers 5: a negative count of tokens to drop
    return torch.log_softmax(torch.cat([last, out.logits[0, :-1].float()]), dim=-1)


def _score_continuations(local: LocalModel, prompt_ids: list[int],
                         continuations: list[str]) -> list[float]:
    """log P(continuation | prompt) for each, one short pass each on the prompt's cache."""
    import torch

    cache, last = _prompt_cache(local, prompt_ids)
    scores = []
    for text in continuations:
        ids = _ids(local.tokenizer, text)
        logprobs = _forward(local, cache, ids, last)
        scores.append(float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum()))
    return scores


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
