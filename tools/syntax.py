"""Tree-sitter syntax checks, so an edit cannot silently break a file that parsed."""

from __future__ import annotations

from functools import cache
from pathlib import PurePath
from typing import Any

LANGUAGE_BY_SUFFIX = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".hpp": "cpp",
    ".rb": "ruby",
    ".json": "json",
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
}


@cache
def _parser(language: str) -> Any:
    from tree_sitter_language_pack import get_parser

    return get_parser(language)  # type: ignore[arg-type]


def syntax_error(path: PurePath, text: str) -> str | None:
    """Describe the first syntax error in `text` (as the file `path`), or None if it parses."""
    language = LANGUAGE_BY_SUFFIX.get(path.suffix.lower())
    if language is None:
        return None
    try:
        parser = _parser(language)
    except Exception:  # a grammar that cannot load must not block editing
        return None
    tree = parser.parse(text.encode())
    if not tree.root_node.has_error:
        return None
    node = _first_error(tree.root_node)
    if node is None:
        return "the file does not parse"
    line, column = node.start_point
    kind = "missing " + node.type if node.is_missing else "unexpected syntax"
    source_line = text.splitlines()[line] if line < len(text.splitlines()) else ""
    return f"{kind} at line {line + 1}, column {column + 1}: {source_line.strip()!r}"


def _first_error(node: Any) -> Any:
    if node.is_error or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_error or child.is_missing:
            found = _first_error(child)
            if found is not None:
                return found
    return None
