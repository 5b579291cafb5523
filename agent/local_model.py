"""The `local` litellm provider: open-weight models running in-process with transformers.

    register_local_provider()
    response = litellm.completion(model="local/smollm2-135m", messages=..., tools=...,
                                  max_tokens=256, temperature=0)

The model part is a known model name (`agent.models.KNOWN_MODELS`, pulled first with
`agent models pull`) or a model directory (`local/runs/sft-1/merged`, `local//abs/path`),
optionally followed by `+<adapter dir>` for a PEFT adapter
(`local/smollm2-135m+runs/grpo-1/adapter`); the `adapter=` keyword does the same. Models are
cached in-process per (model, adapter), loaded once under a lock, and run float32 on the CPU in
eval mode, one generation at a time per model.

Prompts are rendered and completions parsed by `agent.tool_protocol`, the same code that builds
training data. Greedy decoding when `temperature == 0`, sampling otherwise (OpenAI's default 1.0
when unset; `top_p` and `seed` honoured). Generation stops at `</tool_call>`, at end of turn, at
any `stop` string (cut from the text, as OpenAI does) or after `max_tokens` (default 512, never
past the context window; a prompt that fills the window raises ContextWindowExceededError).

Token ids of every call, for training, are on the returned message:

    token_ids_of(response) == response.choices[0].message.provider_specific_fields["local_tokens"]
    == {"prompt_ids": [...], "completion_ids": [...], "completion_logprobs": [...],
        "model_path": "...", "adapter_path": None}

`completion_ids` are the ids generated, end-of-turn or stop tokens included (nothing is cut);
`completion_logprobs[i]` is the log-probability of `completion_ids[i]` under the model's raw
distribution (temperature 1, before top-p). Non-streaming responses also carry it as
`response._hidden_params["local_tokens"]`. When streaming, it arrives on a closing chunk's
`choices[0].delta.provider_specific_fields`, and `litellm.stream_chunk_builder(chunks)` carries it
onto the built message, so `token_ids_of` works on that too.

Streaming yields the free text as it is generated (holding back anything that may be the start of
`<tool_call>` or a stop string) and, in the final chunks, the tool calls (one per chunk), the
usage and the token ids; an abandoned stream still finishes its generation in the background.

Cost is 0: every `local/...` model is registered with litellm as free, with its context window
(`litellm.get_model_info("local/smollm2-135m")["max_input_tokens"] == 8192`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
from litellm import CustomLLM  # noqa: E402
from litellm.types.utils import GenericStreamingChunk, ModelResponse  # noqa: E402

from agent.edit_choice import EditChoices, generate_with_edit_choice  # noqa: E402
from agent.models import (  # noqa: E402
    KNOWN_MODELS,
    LOAD_LOCK,
    known_adapter,
    model_window,
    resolve_model_path,
    tokenizer_folder,
)
from agent.tool_grammar import (  # noqa: E402
    PathChoices,
    TestChoices,
    ToolCallConstraint,
    tool_call_grammar,
)
from agent.tool_protocol import (  # noqa: E402
    TOOL_CALL_OPEN,
    TOOL_CALL_STOP,
    parse_tool_calls,
    render_chat_tokens,
)

logger = logging.getLogger(__name__)
PROVIDER = "local"
TOKENS_FIELD = "local_tokens"
DEFAULT_MAX_TOKENS = 512
PREFIX_CACHE_MIN_TOKENS = 16


@dataclass
class LocalModel:
    """A loaded model + tokenizer; `lock` serialises generation on it."""

    model: Any
    tokenizer: Any
    model_path: Path
    adapter_path: Path | None
    context_window: int
    lock: threading.Lock
    cached_ids: list[int] = field(default_factory=list)
    """Tokens whose attention keys/values are in `cache` (the last call's prompt + reply)."""
    cache: Any = None


@dataclass
class Generation:
    """One completion: its text and the exact tokens behind it."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_logprobs: list[float]
    finish_reason: str  # "stop" or "length"

    def token_record(self, local: LocalModel) -> dict[str, Any]:
        """The `local_tokens` entry put on responses."""
        return {
            "prompt_ids": self.prompt_ids,
            "completion_ids": self.completion_ids,
            "completion_logprobs": self.completion_logprobs,
            "model_path": str(local.model_path),
            "adapter_path": str(local.adapter_path) if local.adapter_path else None,
        }


_loaded: dict[tuple[Path, Path | None], LocalModel] = {}
_load_lock = LOAD_LOCK


def split_model_spec(spec: str, adapter: str | None = None) -> tuple[Path, Path | None]:
    """(model folder, adapter folder) of `name-or-dir[+adapter-dir]` plus an `adapter=` kwarg."""
    base = spec
    if "+" in spec and not Path(spec).expanduser().is_dir():
        base, spec_adapter = spec.split("+", 1)
        if adapter and spec_adapter != adapter:
            raise ValueError(f"two adapters given: {spec_adapter!r} in the model name and "
                             f"adapter={adapter!r}; give one")
        adapter = spec_adapter
    adapter_path = known_adapter(base)
    if adapter and adapter_path:
        raise ValueError(f"{base} already carries its shipped adapter; put {adapter!r} on the "
                         "untrained base instead (local/smollm2-135m+ADAPTER)")
    if adapter:
        adapter_path = Path(adapter).expanduser().resolve()
        if not (adapter_path / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"adapter {adapter} is not a PEFT adapter directory (no adapter_config.json)"
            )
    return resolve_model_path(base), adapter_path


def load_local_model(spec: str, adapter: str | None = None) -> LocalModel:
    """The loaded model for `spec` (see `split_model_spec`), loading it once per process."""
    key = split_model_spec(spec, adapter)
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = _load(*key)
        return _loaded[key]


def _load(model_path: Path, adapter_path: Path | None) -> LocalModel:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise RuntimeError(
            f"local models need the local extras ({exc.name} is missing): "
            "pip install 'apprentice[local]'"
        ) from exc
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(model_path, adapter_path))
    model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    return LocalModel(model, tokenizer, model_path, adapter_path, model_window(model_path),
                      threading.Lock())


def generate(
    local: LocalModel,
    prompt_ids: list[int],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    on_text: Callable[[str], None] | None = None,
    prefix: str = "",
    grammar: str | None = None,
) -> Generation:
    """Generate from `prompt_ids`; `on_text` receives the decoded text so far after each token.
    `prefix` is text already placed at the start of the reply (its tokens end `prompt_ids`);
    `grammar` (`agent.tool_grammar`) constrains the reply, prefix included."""
    import torch
    from transformers import LogitsProcessorList

    if prefix and on_text is not None:
        report = on_text
        on_text = lambda text: report(prefix + text)  # noqa: E731

    _check_window(local, prompt_ids)
    budget = min(max_tokens or DEFAULT_MAX_TOKENS, local.context_window - len(prompt_ids))
    tokenizer = local.tokenizer
    temperature = 1.0 if temperature is None else temperature
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p or 1.0}
    eos = [i for i in {tokenizer.eos_token_id, *_as_list(_eos_of(local.model))} if i is not None]
    stop_strings = [TOOL_CALL_STOP, *(stop or [])]
    streamer = _TokenStreamer(tokenizer, on_text) if on_text else None
    processors = []
    if grammar is not None:
        prefix_ids = tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
        try:
            processors.append(ToolCallConstraint(tokenizer, grammar, len(prompt_ids), prefix_ids))
        except ValueError as exc:  # a grammar that does not compile must not end the episode
            logger.warning("tool-call grammar not used: %s", str(exc)[:300])
    with local.lock, torch.inference_mode():
        if seed is not None:
            torch.manual_seed(seed)
        past = _reusable_cache(local, prompt_ids)
        out = local.model.generate(
            input_ids=torch.tensor([prompt_ids]),
            **{cache_argument(): past},
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=budget,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0],
            stop_strings=stop_strings,
            tokenizer=tokenizer,
            return_dict_in_generate=True,
            output_logits=True,
            streamer=streamer,
            logits_processor=LogitsProcessorList(processors),
            top_k=None,
            **sampling,
        )
        completion_ids = out.sequences[0, len(prompt_ids):].tolist()
        local.cache = getattr(out, cache_argument())
        length = local.cache.get_seq_length() if local.cache is not None else 0
        local.cached_ids = (list(prompt_ids) + completion_ids)[:length]
    logprobs = [
        float(torch.log_softmax(step[0].float(), dim=-1)[token])
        for step, token in zip(out.logits, completion_ids, strict=False)
    ]
    text = prefix + tokenizer.decode(completion_ids, skip_special_tokens=True)
    stopped = bool(completion_ids) and (
        completion_ids[-1] in eos or any(text.endswith(s) for s in stop_strings)
    )
    for s in stop or []:
        if s in text:
            text, stopped = text[: text.index(s)], True
    finish = "stop" if stopped or len(completion_ids) < budget else "length"
    return Generation(text, list(prompt_ids), completion_ids, logprobs, finish)


@functools.cache
def cache_argument() -> str:
    """The name transformers takes and returns a key/value cache by: `cache` since 5.x renamed
    it (`past_key_values` is deprecated there, and goes in 5.40), `past_key_values` before."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def _reusable_cache(local: LocalModel, prompt_ids: list[int]) -> Any:
    """The last call's key/value cache cut to the prefix it shares with `prompt_ids`, so an
    agent step only computes its new tokens (the conversation grows by appending)."""
    shared = 0
    limit = min(len(local.cached_ids), len(prompt_ids) - 1)
    while shared < limit and local.cached_ids[shared] == prompt_ids[shared]:
        shared += 1
    if local.cache is None or shared < PREFIX_CACHE_MIN_TOKENS:
        local.cache, local.cached_ids = None, []
        return None
    surplus = local.cache.get_seq_length() - shared
    if surplus > 0:
        local.cache.crop(-surplus)  # transformers 5: a negative count of tokens to drop
    local.cached_ids = local.cached_ids[:shared]
    return local.cache


def _check_window(local: LocalModel, prompt_ids: list[int]) -> None:
    if len(prompt_ids) >= local.context_window:
        raise litellm.ContextWindowExceededError(
            message=f"the prompt has {len(prompt_ids)} tokens, the context window is "
                    f"{local.context_window}: compact the conversation",
            model=str(local.model_path), llm_provider=PROVIDER,
        )


def token_ids_of(response: Any) -> dict[str, Any] | None:
    """The `local_tokens` record of a local response (ModelResponse, built stream, or chunk)."""
    try:
        choice = response.choices[0]
    except (AttributeError, IndexError, TypeError):
        return None
    holder = getattr(choice, "message", None) or getattr(choice, "delta", None)
    fields = getattr(holder, "provider_specific_fields", None) or {}
    record = fields.get(TOKENS_FIELD)
    if record is None:
        record = (getattr(response, "_hidden_params", None) or {}).get(TOKENS_FIELD)
    return record


class LocalProvider(CustomLLM):
    """litellm custom provider `local`: transformers generation + the text tool protocol."""

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> ModelResponse:
        local, prompt_ids, options = _prepare(model, messages, kwargs)
        gen = _reply(local, prompt_ids, options)
        return _fill_response(kwargs["model_response"], model, local, gen)

    async def acompletion(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)

    def streaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> Iterator[GenericStreamingChunk]:
        # Not a generator itself: bad models and oversized prompts fail at the call, not later.
        local, prompt_ids, options = _prepare(model, messages, kwargs)
        return _stream(local, prompt_ids, options)

    async def astreaming(  # type: ignore[override]
        self, model: str, messages: list, *args: Any, **kwargs: Any
    ) -> AsyncIterator[GenericStreamingChunk]:
        # litellm iterates what this returns, so it is an async generator: errors surface on
        # the first chunk.
        local, prompt_ids, options = await asyncio.to_thread(_prepare, model, messages, kwargs)
        chunks = _stream(local, prompt_ids, options)
        done: Any = object()
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk


def _prepare(
    model: str, messages: list, kwargs: dict[str, Any]
) -> tuple[LocalModel, list[int], dict[str, Any]]:
    """Load the model, render the prompt and map OpenAI parameters onto `generate`."""
    params = dict(kwargs.get("optional_params") or {})
    try:
        local = load_local_model(model, params.pop("adapter", None))
    except (LookupError, ValueError, FileNotFoundError) as exc:
        raise litellm.BadRequestError(message=str(exc), model=model, llm_provider=PROVIDER) from exc
    _register_free(model, local.context_window)
    tools = params.get("tools") if params.get("tool_choice") != "none" else None
    prompt_ids = render_chat_tokens(messages, tools, local.tokenizer)
    required = bool(tools) and params.get("tool_choice") == "required"
    grammar = None
    constrain = params.pop("tool_grammar", True)
    edit_choices = None
    if tools and constrain:
        paths = PathChoices.from_dict(constrain) if isinstance(constrain, dict) else None
        if paths is not None and params.pop("edit_choice", False) and paths.starts:
            edit_choices = EditChoices.of_tools(tools, paths.edit_arguments, paths.starts)
        tests = TestChoices.of_messages(_test_arguments(), messages)
        grammar = tool_call_grammar(tools, required, paths, tests)
    prefix = ""
    if required:
        # The template cannot force a call, so the reply is started with the call's open tag.
        prefix = TOOL_CALL_OPEN + "{\"name\": \""
        prompt_ids = prompt_ids + local.tokenizer.encode(prefix, add_special_tokens=False)
    _check_window(local, prompt_ids)
    stop = params.get("stop")
    options = {
        "prefix": prefix,
        "max_tokens": params.get("max_completion_tokens") or params.get("max_tokens"),
        "temperature": params.get("temperature"),
        "top_p": params.get("top_p"),
        "seed": params.get("seed"),
        "stop": [stop] if isinstance(stop, str) else stop,
        "grammar": grammar,
        "edit_choices": edit_choices,
    }
    return local, prompt_ids, options


def _reply(local: LocalModel, prompt_ids: list[int], options: dict[str, Any],
           on_text: Callable[[str], None] | None = None) -> Generation:
    """`generate`, then (with `edit_choices`) the edit it wrote re-decided whole
    (`agent.edit_choice`)."""
    generating = {key: value for key, value in options.items() if key != "edit_choices"}
    choices = options.get("edit_choices")
    if choices is None:
        return generate(local, prompt_ids, on_text=on_text, **generating)
    prefix = options.get("prefix") or ""
    base_ids = prompt_ids[: len(prompt_ids) - len(local.tokenizer.encode(
        prefix, add_special_tokens=False))] if prefix else list(prompt_ids)
    return generate_with_edit_choice(local, base_ids, prompt_ids, choices, generating, on_text)


def _stream(
    local: LocalModel, prompt_ids: list[int], options: dict[str, Any]
) -> Iterator[GenericStreamingChunk]:
    """Text deltas while generating (in a worker thread), then the calls, usage and tokens."""
    texts: queue.Queue[str | None] = queue.Queue()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["gen"] = _reply(local, prompt_ids, options, texts.put)
        except BaseException as exc:  # re-raised in the consumer
            result["error"] = exc
        finally:
            texts.put(None)

    worker = threading.Thread(target=run, name="local-model-generate", daemon=True)
    worker.start()
    sent = ""
    while (text := texts.get()) is not None:
        visible = _streamable_prefix(text, options.get("stop"))
        if len(visible) > len(sent):
            yield _chunk(visible[len(sent):])
            sent = visible
    worker.join()
    if "error" in result:
        raise result["error"]
    yield from _final_chunks(result["gen"], local, sent)


def register_local_provider() -> None:
    """Make `local/...` models callable through litellm (idempotent)."""
    if not any(item.get("provider") == PROVIDER for item in litellm.custom_provider_map):
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": _provider})
    for known in KNOWN_MODELS.values():
        _register_free(known.name, known.context_window)


_provider = LocalProvider()
_registered: set[str] = set()


def _register_free(model: str, window: int) -> None:
    """Tell litellm that `local/<model>` costs nothing and how large its window is."""
    if model in _registered:
        return
    litellm.register_model({f"{PROVIDER}/{model}": {
        "max_tokens": window, "max_input_tokens": window, "max_output_tokens": window,
        "input_cost_per_token": 0.0, "output_cost_per_token": 0.0,
        "cache_creation_input_token_cost": 0.0, "cache_read_input_token_cost": 0.0,
        "litellm_provider": PROVIDER, "mode": "chat", "supports_function_calling": True,
    }})
    _registered.add(model)


def _fill_response(
    response: ModelResponse, model: str, local: LocalModel, gen: Generation
) -> ModelResponse:
    content, calls = parse_tool_calls(gen.text)
    choice = response.choices[0]
    message = choice.message  # type: ignore[union-attr]
    message.content = content if content or not calls else None
    if calls:
        message.tool_calls = [litellm.ChatCompletionMessageToolCall(**call) for call in calls]
    record = gen.token_record(local)
    message.provider_specific_fields = {TOKENS_FIELD: record}
    choice.finish_reason = "tool_calls" if calls else gen.finish_reason  # type: ignore[assignment]
    response.model = model
    response.created = int(time.time())
    response.usage = litellm.Usage(  # type: ignore[attr-defined]
        prompt_tokens=len(gen.prompt_ids), completion_tokens=len(gen.completion_ids),
        total_tokens=len(gen.prompt_ids) + len(gen.completion_ids),
    )
    response._hidden_params[TOKENS_FIELD] = record
    return response


def _streamable_prefix(text: str, stop: list[str] | None = None) -> str:
    """The part of the text so far that is surely free text: before any `<tool_call>` or stop
    string, holding back an end that may be the start of one."""
    markers = [TOOL_CALL_OPEN, *(stop or [])]
    cut = min((i for i in (text.find(m) for m in markers) if i >= 0), default=len(text))
    if cut == len(text):
        held = max((k for m in markers for k in range(1, len(m)) if text.endswith(m[:k])),
                   default=0)
        cut -= held
    return text[:cut].strip()


def _chunk(text: str, **extra: Any) -> GenericStreamingChunk:
    chunk = GenericStreamingChunk(
        text=text, tool_use=None, is_finished=False, finish_reason="", usage=None, index=0
    )
    chunk.update(extra)  # type: ignore[typeddict-item]
    return chunk


def _final_chunks(gen: Generation, local: LocalModel, sent: str) -> Iterator[GenericStreamingChunk]:
    content, calls = parse_tool_calls(gen.text)
    rest = content[len(sent):] if content.startswith(sent) else ""
    for i, call in enumerate(calls[:-1]):
        yield _chunk(rest if i == 0 else "", tool_use={**call, "index": i})
        rest = ""
    yield _chunk(
        rest,
        tool_use={**calls[-1], "index": len(calls) - 1} if calls else None,
        is_finished=True,
        finish_reason="tool_calls" if calls else gen.finish_reason,
        usage={"prompt_tokens": len(gen.prompt_ids),
               "completion_tokens": len(gen.completion_ids),
               "total_tokens": len(gen.prompt_ids) + len(gen.completion_ids)},
        provider_specific_fields={TOKENS_FIELD: gen.token_record(local)},
    )


class _TokenStreamer:
    """transformers streamer that reports the decoded completion after each new token."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        self.on_text(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def end(self) -> None:
        pass


def _eos_of(model: Any) -> Any:
    config = getattr(model, "generation_config", None)
    return getattr(config, "eos_token_id", None)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@functools.cache
def _test_arguments() -> dict[str, tuple[str, ...]]:
    """Per tool of the agent's, its arguments naming a test (`Tool.test_arguments`)."""
    from tools.control import default_tools

    return {tool.name: tool.test_arguments for tool in default_tools() if tool.test_arguments}
