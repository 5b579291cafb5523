"""The oracle: a scripted policy that knows each task's fix, for warm-start trajectories.

The real agent loop (`agent.solve`: worktree, sandbox, tools, recorder, verify) runs against a
small OpenAI-compatible HTTP server that answers each model call with the next tool call of the
task's `oracle` script. The agent reaches it through litellm like any provider, so the
trajectories are the agent's own, and only those the tests verify are kept for training.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.llm import LLMConfig

ORACLE_MODEL = "oracle"
"""The model name that selects the oracle in `agent eval --model oracle`."""
ORACLE_TOOL_SET = "core"
"""The oracle's default tools: those of the small local models its episodes teach."""


class ScriptedPolicyServer:
    """Serves one tool call per request from `script` on 127.0.0.1 (non-streaming replies);
    once the script is exhausted it answers in plain text, which ends the episode."""

    def __init__(self, script: list[dict[str, Any]], model: str = ORACLE_MODEL):
        self.script = list(script)
        self.model = model
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="scripted-policy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def llm_config(self, **overrides: Any) -> LLMConfig:
        """How the agent reaches this server."""
        return LLMConfig(model=f"openai/{self.model}", api_base=self.url, api_key="none",
                         retries=0, **overrides)

    def __enter__(self) -> ScriptedPolicyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_message(self) -> dict[str, Any]:
        with self._lock:
            self.requests += 1
            if not self.script:
                return {"role": "assistant", "content": "The script is exhausted."}
            step = self.script.pop(0)
        arguments = step["arguments"]
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
            "function": {"name": step["name"], "arguments": arguments
                         if isinstance(arguments, str) else json.dumps(arguments)},
        }]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                message = owner.next_message()
                prompt = sum(len(str(m.get("content") or "")) for m in body["messages"]) // 4
                payload = {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                    "created": int(time.time()), "model": owner.model,
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": "tool_calls" if message.get("tool_calls")
                                 else "stop"}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": 20,
                              "total_tokens": prompt + 20},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
