"""How fast the embedded model runs here: load time, prefill and decode speed for an agent-sized
step (~1k-token prompt, 128 generated tokens), end to end through litellm and bare generate().

    python bench/bench_local_model.py [--model smollm2-135m] [--prompt-tokens 1000] [--new 128]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agent.tool_protocol import render_chat_tokens  # noqa: E402

TOOLS = [
    {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {key: {"type": "string"}},
                       "required": [key]},
    }}
    for name, description, key in (
        ("shell", "Run a bash command in the repository; returns output and exit code.", "command"),
        ("view", "Show a file with line numbers.", "path"),
        ("search", "Grep the repository for a pattern.", "pattern"),
        ("finish", "End the episode with a summary of what was done.", "summary"),
    )
]

SOURCE = '''def add(a, b):
    """Return the sum of a and b."""
    return a - b


def mean(values):
    """Average of a non-empty list."""
    return sum(values) / len(values)
'''


def agent_step(tokenizer: object, prompt_tokens: int) -> list[dict[str, object]]:
    """A conversation shaped like an agent step, padded with file views to ~prompt_tokens."""
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are a coding agent. Fix the issue, run the tests."},
        {"role": "user", "content": "add() in calc.py subtracts instead of adding. Fix it."},
    ]
    step = 0
    while len(render_chat_tokens(messages, TOOLS, tokenizer)) < prompt_tokens:
        step += 1
        call_id = f"call_{step}"
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "view", "arguments": '{"path": "calc.py"}'}}]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": SOURCE})
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--new", type=int, default=128, help="tokens to generate")
    args = parser.parse_args()

    started = time.perf_counter()
    import litellm
    import torch

    from agent.local_model import load_local_model, register_local_provider, token_ids_of

    print(f"imports (torch, transformers, litellm): {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    local = load_local_model(args.model)
    print(f"model load ({local.model_path}): {time.perf_counter() - started:.1f}s")
    print(f"torch threads: {torch.get_num_threads()}")

    messages = agent_step(local.tokenizer, args.prompt_tokens)
    prompt_ids = render_chat_tokens(messages, TOOLS, local.tokenizer)
    inputs = torch.tensor([prompt_ids])
    with torch.inference_mode():
        local.model(inputs[:, :16])  # warm-up
        started = time.perf_counter()
        local.model(inputs)
        prefill = time.perf_counter() - started
        print(f"prefill {len(prompt_ids)} tokens: {prefill:.2f}s "
              f"({len(prompt_ids) / prefill:.0f} tokens/s)")
        started = time.perf_counter()
        out = local.model.generate(
            inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
            max_new_tokens=args.new, min_new_tokens=args.new,
            pad_token_id=local.tokenizer.eos_token_id,
        )
        elapsed = time.perf_counter() - started
    generated = out.shape[1] - len(prompt_ids)
    print(f"generate(): {generated} tokens after a {len(prompt_ids)}-token prompt in "
          f"{elapsed:.2f}s: {generated / elapsed:.1f} tokens/s "
          f"(decode only: {generated / max(elapsed - prefill, 1e-9):.1f} tokens/s)")

    register_local_provider()
    started = time.perf_counter()
    response = litellm.completion(model=f"local/{args.model}", messages=messages, tools=TOOLS,
                                  max_tokens=args.new, temperature=0)
    elapsed = time.perf_counter() - started
    record = token_ids_of(response) or {}
    n = len(record.get("completion_ids", []))
    print(f"litellm.completion: {n} tokens ({response.choices[0].finish_reason}) in "
          f"{elapsed:.2f}s: {n / elapsed:.1f} tokens/s end to end")
    print(f"sample reply: {response.choices[0].message.content!r} "
          f"tool_calls={response.choices[0].message.tool_calls}")


if __name__ == "__main__":
    main()
