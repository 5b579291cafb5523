"""A self-contained MCP stdio server (standard library only) for inside the sandbox, whose
image has Python but not the `mcp` package: JSON-RPC lines on stdin and stdout."""

import json
import os
import socket
import sys

TOOLS = [
    {"name": "where", "description": "Host name, working directory and user id.",
     "inputSchema": {"type": "object", "properties": {}}},
    {"name": "read", "description": "Read a file of the workspace.",
     "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}},
                     "required": ["path"]}},
    {"name": "network", "description": "Try to reach a host on the network.",
     "inputSchema": {"type": "object", "properties": {}}},
]


def call(name, arguments):
    if name == "where":
        return f"host={socket.gethostname()} cwd={os.getcwd()} uid={os.getuid()}"
    if name == "read":
        with open(arguments["path"]) as handle:
            return handle.read()
    if name == "network":
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2).close()
            return "network: reachable"
        except OSError as exc:
            return f"network: unreachable ({exc.__class__.__name__})"
    raise KeyError(name)


def answer(request):
    method, params = request.get("method"), request.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "plain", "version": "1"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": TOOLS}
    if method == "tools/call":
        try:
            text, error = call(params["name"], params.get("arguments") or {}), False
        except Exception as exc:
            text, error = f"{type(exc).__name__}: {exc}", True
        return {"content": [{"type": "text", "text": text}], "isError": error}
    raise LookupError(method)


for line in sys.stdin:
    request = json.loads(line)
    if "id" not in request:
        continue  # a notification
    try:
        reply = {"jsonrpc": "2.0", "id": request["id"], "result": answer(request)}
    except LookupError as exc:
        reply = {"jsonrpc": "2.0", "id": request["id"],
                 "error": {"code": -32601, "message": f"method not found: {exc}"}}
    print(json.dumps(reply), flush=True)
