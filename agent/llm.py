"""Every model call goes through here: litellm, native tool calling, retries, accounting."""

from __future__ import annotations

import email.utils
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402

from agent.episode_config import LLMConfig  # noqa: E402
from agent.tool_grammar import PathChoices  # noqa: E402
from trajectories.events import ToolCall, Usage, scrub_text  # noqa: E402

litellm.suppress_debug_info = True

REPLY_CHARS_MAX = 100_000
"""Longest assistant text, and longest arguments of one tool call, kept from a reply; the rest is
cut with a note, so one event stays bounded whatever a provider sends."""
CALL_ID_CHARS_MAX = 256
RETRY_AFTER_MAX_S = 60.0
"""Longest wait a provider's `Retry-After` can impose before the next attempt."""
RetryListener = Callable[[str], None]
"""Told, before each wait, what failed and when the next attempt comes."""


class EmptyReplyError(Exception):
    """The provider answered without any choice: a transient fault, retried like a 5xx."""


class OverloadedError(Exception):
    """The provider said it is overloaded (529): retried like a 5xx."""


OVERLOADED_STATUSES = (529,)
"""HTTP statuses some providers use for "overloaded" that litellm maps to a plain APIError."""
RETRIED_ERRORS: tuple[type[Exception], ...] = (
    litellm.RateLimitError,
    litellm.InternalServerError,
    litellm.ServiceUnavailableError,
    litellm.BadGatewayError,
    litellm.APIConnectionError,
    litellm.Timeout,
    EmptyReplyError,
    OverloadedError,
)
"""Transient failures: retried with exponential backoff, or after the provider's `Retry-After`.
Everything else aborts at once (authentication, bad request, unknown model, context window
exceeded)."""


class ModelError(RuntimeError):
    """The model could not be reached or refused the request; the message says why."""


class ContextOverflowError(ModelError):
    """The provider refused the request as longer than the model's context window."""


@dataclass
class LLMReply:
    """One assistant turn with its accounting."""

    content: str | None
    tool_calls: list[ToolCall]
    usage: Usage
    """Tokens and cost of this call (no steps: the loop counts those)."""
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
        on_retry: RetryListener | None = None,
        wait: Callable[[float], None] = time.sleep,
        paths: PathChoices | None = None,
    ) -> LLMReply:
        """Call the model, retrying transient errors (`on_retry` hears of each, `wait` sleeps
        between them: the session's wait ends early when the user interrupts); raise
        ModelError when it cannot answer. `paths`: the workspace's, which a local model's path
        arguments are kept to (`agent.tool_grammar`)."""
        attempts = self.config.retries + 1
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                try:
                    response = self._call(messages, tools, on_delta, paths)
                    return self._reply(response, time.monotonic() - started)
                except litellm.APIError as exc:
                    if getattr(exc, "status_code", None) in OVERLOADED_STATUSES:
                        raise OverloadedError(f"overloaded ({exc.status_code}): "
                                              f"{_short(exc)}") from exc
                    raise
            except RETRIED_ERRORS as exc:
                if attempt >= attempts:
                    raise ModelError(
                        f"{self.config.model} failed after {attempt} attempts: {_short(exc)}"
                    ) from exc
                delay = self._delay(exc, attempt)
                if on_retry is not None:
                    on_retry(f"{self._what_failed(exc)}; retrying in {delay:.1f} s "
                             f"(attempt {attempt + 1} of {attempts})")
                wait(delay)
            except litellm.AuthenticationError as exc:
                raise ModelError(
                    f"{self.config.model} rejected the credentials: {_short(exc)}. Set the "
                    "provider's API key variable (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY)."
                ) from exc
            except litellm.ContextWindowExceededError as exc:
                raise ContextOverflowError(
                    f"{self.config.model} refused the request: {_short(exc)}") from exc
            except (litellm.APIError, litellm.BadRequestError, litellm.NotFoundError) as exc:
                raise ModelError(f"{self.config.model} refused the request: {_short(exc)}") from exc

    def _delay(self, exc: Exception, attempt: int) -> float:
        """The provider's `Retry-After` (capped at RETRY_AFTER_MAX_S), else exponential backoff
        with jitter."""
        asked = retry_after_s(exc)
        if asked is not None:
            return min(asked, RETRY_AFTER_MAX_S)
        return self.config.backoff_s * 2 ** (attempt - 1) * (1 + random.random() / 4)

    def _what_failed(self, exc: Exception) -> str:
        model = self.config.model
        if isinstance(exc, litellm.RateLimitError):
            return f"rate limited by {model} (429)"
        if isinstance(exc, EmptyReplyError):
            return f"{model} sent a reply with no choices"
        status = getattr(exc, "status_code", None)
        return f"{model} failed ({type(exc).__name__}{f' {status}' if status else ''})"

    @property
    def constrains_paths(self) -> bool:
        """Whether this model's calls are decoded under the tool grammar (local models)."""
        return self.config.tool_grammar in ("paths", "edits") and \
            self.config.model.startswith("local/")

    def _call(self, messages, tools, on_delta, paths: PathChoices | None = None) -> Any:
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
        if self.config.model.startswith("local/") and tools:
            kwargs["tool_grammar"] = (paths.as_dict() if paths else True) \
                if self.config.tool_grammar != "off" else False
            if self.config.tool_grammar == "edits":
                kwargs["edit_choice"] = True
        if self.config.token_ids:
            from agent.served_tokens import REQUEST_FIELDS

            kwargs.update(REQUEST_FIELDS)
        if not self.config.stream or self.config.token_ids:  # a stream drops prompt ids
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
        """The first choice as clean, bounded text: lone surrogates replaced, tool-call ids made
        unique strings, content and each call's arguments capped at REPLY_CHARS_MAX."""
        choices = getattr(response, "choices", None)
        message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices \
            else None
        if message is None:
            raise EmptyReplyError("the reply had no choices")
        content = _text(getattr(message, "content", None))
        calls = getattr(message, "tool_calls", None)
        if self.config.token_ids and not calls:  # a served policy's text protocol
            from agent.served_tokens import text_tool_calls

            text, calls = text_tool_calls(content)
            content = text or ""
        usage = getattr(response, "usage", None)
        try:
            cost = float(litellm.completion_cost(completion_response=response) or 0.0)
        except Exception:  # models without a price (local, scripted) cost nothing we know of
            cost = 0.0
        token_ids = None
        if self.config.model.startswith("local/"):
            from agent.local_model import token_ids_of

            token_ids = token_ids_of(response)
        elif self.config.token_ids:
            from agent.served_tokens import ServedTokensError, served_token_ids

            try:
                token_ids = served_token_ids(response, self.config.model)
            except ServedTokensError as exc:
                raise ModelError(f"{self.config.model} at {self.config.api_base}: {exc}") from exc
        return LLMReply(
            content=_capped(content, "reply") or None,
            tool_calls=_tool_calls(calls),
            usage=Usage(prompt_tokens=_count(getattr(usage, "prompt_tokens", 0)),
                        completion_tokens=_count(getattr(usage, "completion_tokens", 0)),
                        cost_usd=cost),
            latency_s=latency,
            token_ids=token_ids,
        )


