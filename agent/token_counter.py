"""How many tokens a request holds, and how many the model reads (its window)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_WINDOW = 128_000
"""Window assumed for a model litellm does not know (a scripted or self-hosted one)."""
MEMO_SIZE = 20_000


def context_window(model: str, override: int | None = None) -> int:
    """Tokens `model` reads: the override, else the model's metadata, else DEFAULT_WINDOW."""
    if override:
        return override
    if model.startswith("local/"):
        return _local_window(model.removeprefix("local/"))
    try:
        import litellm

        info = litellm.get_model_info(model)
        return int(info.get("max_input_tokens") or info.get("max_tokens") or DEFAULT_WINDOW)
    except Exception:  # unknown to litellm's table
        return DEFAULT_WINDOW


def _local_window(spec: str) -> int:
    from agent.models import KNOWN_MODELS, model_cache_dir, model_window

    name = spec.split("+", 1)[0]
    return model_window(model_cache_dir() / name if name in KNOWN_MODELS else
                        Path(name).expanduser())


class TokenCounter:
    """Counts the tokens of a request as the model will see it: a local model's own tokenizer
    and chat template, else litellm's counter for the model (an estimate for unknown ones)."""

    def __init__(self, model: str, adapter: str | None = None):
        self.model = model
        self.adapter = adapter
        self._tokenizer: Any = None
        self._local = model.startswith("local/")
        self._memo: dict[str, int] = {}

    @property
    def tokenizer(self) -> Any:
        """The local model's tokenizer, loaded on first use (None: use litellm's counter)."""
        if self._local and self._tokenizer is None:
            try:
                self._tokenizer = _local_tokenizer(self.model.removeprefix("local/"),
                                                   self.adapter)
            except Exception:  # not pulled yet: the model call will say so; estimate meanwhile
                self._local = False
        return self._tokenizer

    def count(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> int:
        tokenizer = self.tokenizer
        if tokenizer is not None:
            from agent.tool_protocol import render_chat_tokens

            return len(render_chat_tokens(messages, tools or None, tokenizer))
        import litellm

        return int(litellm.token_counter(model=self.model, messages=messages,
                                         tools=tools or None))  # type: ignore[arg-type]

    def count_message(self, message: dict[str, Any]) -> int:
        """One message alone (an estimate of its share of a request: content + framing)."""
        key = json.dumps(message, sort_keys=True)
        if key not in self._memo:
            if len(self._memo) > MEMO_SIZE:
                self._memo.clear()
            tokenizer = self.tokenizer
            if tokenizer is None:
                self._memo[key] = self.count([message], [])
            else:
                text = str(message.get("content") or "") + json.dumps(
                    message.get("tool_calls") or "")
                self._memo[key] = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 4
        return self._memo[key]


def _local_tokenizer(spec: str, adapter: str | None) -> Any:
    """Loaded under `LOAD_LOCK`: a thread that lost transformers' import race would fall back
    to litellm's estimate for good (20 % under on pytest output), and overflow the window."""
    from agent.models import LOAD_LOCK

    with LOAD_LOCK:
        return _load_local_tokenizer(spec, adapter)


@cache
def _load_local_tokenizer(spec: str, adapter: str | None) -> Any:
    from transformers import AutoTokenizer

    from agent.local_model import split_model_spec
    from agent.models import tokenizer_folder

    return AutoTokenizer.from_pretrained(tokenizer_folder(*split_model_spec(spec, adapter)))
