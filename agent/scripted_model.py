"""A real OpenAI-compatible HTTP server on 127.0.0.1 that replays scripted assistant turns.

It stands in for the LLM only; the agent reaches it through litellm like any provider
(`--model openai/scripted --api-base http://127.0.0.1:PORT/v1`). The oracle policy
(`finetune.oracle`), the tests and the benchmarks use it.

A script is a list of steps; each step is one of:
- `{"content": "...", "tool_calls": [{"name": ..., "arguments": {...} or "raw json"}]}`
- `{"status": 500}` / `{"status": 429, "headers": {"Retry-After": "2"}}`: answer that HTTP
  error instead, with those response headers (and `"message"`, the error's text)
- `{"hang": seconds}`: wait that long before answering the next step
- `{"choices_empty": true}`: a well-formed completion (or stream) whose `choices` is empty
- `{"response": <any JSON>}`: that body verbatim with status 200 (malformed replies)

Tool-call ids are sent as given (any JSON type), or generated when a call has none.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.llm import LLMConfig


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict:
    """One tool call of a script step."""
    return {"name": name, "arguments": arguments, "id": call_id}


class ScriptedModelServer:
    """Serves the script in order (streamed when asked); records every request body received.
    Once the script is exhausted it answers in plain text, which ends an episode."""

    def __init__(self, script: list[dict[str, Any]] | None = None, model: str = "scripted"):
        self.script = list(script or [])
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"scripted-{model}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def llm_config(self, **overrides: Any) -> LLMConfig:
        """How the agent reaches this server."""
        return LLMConfig(model=f"openai/{self.model}", api_base=self.url, api_key="none",
                         **overrides)

    def start(self) -> ScriptedModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _step_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """The step that answers the request `body`: the script's next."""
        return self._next_step()

    def _next_step(self) -> dict[str, Any]:
        with self._lock:
            if not self.script:
                return {"content": "The script is exhausted.", "tool_calls": []}
            return self.script.pop(0)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                step = owner._step_for(body)
                if "hang" in step:
                    time.sleep(step["hang"])
                    return self._json(504, {"error": {"message": "hung"}})
                if "status" in step:
                    return self._json(step["status"], {"error": {
                        "message": step.get("message", f"scripted error {step['status']}"),
                        "type": "server_error"}},
                        step.get("headers"))
                if "response" in step:
                    return self._json(200, step["response"])
                usage = {"prompt_tokens": 100 + len(json.dumps(body["messages"])) // 4,
                         "completion_tokens": 20, "total_tokens": 0}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                message = owner._message(step)
                if body.get("stream"):
                    return self._stream(message, usage, empty=bool(step.get("choices_empty")))
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                choices = [] if step.get("choices_empty") else [
                    {"index": 0, "message": message, "finish_reason": finish}]
                self._json(200, owner._completion(body, {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                    "created": int(time.time()), "model": owner.model,
                    "choices": choices, "usage": usage,
                }))

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": [
                        {"id": owner.model, "object": "model", "owned_by": "scripted"}]})
                self._json(404, {"error": {"message": f"no route {self.path}"}})

            def _json(self, status: int, payload: Any,
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, str(value))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, message: dict[str, Any], usage: dict[str, int],
                        empty: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                        "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": owner.model}
                text = message.get("content") or ""
                pieces = [text[i:i + 8] for i in range(0, len(text), 8)]
                chunks: list[dict[str, Any]] = [{"role": "assistant", "content": p}
                                                for p in pieces]
                for index, call in enumerate(message.get("tool_calls") or []):
                    chunks.append({"tool_calls": [{"index": index, **call}]})
                for delta in [] if empty else chunks:
                    self._event({**base, "choices": [{"index": 0, "delta": delta,
                                                      "finish_reason": None}]})
                finish = "tool_calls" if message.get("tool_calls") else "stop"
                if not empty:
                    self._event({**base, "choices": [{"index": 0, "delta": {},
                                                      "finish_reason": finish}]})
                self._event({**base, "choices": [], "usage": usage})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, payload: dict[str, Any]) -> None:
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

        return Handler

    def _completion(self, request: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        """The body answering `request` (a non-streamed completion); subclasses add fields."""
        return response

    def _message(self, step: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
        calls = []
        for call in step.get("tool_calls") or []:
            arguments = call["arguments"]
            calls.append({
                "id": self._call_id(step) if call.get("id") is None else call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments
                             if isinstance(arguments, str) else json.dumps(arguments)},
            })
        if calls:
            message["tool_calls"] = calls
        return message

    def _call_id(self, step: dict[str, Any]) -> str:
        return f"call_{uuid.uuid4().hex[:8]}"


EXHAUSTED = {"content": "The script is exhausted.", "tool_calls": []}
_CONVERSATION_ID = re.compile(r"^call_c(\d+)_")


class ScriptedConversationsServer(ScriptedModelServer):
    """Serves several scripts, one per conversation, so attempts that run at once each follow
    their own: a request that continues no conversation it knows starts on the next unused
    script (in the order the requests arrive); a later request of the same conversation is
    recognised by the ids of the tool calls it made (`call_c<script>_...`). A conversation
    whose replies so far had no tool call cannot be recognised, so scripts should call a tool
    from their first step. `requests_by_script` keeps what each conversation was sent."""

    def __init__(self, scripts: list[list[dict[str, Any]]], model: str = "scripted"):
        super().__init__([], model=model)
        self.scripts = [list(script) for script in scripts]
        self.started = 0
        self.requests_by_script: dict[int, list[dict[str, Any]]] = {}

    def _conversation(self, body: dict[str, Any]) -> int | None:
        for message in reversed(body.get("messages") or []):
            for call in message.get("tool_calls") or [] if message.get("role") == "assistant" \
                    else []:
                found = _CONVERSATION_ID.match(str(call.get("id", "")))
                if found:
                    return int(found.group(1))
        return None

    def _step_for(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            index = self._conversation(body)
            if index is None:
                if self.started >= len(self.scripts):
                    return dict(EXHAUSTED)
                index, self.started = self.started, self.started + 1
            self.requests_by_script.setdefault(index, []).append(body)
            script = self.scripts[index]
            return {**(script.pop(0) if script else EXHAUSTED), "conversation": index}

    def _call_id(self, step: dict[str, Any]) -> str:
        return f"call_c{step.get('conversation', 0)}_{uuid.uuid4().hex[:8]}"
