"""The scripted server answering as a vLLM OpenAI-compatible server does when asked for token
ids (`agent.served_tokens`): a stand-in for `trl vllm-serve` in tests of GRPO's served rollouts.

It replays a script like `agent.scripted_model.ScriptedModelServer` and, when the request asks
(`return_token_ids`, `logprobs` with `return_tokens_as_token_ids`), adds what vLLM adds:

    prompt_token_ids                   the request's messages and tools rendered by `tokenizer`'s
                                       chat template (`agent.tool_protocol.render_chat_tokens`)
    choices[0].token_ids               the reply as that template renders it after the prompt
    choices[0].logprobs.content[i]     {"token": "token_id:<id>", "logprob": <made up, < 0>}

With `tool_choice: none` the reply is those tokens' text, the calls in it unparsed (as vLLM
sends a model's text); otherwise the calls are parsed, as with a tool parser.

`served` keeps each answer's ids and logprobs, which a test compares with what training got.
"""

from __future__ import annotations

from typing import Any

from agent.scripted_model import ScriptedModelServer
from agent.tool_protocol import render_chat_tokens


def made_up_logprob(position: int, token: int) -> float:
    """A distinct, deterministic log-probability for the `position`-th generated token."""
    return -((position * 7919 + token) % 997 + 1) / 1000


class ScriptedVLLMServer(ScriptedModelServer):
    """`ScriptedModelServer` + vLLM's token ids and logprobs, tokenised by `tokenizer`."""

    def __init__(self, script: list[dict[str, Any]], tokenizer: Any, model: str = "policy"):
        super().__init__(script, model=model)
        self.tokenizer = tokenizer
        self.served: list[dict[str, list[Any]]] = []

    def _completion(self, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        if not response["choices"]:
            return response
        choice = response["choices"][0]
        messages, tools = request["messages"], request.get("tools")
        prompt = render_chat_tokens(messages, tools, self.tokenizer)
        reply = {k: v for k, v in choice["message"].items() if v is not None}
        whole = render_chat_tokens([*messages, reply], tools, self.tokenizer,
                                   add_generation_prompt=False)
        completion = whole[len(prompt):] if whole[:len(prompt)] == prompt else \
            self.tokenizer.encode(str(reply.get("content") or ""), add_special_tokens=False)
        logprobs = [made_up_logprob(i, t) for i, t in enumerate(completion)]
        if request.get("tool_choice") == "none":  # the model's text as it is, calls unparsed
            choice["message"] = {"role": "assistant", "content": self.tokenizer.decode(
                completion, skip_special_tokens=True).strip()}
            choice["finish_reason"] = "stop"
        with self._lock:
            self.served.append({"prompt_ids": prompt, "completion_ids": completion,
                                "logprobs": logprobs})
        if request.get("return_token_ids"):
            response["prompt_token_ids"] = prompt
            choice["token_ids"] = completion
        if request.get("logprobs"):
            as_ids = bool(request.get("return_tokens_as_token_ids"))
            choice["logprobs"] = {"content": [
                {"token": f"token_id:{t}" if as_ids else self.tokenizer.decode([t]),
                 "logprob": lp, "bytes": None, "top_logprobs": []}
                for t, lp in zip(completion, logprobs, strict=True)]}
        response["usage"].update(prompt_tokens=len(prompt), completion_tokens=len(completion),
                                 total_tokens=len(prompt) + len(completion))
        return response
