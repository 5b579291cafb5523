"""The local-model layer: the embedded-model registry, the text tool protocol, and the `local`
litellm provider with a tiny random Llama and (marked `model`) the real SmolLM2."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.models import (
    KNOWN_MODELS,
    ModelNotFoundError,
    list_models,
    pull_model,
    resolve_model_path,
)
from agent.tool_protocol import (
    TOOL_CALL_OPEN,
    format_tool_call,
    parse_tool_calls,
    render_chat,
    render_chat_tokens,
    render_chat_with_mask,
    template_supports_tools,
)

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "shell",
            "description": "Run a bash command in the repository.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    }
]

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "List the files."},
    {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "shell", "arguments": '{"command": "ls"}'}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "README.md\ncalc.py"},
    {"role": "assistant", "content": "There are two files."},
]


# --- parsing: no tokenizer needed ------------------------------------------------------------


def test_parse_plain_text_has_no_calls() -> None:
    assert parse_tool_calls("  just an answer \n") == ("just an answer", [])


def test_parse_one_call_with_text_before() -> None:
    text, calls = parse_tool_calls(
        'I will list them.\n<tool_call>{"name": "shell", "arguments": {"command": "ls -la"}}'
        "</tool_call>"
    )
    assert text == "I will list them."
    assert len(calls) == 1
    call = calls[0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "shell"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls -la"}


def test_parse_malformed_json_is_kept_raw() -> None:
    raw = '{"name": "shell", "arguments": {"command": "ls"'
    text, calls = parse_tool_calls(f"{TOOL_CALL_OPEN}{raw}</tool_call>")
    assert text == ""
    assert calls[0]["function"]["name"] == "shell"  # recovered by regex
    assert calls[0]["function"]["arguments"] == raw
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[0]["function"]["arguments"])


def test_parse_garbage_without_name() -> None:
    _, calls = parse_tool_calls("<tool_call>shell ls</tool_call>")
    assert calls[0]["function"] == {"name": "", "arguments": "shell ls"}


def test_parse_missing_closing_tag_at_end() -> None:
    text, calls = parse_tool_calls('ok <tool_call>{"name": "shell", "arguments": {"command": "pwd"')
    assert text == "ok"
    assert calls[0]["function"]["name"] == "shell"
    _, calls = parse_tool_calls('<tool_call>{"name": "view", "arguments": {"path": "a.py"}}')
    assert json.loads(calls[0]["function"]["arguments"]) == {"path": "a.py"}


def test_parse_list_of_calls_and_string_arguments() -> None:
    _, calls = parse_tool_calls(
        '<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{}"}]'
        "</tool_call>"
    )
    assert [c["function"]["name"] for c in calls] == ["a", "b"]
    assert [c["function"]["arguments"] for c in calls] == ['{"x": 1}', "{}"]
    assert calls[0]["id"] != calls[1]["id"]


def test_format_then_parse_round_trips() -> None:
    block = format_tool_call("shell", '{"command": "echo \\"hi\\""}')
    _, calls = parse_tool_calls(block)
    assert calls[0]["function"]["name"] == "shell"
    assert json.loads(calls[0]["function"]["arguments"]) == {"command": 'echo "hi"'}
    # a malformed call renders back to exactly the text the model wrote
    assert format_tool_call("", "shell ls") == "<tool_call>shell ls</tool_call>"


# --- rendering ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smol_tokenizer(model_ready: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_ready)


RACE = """
import threading
from agent.token_counter import TokenCounter

counters = [TokenCounter("local/smollm2-135m") for _ in range(4)]
threads = [threading.Thread(target=lambda c=c: c.tokenizer) for c in counters]
[t.start() for t in threads]
[t.join() for t in threads]
print(sum(c.tokenizer is None for c in counters))
"""


def test_parallel_episodes_all_count_with_the_model_tokenizer(model_ready: Path) -> None:
    """Episodes that start at once in a fresh process each load the tokenizer (transformers'
    first import is not thread-safe): none falls back to litellm's estimate."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "0"


def test_smollm2_template_has_no_tool_support(smol_tokenizer: Any) -> None:
    assert not template_supports_tools(smol_tokenizer)
    # its template prints any role verbatim, which is why tool results become user turns
    shown = smol_tokenizer.apply_chat_template(
        [{"role": "tool", "content": "x"}], tokenize=False
    )
    assert "<|im_start|>tool\n" in shown