def _tool_calls(calls: Any) -> list[ToolCall]:
    """The reply's tool calls with text fields only, whatever JSON types the provider sent (a
    lone call that is not in a list counts as one)."""
    if not calls:
        return []
    out: list[ToolCall] = []
    seen: set[str] = set()
    for index, call in enumerate(calls if isinstance(calls, list | tuple) else [calls]):
        function = getattr(call, "function", None)
        call_id = _text(getattr(call, "id", None))[:CALL_ID_CHARS_MAX] or f"call_{index}"
        while call_id in seen:
            call_id = f"{call_id}_{index}"
        seen.add(call_id)
        arguments = _text(getattr(function, "arguments", None))
        out.append(ToolCall.of(call_id, _text(getattr(function, "name", None))[:CALL_ID_CHARS_MAX],
                               _capped(arguments, "tool-call arguments")))
    return out


def _text(value: Any) -> str:
    """Any reply field as store-safe text: strings as they are, None as "", other JSON as JSON."""
    if value is None:
        return ""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, default=str)
        except (ValueError, TypeError, RecursionError):
            value = f"<unreadable {type(value).__name__}>"
    return scrub_text(value)


def _capped(text: str, what: str) -> str:
    if len(text) <= REPLY_CHARS_MAX:
        return text
    return (f"{text[:REPLY_CHARS_MAX]}\n[apprentice: the model's {what} ran to {len(text):,} "
            f"characters; only the first {REPLY_CHARS_MAX:,} are kept]")


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def retry_after_s(exc: Exception) -> float | None:
    """Seconds the provider asked to wait (`Retry-After`: seconds or an HTTP date, or
    `retry-after-ms`) in the failed response's headers; None when it did not say."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(
        getattr(exc, "response", None), "headers", None)
    try:
        lowered = {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}
    except (TypeError, ValueError):
        return None
    milliseconds = _seconds(lowered.get("retry-after-ms", ""))
    if milliseconds is not None:
        return milliseconds / 1000
    return _seconds(lowered.get("retry-after", ""))


def _seconds(value: str) -> float | None:
    """A Retry-After value: delay-seconds or an HTTP date (as seconds from now)."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "")
