"""What the repository map extracts per language: tree-sitter queries for definitions (`@def`)
and references (`@ref`), and the tags of one file."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tools.workspace_fs import WorkspaceFS

LANGUAGE_BY_SUFFIX = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
}

PYTHON = """
(class_definition name: (identifier) @def)
(function_definition name: (identifier) @def)
(module (assignment left: (identifier) @def))
(call function: [(identifier) @ref (attribute attribute: (identifier) @ref.attr)])
(class_definition superclasses: (argument_list [(identifier) @ref
                                                (attribute attribute: (identifier) @ref)]))
(type (identifier) @ref)
(decorator (identifier) @ref)
(import_from_statement name: (dotted_name (identifier) @ref))
(import_from_statement name: (aliased_import name: (dotted_name (identifier) @ref)))
(parameters [(identifier) @local
             (typed_parameter (identifier) @local)
             (default_parameter name: (identifier) @local)
             (typed_default_parameter name: (identifier) @local)])
"""

ECMASCRIPT = """
(function_declaration name: (identifier) @def)
(generator_function_declaration name: (identifier) @def)
(class_declaration name: (_) @def)
(method_definition name: (property_identifier) @def)
(variable_declarator name: (identifier) @def
                    value: [(arrow_function) (function_expression) (class)])
(call_expression function: [(identifier) @ref
                            (member_expression property: (property_identifier) @ref.attr)])
(new_expression constructor: (identifier) @ref)
(import_specifier name: (identifier) @ref)
"""

JAVASCRIPT = ECMASCRIPT + """
(class_heritage (identifier) @ref)
"""

TYPESCRIPT = ECMASCRIPT + """
(extends_clause value: (identifier) @ref)
(abstract_class_declaration name: (type_identifier) @def)
(interface_declaration name: (type_identifier) @def)
(type_alias_declaration name: (type_identifier) @def)
(enum_declaration name: (identifier) @def)
(method_signature name: (property_identifier) @def)
(abstract_method_signature name: (property_identifier) @def)
(function_signature name: (identifier) @def)
(type_identifier) @ref
"""

GO = """
(function_declaration name: (identifier) @def)
(method_declaration name: (field_identifier) @def)
(type_spec name: (type_identifier) @def)
(call_expression function: [(identifier) @ref
                            (selector_expression field: (field_identifier) @ref.attr)])
(type_identifier) @ref
"""

RUST = """
(function_item name: (identifier) @def)
(function_signature_item name: (identifier) @def)
(struct_item name: (type_identifier) @def)
(enum_item name: (type_identifier) @def)
(union_item name: (type_identifier) @def)
(trait_item name: (type_identifier) @def)
(type_item name: (type_identifier) @def)
(mod_item name: (identifier) @def)
(macro_definition name: (identifier) @def)
(impl_item type: (type_identifier) @def)
(call_expression function: [(identifier) @ref
                            (field_expression field: (field_identifier) @ref.attr)
                            (scoped_identifier name: (identifier) @ref)])
(macro_invocation macro: (identifier) @ref)
(type_identifier) @ref
"""

JAVA = """
(class_declaration name: (identifier) @def)
(interface_declaration name: (identifier) @def)
(enum_declaration name: (identifier) @def)
(record_declaration name: (identifier) @def)
(annotation_type_declaration name: (identifier) @def)
(method_declaration name: (identifier) @def)
(method_invocation name: (identifier) @ref.attr)
(type_identifier) @ref
"""

C = """
(function_definition declarator: (function_declarator declarator: (identifier) @def))
(function_definition declarator: (pointer_declarator
  declarator: (function_declarator declarator: (identifier) @def)))
(declaration declarator: (function_declarator declarator: (identifier) @def))
(declaration declarator: (pointer_declarator
  declarator: (function_declarator declarator: (identifier) @def)))
(struct_specifier name: (type_identifier) @def body: (_))
(union_specifier name: (type_identifier) @def body: (_))
(enum_specifier name: (type_identifier) @def body: (_))
(type_definition declarator: (type_identifier) @def)
(preproc_function_def name: (identifier) @def)
(call_expression function: (identifier) @ref)
(type_identifier) @ref
"""

CPP = C + """
(function_definition declarator: (function_declarator declarator: (field_identifier) @def))
(function_definition declarator: (function_declarator
  declarator: (qualified_identifier name: (identifier) @def)))
(field_declaration declarator: (function_declarator declarator: (field_identifier) @def))
(class_specifier name: (type_identifier) @def body: (_))
(namespace_definition name: (namespace_identifier) @def)
(alias_declaration name: (type_identifier) @def)
(call_expression function: [(field_expression field: (field_identifier) @ref.attr)
                            (qualified_identifier name: (identifier) @ref)])