def test_render_folds_the_protocol(smol_tokenizer: Any) -> None:
    prompt = render_chat(CONVERSATION[:4], TOOLS, smol_tokenizer)
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou are a coding agent.\n\n# Tools")
    assert '"name": "shell"' in system and "<tool_call>" in system
    assert (
        '<|im_start|>assistant\nLet me look.\n<tool_call>{"name": "shell", "arguments": '
        '{"command": "ls"}}</tool_call><|im_end|>' in prompt
    )
    assert "<|im_start|>user\n<tool_response>\nREADME.md\ncalc.py\n</tool_response><|im_end|>" in (
        prompt
    )
    assert "<|im_start|>tool" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_consecutive_tool_results_share_one_turn(smol_tokenizer: Any) -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "shell", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "shell", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "a", "content": "one"},
        {"role": "tool", "tool_call_id": "b", "content": "two"},
    ]
    prompt = render_chat(messages, TOOLS, smol_tokenizer)
    assert "<tool_response>\none\n</tool_response>\n<tool_response>\ntwo\n</tool_response>" in (
        prompt
    )
    assert prompt.count("<|im_start|>user") == 2


def test_tokens_and_assistant_mask(smol_tokenizer: Any) -> None:
    text = render_chat(CONVERSATION[:2], TOOLS, smol_tokenizer)
    ids = render_chat_tokens(CONVERSATION[:2], TOOLS, smol_tokenizer)
    assert ids == smol_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert smol_tokenizer.decode(ids) == text

    ids, mask = render_chat_with_mask(CONVERSATION, TOOLS, smol_tokenizer)
    assert len(ids) == len(mask)
    learned = smol_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert learned == (
        'Let me look.\n<tool_call>{"name": "shell", "arguments": {"command": "ls"}}</tool_call>'
        "<|im_end|>There are two files.<|im_end|>"
    )
    # the prompt of each assistant turn is a token prefix of the whole conversation
    prefix = render_chat_tokens(CONVERSATION[:2], TOOLS, smol_tokenizer)
    assert ids[: len(prefix)] == prefix and not any(mask[: len(prefix)])


# --- the registry --------------------------------------------------------------------------------


def test_registry_without_a_pulled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPRENTICE_CACHE_DIR", str(tmp_path / "cache"))
    assert KNOWN_MODELS["smollm2-135m"].context_window == 8192
    assert KNOWN_MODELS["smollm2-135m"].licence == "Apache-2.0"
    with pytest.raises(ModelNotFoundError, match=r"run `agent models pull smollm2-135m`"):
        resolve_model_path("smollm2-135m")
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        resolve_model_path("no-such-model")
    with pytest.raises(ModelNotFoundError, match="known models are"):
        pull_model("no-such-model")
    row = next(r for r in list_models() if r["name"] == "smollm2-135m")
    assert row["pulled"] is False and row["size_bytes"] is None
    assert row["path"] == str(tmp_path / "cache" / "models" / "smollm2-135m")
    assert resolve_model_path(str(tmp_path)) == tmp_path.resolve()


def test_pull_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPRENTICE_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    logged: list[str] = []
    assert pull_model("smollm2-135m", log=logged.append) == folder  # no download attempted
    assert "already pulled" in logged[0]
    assert resolve_model_path("smollm2-135m") == folder
    assert next(r for r in list_models())["size_bytes"] == 12


