"""Token ids and logprobs of a call to a vLLM OpenAI-compatible server, for training.

Asked for with `LLMConfig.token_ids` (GRPO rollouts from a served policy: `trl vllm-serve`,
or `vllm serve` 0.10.2 or later), each chat completion carries what the model read and wrote:

    request   logprobs=True,
              extra_body={"return_tokens_as_token_ids": True, "return_token_ids": True}
    response  prompt_token_ids                      the rendered prompt, as the server tokenised it
              choices[0].token_ids                  the generated ids
              choices[0].logprobs.content[i]        {"token": "token_id:123", "logprob": -0.4}

`served_token_ids` turns that into the record an in-process model puts on its replies
(`agent.local_model.Generation.token_record`), so the recorder, `rebuild_calls` and
`finetune.rollout.episode_sample` read both alike. The logprobs' `token_id:N` strings are the
completion when present (each id with its own logprob); `token_ids` otherwise.

With `tool_choice: none` the server renders the tools into the prompt and sends the model's text
as it is; `text_tool_calls` then reads the calls from it with the tool-call text protocol, as
for in-process models (`agent.tool_protocol`), so the next prompt renders the very tokens the
model generated (a server that parses them itself, `tool_choice: required`, generates a JSON
list the chat template renders differently, and those tokens could not train).
"""

from __future__ import annotations

from typing import Any

import litellm

from agent.tool_protocol import TOOL_CALL_OPEN, parse_tool_calls

TOKEN_ID_PREFIX = "token_id:"
REQUEST_FIELDS: dict[str, Any] = {
    "logprobs": True,
    "extra_body": {"return_tokens_as_token_ids": True, "return_token_ids": True},
}
"""What a call adds to its litellm request to get token ids back (vLLM >= 0.10.2)."""


class ServedTokensError(ValueError):
    """The server's reply lacks the token ids asked for (not vLLM, or too old)."""


def served_token_ids(response: Any, model: str) -> dict[str, Any]:
    """The token record (`prompt_ids`, `completion_ids`, `completion_logprobs`, `model_path`,
    `adapter_path`) of a non-streamed vLLM chat completion; ServedTokensError when the reply
    does not carry them."""
    prompt = _field(response, "prompt_token_ids")
    choices = _field(response, "choices") or []
    if not choices:
        raise ServedTokensError("the reply has no choices")
    choice = choices[0]
    content = _field(_field(choice, "logprobs"), "content") or []
    ids: list[int] = []
    logprobs: list[float] = []
    for entry in content:
        token = str(_field(entry, "token") or "")
        if not token.startswith(TOKEN_ID_PREFIX):
            ids, logprobs = [], []
            break
        ids.append(int(token[len(TOKEN_ID_PREFIX):]))
        logprobs.append(float(_field(entry, "logprob") or 0.0))
    listed = _field(choice, "token_ids")
    if listed is None:  # litellm keeps fields it does not know here too
        listed = (_field(choice, "provider_specific_fields") or {}).get("token_ids")
    if not isinstance(prompt, list) or (listed is None and not ids):
        raise ServedTokensError(
            "the server sent no prompt_token_ids/token_ids: serve the policy with vLLM 0.10.2 "
            "or later (`trl vllm-serve` or `vllm serve`), which honours return_token_ids")
    if not ids:
        ids = [int(i) for i in listed or []]
        logprobs = [float(_field(e, "logprob") or 0.0) for e in content][: len(ids)]
    return {"prompt_ids": [int(i) for i in prompt], "completion_ids": ids,
            "completion_logprobs": logprobs, "model_path": model, "adapter_path": None}


def text_tool_calls(content: str | None) -> tuple[str | None, list[Any]]:
    """The reply's free text and the `<tool_call>` blocks in it as litellm tool calls."""
    if not content or TOOL_CALL_OPEN not in content:
        return content, []
    text, calls = parse_tool_calls(content)
    return text or None, [litellm.ChatCompletionMessageToolCall(**call) for call in calls]


def _field(value: Any, name: str) -> Any:
    """`value.name` or `value[name]` (litellm objects and plain dicts), else None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)
