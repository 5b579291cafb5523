"""Constrained decoding of tool calls for local models: a call is generated under a grammar made
from the tools' JSON schemas, so it is always a well-formed call of a known tool.

Small models write malformed calls: the shipped 135M model's calls on a real library were
27-40 % unparsable JSON, unknown tools or missing arguments, each a lost step. With the grammar
(llguidance, the engine behind llama.cpp's and vLLM's structured outputs), the reply to a request
with tools is either one `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` whose name is a
tool's and whose arguments match that tool's schema (required keys present, types right, no
unknown keys, keys in the schema's order), or, when the model may answer in prose
(`tool_choice` auto), text that does not start a call. With `tool_choice: required` only the call
is allowed. What the model writes inside the strings (a path, an `old_str`) stays its own.

The mask applies to sampling only: the logprobs recorded for training stay those of the raw
distribution, and the text is rendered and parsed by `agent.tool_protocol` as before, so the
same tokens are seen in training and at inference.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agent.tool_protocol import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_tokenizers: dict[int, Any] = {}
_tokenizers_lock = threading.Lock()


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one call object `{"name": ..., "arguments": {...}}` of any of `tools`."""
    variants = []
    for tool in tools:
        function = tool.get("function", tool)
        parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
        parameters.setdefault("type", "object")
        parameters.setdefault("additionalProperties", False)
        variants.append({
            "type": "object",
            "properties": {"name": {"const": function["name"]}, "arguments": parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    return {"anyOf": variants}


def tool_call_grammar(tools: list[dict[str, Any]], required: bool) -> str:
    """The grammar (llguidance's Lark syntax) of a reply: one call, or (unless `required`) prose
    that does not begin with `<`."""
    call = f"call: {json.dumps(TOOL_CALL_OPEN)} %json {json.dumps(call_schema(tools))} " \
           f"{json.dumps(TOOL_CALL_CLOSE)}"
    if required:
        return f"start: call\n{call}\n"
    return f"start: call | PROSE\nPROSE: /[^<\\s][^\\x00]*/\n{call}\n"


def _ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a transformers tokenizer (built once per tokenizer)."""
    import llguidance.hf

    with _tokenizers_lock:
        key = id(tokenizer)
        if key not in _tokenizers:
            _tokenizers[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer))
        return _tokenizers[key][1]


class ToolCallConstraint:
    """A transformers logits processor that masks every token the grammar does not allow next.

    `prompt_length` tokens of `input_ids` are the prompt; `prefix_ids` (the end of the prompt,
    text already placed at the start of the reply) are fed to the grammar first."""

    def __init__(self, tokenizer: Any, grammar: str, prompt_length: int,
                 prefix_ids: list[int] | None = None):
        import llguidance

        self.matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer),
                                            llguidance.grammar_from("lark", grammar))
        if self.matcher.is_error():
            raise ValueError(f"tool-call grammar rejected: {self.matcher.get_error()}")
        if prefix_ids and self.matcher.try_consume_tokens(prefix_ids) != len(prefix_ids):
            raise ValueError("the reply's prefix does not start a tool call")
        self.prompt_length = prompt_length
        self.consumed = 0
        self.bitmask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import llguidance.torch

        generated = input_ids[0, self.prompt_length:].tolist()
        fresh = generated[self.consumed:]
        if fresh:
            self.matcher.consume_tokens(fresh)
            self.consumed = len(generated)
        if self.matcher.is_error():  # cannot happen under the mask; leave the scores alone
            return scores
        if self.bitmask is None:  # sized by the logits (a model may pad its vocabulary)
            self.bitmask = llguidance.torch.allocate_token_bitmask(1, scores.shape[-1])
        llguidance.torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        llguidance.torch.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        return scores

