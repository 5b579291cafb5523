"""A small MCP server written with the `mcp` SDK, for the tests: over stdio by default, over
streamable HTTP with `--http PORT`; `--hang` never answers the handshake, `--exit` exits at once.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text as given."""
    return text


@server.tool()
def where() -> str:
    """Where this server runs: host name, working directory and environment variable names."""
    return f"host={socket.gethostname()} cwd={os.getcwd()} env={','.join(sorted(os.environ))}"


@server.tool()
def long_text(characters: int) -> str:
    """A text of that many characters."""
    return "x" * characters


@server.tool()
def sleep(seconds: float) -> str:
    """Wait, then answer."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def crash() -> str:
    """End the server's process at once."""
    print("crashing on purpose", file=sys.stderr, flush=True)
    os._exit(3)


if __name__ == "__main__":
    if "--exit" in sys.argv:
        print("cannot start: missing configuration", file=sys.stderr)
        raise SystemExit(1)
    if "--hang" in sys.argv:
        time.sleep(3600)
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.settings.log_level = "WARNING"
        server.run("streamable-http", host="127.0.0.1", port=port)
    else:
        server.run()