(template_function name: (identifier) @ref)
"""

QUERIES = {"python": PYTHON, "javascript": JAVASCRIPT, "typescript": TYPESCRIPT,
           "tsx": TYPESCRIPT, "go": GO, "rust": RUST, "java": JAVA, "c": C, "cpp": CPP}

DEFINITION_NODES = frozenset({
    "class_definition", "function_definition", "assignment", "function_declaration",
    "generator_function_declaration", "class_declaration", "method_definition",
    "variable_declarator", "abstract_class_declaration", "interface_declaration",
    "type_alias_declaration", "enum_declaration", "method_signature",
    "abstract_method_signature", "function_signature", "method_declaration", "type_spec",
    "function_item", "function_signature_item", "struct_item", "enum_item", "union_item",
    "trait_item", "type_item", "mod_item", "macro_definition", "impl_item",
    "record_declaration", "annotation_type_declaration", "declaration", "struct_specifier",
    "union_specifier", "enum_specifier", "type_definition", "preproc_function_def",
    "field_declaration", "class_specifier", "namespace_definition", "alias_declaration",
})
MAX_SIGNATURE_CHARS = 100


@dataclass
class FileTags:
    """The definitions and references of one file.

    `defs` holds (name, line, parent, text): the 1-based line, the index in `defs` of the
    enclosing definition (-1 at top level) and the line holding its name, stripped. `refs`
    counts names referred to but not defined in the file (nor a parameter there, in Python); a
    name called as an attribute (`x.name()`, whose target only types could tell) is counted
    under `.name`."""

    defs: list[tuple[str, int, int, str]] = field(default_factory=list)
    refs: dict[str, int] = field(default_factory=dict)

    def to_data(self) -> tuple[Any, ...]:
        return (self.defs, self.refs)

    @classmethod
    def from_data(cls, data: tuple[Any, ...]) -> FileTags:
        return cls([tuple(d) for d in data[0]], dict(data[1]))  # type: ignore[misc]


@cache
def _query(language: str) -> tuple[Any, Any]:
    from tree_sitter import Query
    from tree_sitter_language_pack import get_language, get_parser

    return get_parser(language), Query(get_language(language), QUERIES[language])  # type: ignore[arg-type]


def extract_tags(language: str, source: bytes) -> FileTags:
    """Parse `source` and collect its tags; an unparsable file yields what parsed."""
    from tree_sitter import QueryCursor

    parser, query = _query(language)
    tree = parser.parse(source)
    captures = QueryCursor(query).captures(tree.root_node)
    def_nodes = sorted(captures.get("def", []), key=lambda n: n.start_byte)
    tags = FileTags()
    spans: list[tuple[int, int, int]] = []  # (start, end, index) of open definitions
    seen: set[int] = set()
    for name_node in def_nodes:
        if name_node.start_byte in seen:
            continue
        seen.add(name_node.start_byte)
        node = _definition_of(name_node)
        while spans and spans[-1][1] <= node.start_byte:
            spans.pop()
        parent = spans[-1][2] if spans else -1
        spans.append((node.start_byte, node.end_byte, len(tags.defs)))
        name = source[name_node.start_byte:name_node.end_byte].decode(errors="replace")
        tags.defs.append((name, name_node.start_point[0] + 1, parent,
                          _line_at(source, name_node.start_byte)))
    defined = {d[0] for d in tags.defs}
    local = {source[n.start_byte:n.end_byte].decode(errors="replace")
             for n in captures.get("local", [])}  # a call of a parameter is no reference
    counts: Counter[str] = Counter()
    for capture, prefix in (("ref", ""), ("ref.attr", ".")):
        for node in captures.get(capture, []):
            if node.start_byte not in seen:
                name = source[node.start_byte:node.end_byte].decode(errors="replace")
                if name not in defined and (prefix or name not in local):
                    counts[prefix + name] += 1
    tags.refs = dict(counts)
    return tags


def parse_file(job: tuple[str, str, str, int]) -> tuple[str, FileTags]:
    """(path, tags) of a (root, path, language, size limit) job; the file is read without
    leaving `root` (`tools.workspace_fs`); one that cannot be read has no tags."""
    root, path, language, limit = job
    try:
        return path, extract_tags(language, WorkspaceFS(Path(root)).read_bytes(path, limit))
    except (OSError, ValueError):
        return path, FileTags()


def _definition_of(name_node: Any) -> Any:
    node = name_node
    for _ in range(6):
        parent = node.parent
        if parent is None:
            break
        node = parent
        if node.type in DEFINITION_NODES:
            return node
    return name_node


def _line_at(source: bytes, name_start: int) -> str:
    """The line holding a definition's name, stripped and cut to MAX_SIGNATURE_CHARS."""
    start = source.rfind(b"\n", 0, name_start) + 1
    end = source.find(b"\n", name_start)
    text = source[start:end if end >= 0 else len(source)].decode(errors="replace").strip()
    return text if len(text) <= MAX_SIGNATURE_CHARS else text[:MAX_SIGNATURE_CHARS - 3] + "..."
