"""How local models see tools and tool calls: one text protocol, one rendering, used for both
inference and training (so both see the same tokens).

Rendering (`render_chat`, `render_chat_tokens`, `render_chat_with_mask`) turns OpenAI-format
messages (system / user / assistant with `tool_calls` / tool) plus OpenAI-format tool schemas into
the model's prompt:

* If the tokenizer's chat template handles tools (it mentions `tools`), the template does the
  work: `apply_chat_template(messages, tools=...)`, with tool-call arguments given as objects.
* Otherwise (SmolLM2's template knows only role + content) the protocol below is folded into
  ordinary messages, in the Hermes / Qwen style:

  - the system message gets a `# Tools` section: each tool as one JSON line
    `{"name": ..., "description": ..., "parameters": <JSON schema>}` inside `<tools></tools>`,
    and the instruction to call a tool by replying with exactly
    `<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>`;
  - an assistant turn with tool calls is its text (if any) followed by one such block per call;
  - tool results become a *user* turn (SmolLM2 was only trained on system / user / assistant; its
    template would print any other role verbatim) holding one
    `<tool_response>\\n...\\n</tool_response>` block per result; consecutive results share a turn.

Parsing (`parse_tool_calls`) reads a completion back: text outside `<tool_call>` blocks is the
message content, each block becomes an OpenAI tool call (a block holding a JSON list of calls, the
format SmolLM2 was tuned on, becomes several). A block that is not a JSON call object is kept, not
dropped: its `arguments` is the raw text inside the tags (the name is
recovered by regex when possible, else ""), so the agent loop's JSON error reaches the model. A
block left open at the end of generation runs to the end of the text. Generation stops at
`</tool_call>` (`TOOL_CALL_STOP`), so a completion holds at most one call.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from trajectories.export import load_shallow_json

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_CALL_STOP = TOOL_CALL_CLOSE
"""Stop string for local generation: the model answers with at most one call per turn."""
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"

_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|\Z)",
                    re.DOTALL)
_NAME = re.compile(r'"name"\s*:\s*"([^"\\]*)"')

TOOLS_SECTION = """# Tools

You can call tools to help with the user's request. The tools, one JSON object per line, each \
with its name, description and the JSON schema of its arguments:
<tools>
{tools}
</tools>

To call a tool, reply with one JSON object inside <tool_call></tool_call> tags, like this:
<tool_call>{example}</tool_call>
The result comes back in the next message inside <tool_response></tool_response> tags. \
To answer without a tool, reply with plain text."""


def template_supports_tools(tokenizer: Any) -> bool:
    """True if the tokenizer's chat template renders `tools=` itself."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default, or a dedicated tool one
        return "tool_use" in template or "tools" in str(template.get("default", ""))
    return isinstance(template, str) and "tools" in template


def tools_section(tools: list[dict[str, Any]]) -> str:
    """The system-prompt section listing `tools` (OpenAI format) and the call syntax."""
    lines = []
    for tool in tools:
        function = tool.get("function", tool)
        entry = {
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": function.get("parameters", {"type": "object", "properties": {}}),
        }
        lines.append(json.dumps(entry, ensure_ascii=False))
    return TOOLS_SECTION.format(tools="\n".join(lines), example=_example_call(tools))


def _example_call(tools: list[dict[str, Any]]) -> str:
    """A call of the first tool with its required arguments, values elided."""
    function: dict[str, Any] = (tools[0].get("function") or tools[0]) if tools else \
        {"name": "tool_name"}
    required = function.get("parameters", {}).get("required", [])
    arguments = {name: "..." for name in required}
    return json.dumps({"name": function["name"], "arguments": arguments})


