"""Every model call goes through here: litellm, native tool calling, retries, accounting."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

litellm.suppress_debug_info = True

RETRIED_ERRORS: tuple[type[Exception], ...] = (
    litellm.RateLimitError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.BadGatewayError,
    litellm.APIConnectionError,
    litellm.Timeout,
)
"""Transient failures: retried with exponential backoff. Everything else aborts at once
(authentication, bad request, unknown model, context window exceeded)."""


class ModelError(RuntimeError):
    """The model could not be reached or refused the request; the message says why."""


class LLMConfig(BaseModel):
    """How the model is called."""

    model: str = Field("local/smollm2-135m", description="litellm model name (provider/model).")
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible server.")
    api_key: str | None = Field(None, description="Key for the provider; default: its env var.")
    temperature: float = Field(0.0, description="Sampling temperature (0 = greedy).")
    max_tokens: int = Field(1024, description="Maximum tokens per reply.")
    timeout: float = Field(300.0, description="Seconds before one call is abandoned.")
    retries: int = Field(3, description="Retries of transient errors (429, 5xx, time-outs).")
    backoff_s: float = Field(1.0, description="First backoff delay; doubles each retry.")
    stream: bool = Field(False, description="Stream the reply (text deltas reach listeners).")
    adapter: str | None = Field(None, description="PEFT adapter directory for local models.")
    tool_choice: str | None = Field(
        None, description="`required` forces a tool call each turn; default: the model decides."
    )


@dataclass
class LLMReply:
    """One assistant turn with its accounting."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    token_ids: dict[str, Any] | None = None


class LLMClient:
    """Calls the configured model. Local models (`local/...`) run in-process."""

    def __init__(self, config: LLMConfig):
        self.config = config
        if config.model.startswith("local/"):
            from agent.local_model import register_local_provider

            register_local_provider()

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        on_delta: Callable[[str], None] | None = None,
    ) -> LLMReply:
        """Call the model, retrying transient errors; raise ModelError when it cannot answer."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = self._call(messages, tools, on_delta)
                return self._reply(response, time.monotonic() - started)
            except RETRIED_ERRORS as exc:
                attempt += 1
                if attempt > self.config.retries:
                    raise ModelError(
                        f"{self.config.model} failed after {attempt} attempts: {_short(exc)}"
                    ) from exc
                delay = self.config.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 4)
                time.sleep(delay)
            except litellm.AuthenticationError as exc:
                raise ModelError(
                    f"{self.config.model} rejected the credentials: {_short(exc)}. Set the "
                    "provider's API key variable (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY)."
                ) from exc
            except (litellm.APIError, litellm.BadRequestError, litellm.NotFoundError) as exc:
                raise ModelError(f"{self.config.model} refused the request: {_short(exc)}") from exc

    def _call(self, messages, tools, on_delta) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "timeout": self.config.timeout,
            "num_retries": 0,
        }
        if tools:
            kwargs["tools"] = tools
            if self.config.tool_choice:
                kwargs["tool_choice"] = self.config.tool_choice
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
            kwargs["api_key"] = self.config.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        elif self.config.api_key:
            kwargs["api_key"] = self.config.api_key
        if self.config.adapter:
            kwargs["adapter"] = self.config.adapter
        if not self.config.stream:
            return litellm.completion(**kwargs)
        chunks = []
        stream = litellm.completion(stream=True, stream_options={"include_usage": True}, **kwargs)
        for chunk in stream:
            chunks.append(chunk)
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta and on_delta:
                on_delta(delta)
        return litellm.stream_chunk_builder(chunks, messages=messages)

    def _reply(self, response: Any, latency: float) -> LLMReply:
        message = response.choices[0].message
        tool_calls = [
            {"id": call.id or f"call_{i}", "type": "function",
             "function": {"name": call.function.name or "",
                          "arguments": call.function.arguments or ""}}
            for i, call in enumerate(message.tool_calls or [])
        ]
        usage = getattr(response, "usage", None)
        try:
            cost = float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # models without a price (local, scripted) cost nothing we know of
            cost = 0.0
        token_ids = None
        if self.config.model.startswith("local/"):
            from agent.local_model import token_ids_of

            token_ids = token_ids_of(response)
        return LLMReply(
            content=message.content or None,
            tool_calls=tool_calls,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost_usd=cost,
            latency_s=latency,
            token_ids=token_ids,
        )


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