def test_a_shipped_adapter_rides_on_its_base_and_is_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.models as models
    from agent.local_model import split_model_spec

    monkeypatch.setenv("APPRENTICE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "ADAPTERS_DIR", tmp_path / "adapters")
    base = tmp_path / "models" / "smollm2-135m"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="missing from this installation"):
        split_model_spec("apprentice-135m")
    assert next(r for r in list_models() if r["name"] == "apprentice-135m")["pulled"] is False
    adapter = tmp_path / "adapters" / "apprentice-135m"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "manifest.json").write_text(json.dumps(
        {"adapter_sha256": models.adapter_digest(adapter)}))
    assert split_model_spec("apprentice-135m") == (base, adapter)
    assert pull_model("apprentice-135m", log=lambda _: None) == base
    assert split_model_spec("smollm2-135m") == (base, None)
    with pytest.raises(ValueError, match="already carries its shipped adapter"):
        split_model_spec("apprentice-135m", adapter=str(adapter))
    (adapter / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(ModelNotFoundError, match="does not match its manifest"):
        split_model_spec("apprentice-135m")


# --- the provider, with a tiny random Llama --------------------------------------------------


def _tiny_tokenizer(model_dir: Path | None) -> Any:
    """SmolLM2's tokenizer when pulled, else a small byte-level BPE trained here."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if model_dir is not None:
        return AutoTokenizer.from_pretrained(model_dir)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [json.dumps(TOOLS), "<tool_call></tool_call><tool_response>", "You are a helpful "
              "coding agent. List the files. README.md calc.py def add(a, b): return a + b"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<|endoftext|>", pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def _smollm2_dir() -> Path | None:
    try:
        return resolve_model_path("smollm2-135m")
    except ModelNotFoundError:
        return None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a real tokenizer, saved like any model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _tiny_tokenizer(_smollm2_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def litellm_local() -> Any:
    import litellm

    from agent.local_model import register_local_provider

    register_local_provider()
    register_local_provider()  # idempotent
    assert [p["provider"] for p in litellm.custom_provider_map].count("local") == 1
    return litellm


def _check_tokens(response: Any, prompt_ids: list[int]) -> dict[str, Any]:
    from agent.local_model import token_ids_of

    record = token_ids_of(response)
    assert record is not None
    assert record["prompt_ids"] == prompt_ids
    assert response.usage.prompt_tokens == len(prompt_ids)
    assert response.usage.completion_tokens == len(record["completion_ids"]) > 0
    assert len(record["completion_logprobs"]) == len(record["completion_ids"])
    assert all(lp <= 0 for lp in record["completion_logprobs"])
    return record


def test_tiny_model_through_litellm(tiny_model: Path, litellm_local: Any) -> None:
    from transformers import AutoTokenizer

    messages = CONVERSATION[:4]
    response = litellm_local.completion(
        model=f"local/{tiny_model}", messages=messages, tools=TOOLS, max_tokens=6, temperature=0
    )
    assert isinstance(response, litellm_local.ModelResponse)
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.role == "assistant"
    prompt_ids = render_chat_tokens(messages, TOOLS, AutoTokenizer.from_pretrained(tiny_model))
    record = _check_tokens(response, prompt_ids)
    assert record["model_path"] == str(tiny_model.resolve()) and record["adapter_path"] is None
    assert response._hidden_params["local_tokens"] == record
    assert litellm_local.completion_cost(completion_response=response) == 0.0

    again = litellm_local.completion(
        model=f"local/{tiny_model}", messages=messages, tools=TOOLS, max_tokens=6, temperature=0
    )  # greedy: the same tokens again
    assert _check_tokens(again, prompt_ids)["completion_ids"] == record["completion_ids"]


def test_tiny_model_streams_the_same_tokens(tiny_model: Path, litellm_local: Any) -> None:
    from agent.local_model import token_ids_of

    kwargs = {"model": f"local/{tiny_model}", "messages": CONVERSATION[:2], "max_tokens": 8,
              "temperature": 0}
    whole = litellm_local.completion(**kwargs)
    chunks = list(litellm_local.completion(stream=True, stream_options={"include_usage": True},
                                           **kwargs))
    built = litellm_local.stream_chunk_builder(chunks, messages=CONVERSATION[:2])
    assert token_ids_of(built)["completion_ids"] == token_ids_of(whole)["completion_ids"]
    assert (built.choices[0].message.content or "") == (whole.choices[0].message.content or "")

    async def run() -> list[Any]:
        stream = await litellm_local.acompletion(stream=True, **kwargs)
        return [chunk async for chunk in stream]

    async_built = litellm_local.stream_chunk_builder(asyncio.run(run()))
    assert token_ids_of(async_built)["completion_ids"] == token_ids_of(whole)["completion_ids"]


def test_tiny_model_with_adapter(tiny_model: Path, tmp_path: Path, litellm_local: Any) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agent.local_model import token_ids_of

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    for kwargs in ({"model": f"local/{tiny_model}+{adapter}"},
                   {"model": f"local/{tiny_model}", "adapter": str(adapter)}):
        response = litellm_local.completion(
            messages=CONVERSATION[:2], max_tokens=3, temperature=0, **kwargs
        )
        assert token_ids_of(response)["adapter_path"] == str(adapter.resolve())


def test_errors_a_user_can_act_on(
    tiny_model: Path, litellm_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPRENTICE_CACHE_DIR", str(tmp_path))
    with pytest.raises(litellm_local.BadRequestError, match="agent models pull smollm2-135m"):
        litellm_local.completion(model="local/smollm2-135m", messages=CONVERSATION[:2])
    with pytest.raises(litellm_local.BadRequestError, match="not a PEFT adapter"):
        litellm_local.completion(model=f"local/{tiny_model}+{tmp_path}", messages=CONVERSATION)
    with pytest.raises(litellm_local.ContextWindowExceededError, match="compact"):
        litellm_local.completion(
            model=f"local/{tiny_model}",
            messages=[{"role": "user", "content": "calc.py " * 5000}],
        )


def test_streaming_holds_back_tool_call_text() -> None:
    from agent.local_model import Generation, LocalModel, _final_chunks, _streamable_prefix

    assert _streamable_prefix("  Let me <tool") == "Let me"
    assert _streamable_prefix('Ok.\n<tool_call>{"name"') == "Ok."
    assert _streamable_prefix("Hello there! How can I assi", ["assist"]) == "Hello there! How can I"
    assert _streamable_prefix("a STOP b", ["STOP"]) == "a"
    gen = Generation(
        text='Ok.\n<tool_call>{"name": "shell", "arguments": {"command": "ls"}}</tool_call>',
        prompt_ids=[1, 2], completion_ids=[5, 6, 7], completion_logprobs=[-1.0] * 3,
        finish_reason="stop",
    )
    local = LocalModel(None, None, Path("/m"), None, 100, None)  # type: ignore[arg-type]
    (last,) = list(_final_chunks(gen, local, sent="Ok"))
    assert last["text"] == "."
    assert last["is_finished"] and last["finish_reason"] == "tool_calls"
    assert last["tool_use"]["function"]["name"] == "shell"
    assert last["usage"]["completion_tokens"] == 3
    assert last["provider_specific_fields"]["local_tokens"]["completion_ids"] == [5, 6, 7]


# --- the real SmolLM2 --------------------------------------------------------------------------


@pytest.mark.model
def test_smollm2_through_litellm(model_ready: Path, litellm_local: Any) -> None:
    from transformers import AutoTokenizer

    messages = [
        {"role": "system", "content": "You are a coding agent working in a git repository."},
        {"role": "user", "content": "Run the tests with the shell tool: `pytest -q`."},
    ]
    response = litellm_local.completion(
        model="local/smollm2-135m", messages=messages, tools=TOOLS, max_tokens=32, temperature=0
    )
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls
    for call in choice.message.tool_calls or []:
        assert call.type == "function" and isinstance(call.function.arguments, str)
    prompt_ids = render_chat_tokens(messages, TOOLS, AutoTokenizer.from_pretrained(model_ready))
    record = _check_tokens(response, prompt_ids)
    assert record["model_path"] == str(model_ready)
    assert len(record["completion_ids"]) <= 32
    assert response.choices[0].message.provider_specific_fields["local_tokens"] == record


def test_required_tool_choice_starts_the_reply_with_a_call(tiny_model: Path,
                                                           litellm_local: Any) -> None:
    from transformers import AutoTokenizer

    from agent.tool_protocol import TOOL_CALL_OPEN

    messages = CONVERSATION[:2]
    response = litellm_local.completion(
        model=f"local/{tiny_model}", messages=messages, tools=TOOLS, max_tokens=6,
        temperature=0, tool_choice="required",
    )
    calls = response.choices[0].message.tool_calls
    assert calls and response.choices[0].finish_reason == "tool_calls"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prefill = tokenizer.encode(TOOL_CALL_OPEN, add_special_tokens=False)
    prompt_ids = render_chat_tokens(messages, TOOLS, tokenizer)
    record = response._hidden_params["local_tokens"]
    assert record["prompt_ids"][: len(prompt_ids)] == prompt_ids
    assert record["prompt_ids"][len(prompt_ids):][: len(prefill)] == prefill


def test_prefix_cache_reuse_gives_the_same_tokens(tiny_model: Path, litellm_local: Any) -> None:
    from agent.local_model import load_local_model

    def call(messages: list) -> list[int]:
        response = litellm_local.completion(model=f"local/{tiny_model}", messages=messages,
                                            tools=TOOLS, max_tokens=6, temperature=0)
        return response._hidden_params["local_tokens"]["completion_ids"]

    local = load_local_model(str(tiny_model))
    call(CONVERSATION[:2])
    assert local.cache is not None and local.cached_ids
    with_cache = call(CONVERSATION[:4])  # the grown conversation shares the earlier prefix
    local.cache, local.cached_ids = None, []
    assert call(CONVERSATION[:4]) == with_cache