def format_tool_call(name: str, arguments: str) -> str:
    """One `<tool_call>` block; unparsable (or too deeply nested) `arguments` are written back
    verbatim."""
    parsed = load_shallow_json(arguments) if arguments.strip() else {}
    if not name or parsed is None:
        # A malformed call as parse_tool_calls returned it: its raw text is the whole block.
        return f"{TOOL_CALL_OPEN}{arguments}{TOOL_CALL_CLOSE}"
    body = json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Split a completion into its free text and OpenAI-style tool calls."""
    calls: list[dict[str, Any]] = []
    outside: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        outside.append(text[position:match.start()])
        position = match.end()
        calls.extend(_tool_calls(match.group(1).strip()))
    outside.append(text[position:])
    return "".join(outside).strip(), calls


def _tool_calls(raw: str) -> list[dict[str, Any]]:
    """The calls in one block: a call object, or a list of them (SmolLM2's training format)."""
    obj = load_shallow_json(raw)
    if isinstance(obj, list) and obj and all(_is_call(item) for item in obj):
        return [_openai_call(item["name"], _arguments_text(item)) for item in obj]
    if _is_call(obj):
        return [_openai_call(obj["name"], _arguments_text(obj))]
    found = _NAME.search(raw)
    return [_openai_call(found.group(1) if found else "", raw)]


def _is_call(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("name"), str) and bool(obj["name"])


def _arguments_text(call: dict[str, Any]) -> str:
    args = call.get("arguments", call.get("parameters", {}))
    return args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def _openai_call(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def render_chat(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tokenizer: Any,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text for `messages` and `tools`, as the model sees it."""
    if template_supports_tools(tokenizer):
        return str(tokenizer.apply_chat_template(
            [_native_message(m) for m in messages], tools=tools or None, tokenize=False,
            add_generation_prompt=add_generation_prompt,
        ))
    return str(tokenizer.apply_chat_template(
        fold_tool_protocol(messages, tools), tokenize=False,
        add_generation_prompt=add_generation_prompt,
    ))


def render_chat_tokens(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tokenizer: Any,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of `render_chat(...)`: exactly what generation is given as the prompt."""
    text = render_chat(messages, tools, tokenizer, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_chat_with_mask(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tokenizer: Any,
) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and a mask: 1 on tokens the assistant wrote.

    An assistant turn is everything after its generation prompt up to and including the
    end-of-turn token (what the model emits), so training on masked tokens teaches exactly what
    inference asks of it. An assistant message with `"weight": 0` (OpenAI's fine-tuning
    convention) stays unmasked: context the model reads, not text it learns to write. Needs a
    fast tokenizer (offset mapping).
    """
    full = render_chat(messages, tools, tokenizer, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        before = render_chat(messages[:i], tools, tokenizer, add_generation_prompt=True)
        through = render_chat(messages[: i + 1], tools, tokenizer, add_generation_prompt=False)
        if not (full.startswith(before) and full.startswith(through)):
            raise ValueError(
                "the chat template does not render conversations prefix by prefix, so "
                "assistant tokens cannot be located; use a template without history rewriting"
            )
        end = len(through)
        eos = getattr(tokenizer, "eos_token", None)
        if eos and eos in through[len(before):]:
            end = through.rindex(eos) + len(eos)
        spans.append((len(before), end))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [
        int(any(start <= tok_start < end for start, end in spans))
        for tok_start, _ in encoded["offset_mapping"]
    ]
    return list(encoded["input_ids"]), mask


def fold_tool_protocol(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, str]]:
    """Plain role/content messages carrying the tool protocol, for templates without tools."""
    folded: list[dict[str, str]] = []
    results_turn: dict[str, str] | None = None  # the user turn collecting consecutive results
    for message in messages:
        role = message.get("role", "user")
        content = content_text(message.get("content"))
        if role == "tool":
            block = f"{TOOL_RESPONSE_OPEN}\n{content}\n{TOOL_RESPONSE_CLOSE}"
            if results_turn is None:
                results_turn = {"role": "user", "content": block}
                folded.append(results_turn)
            else:
                results_turn["content"] += "\n" + block
            continue
        results_turn = None
        if role == "assistant" and message.get("tool_calls"):
            blocks = [
                format_tool_call(call["function"].get("name") or "",
                                 call["function"].get("arguments") or "")
                for call in message["tool_calls"]
            ]
            content = "\n".join([content, *blocks] if content else blocks)
        folded.append({"role": role, "content": content})
    if tools:
        section = tools_section(tools)
        if folded and folded[0]["role"] == "system":
            folded[0]["content"] = f"{folded[0]['content']}\n\n{section}".lstrip()
        else:
            folded.insert(0, {"role": "system", "content": section})
    return folded


def content_text(content: Any) -> str:
    """Text of an OpenAI message content: a string, None, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [part.get("text", "") if isinstance(part, dict) else str(part) for part in content]
    return "".join(parts)


def _native_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message for a tool-aware template: tool-call arguments as objects, not JSON strings."""
    out = dict(message)
    out["content"] = content_text(message.get("content"))
    if message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            function = dict(call["function"])
            # malformed, too deep, or already an object: passed through as is
            value = load_shallow_json(function.get("arguments") or "{}")
            if value is not None:
                function["arguments"] = value
            calls.append({**call, "function": function})
        out["tool_calls"] = calls
    return out
