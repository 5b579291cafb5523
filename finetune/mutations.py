"""Candidate bugs by program transformation: parse a module with libcst, change one thing inside
one of its functions, print it back.

    sites = find_sites(source, "pkg/mod.py", kinds=["flip_comparison"])
    buggy = apply_site(sites[0])

Each kind is a small class with a name and `variants(node)`: the replacements it proposes for
one node of the syntax tree (a new node, `cst.RemoveFromParent()`, or a `cst.FlattenSentinel`).
Only nodes inside a function body (or a function's defaults) are changed; docstrings never are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

Replacement = cst.CSTNode | cst.RemovalSentinel | cst.FlattenSentinel[cst.BaseStatement]


def _one() -> cst.Integer:
    return cst.Integer("1")


def _atomic(expr: cst.BaseExpression) -> cst.BaseExpression:
    """`expr` in parentheses unless it binds tighter than any operator we wrap it in."""
    simple = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.SimpleString)
    if isinstance(expr, simple) or expr.lpar:
        return expr
    return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _shift(expr: cst.BaseExpression, delta: int) -> cst.BaseExpression:
    """`expr + delta` (an integer literal is changed in place)."""
    if isinstance(expr, cst.Integer) and expr.value.isdigit():
        value = int(expr.value) + delta
        if value >= 0:
            return expr.with_changes(value=str(value))
    operator: cst.BaseBinaryOp = cst.Add() if delta > 0 else cst.Subtract()
    return cst.BinaryOperation(left=_atomic(expr), operator=operator, right=cst.Integer(
        str(abs(delta))))


def _is_docstring(node: cst.CSTNode) -> bool:
    return (isinstance(node, cst.SimpleStatementLine) and len(node.body) == 1
            and isinstance(node.body[0], cst.Expr)
            and isinstance(node.body[0].value, cst.SimpleString | cst.ConcatenatedString))


def _has_flow(statement: cst.CSTNode) -> bool:
    flow = (cst.Return, cst.Raise, cst.Continue, cst.Break)
    return isinstance(statement, cst.SimpleStatementLine) and any(
        isinstance(small, flow) for small in statement.body)


def _with_op(old: cst.CSTNode, new_type: type[cst.CSTNode]) -> cst.CSTNode:
    """An operator of `new_type` with `old`'s surrounding whitespace."""
    changes = {name: getattr(old, name) for name in ("whitespace_before", "whitespace_after")
               if hasattr(old, name)}
    return new_type(**changes)


class Mutation:
    """One kind of bug: which nodes it changes and how."""

    name: ClassVar[str]
    summary: ClassVar[str]

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        raise NotImplementedError


class FlipComparison(Mutation):
    name, summary = "flip_comparison", "a comparison operator is flipped (< to <=, == to !=)"
    PAIRS: ClassVar[dict[type, type]] = {
        cst.LessThan: cst.LessThanEqual, cst.LessThanEqual: cst.LessThan,
        cst.GreaterThan: cst.GreaterThanEqual, cst.GreaterThanEqual: cst.GreaterThan,
        cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal, cst.Is: cst.IsNot, cst.IsNot: cst.Is,
        cst.In: cst.NotIn, cst.NotIn: cst.In,
    }

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.ComparisonTarget) or type(node.operator) not in self.PAIRS:
            return []
        new_op = _with_op(node.operator, self.PAIRS[type(node.operator)])
        return [node.with_changes(operator=new_op)]


class SwapOperator(Mutation):
    name, summary = "swap_operator", "an arithmetic or boolean operator is swapped (+ to -)"
    BINARY: ClassVar[dict[type, type]] = {
        cst.Add: cst.Subtract, cst.Subtract: cst.Add, cst.Multiply: cst.Divide,
        cst.Divide: cst.Multiply, cst.FloorDivide: cst.Multiply, cst.Modulo: cst.FloorDivide,
        cst.AddAssign: cst.SubtractAssign, cst.SubtractAssign: cst.AddAssign,
        cst.And: cst.Or, cst.Or: cst.And,
    }

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.BinaryOperation | cst.BooleanOperation | cst.AugAssign):
            return []
        operator = node.operator
        if type(operator) not in self.BINARY:
            return []
        return [node.with_changes(operator=_with_op(operator, self.BINARY[type(operator)]))]


class ChangeConstant(Mutation):
    name, summary = "change_constant", "a number or boolean constant is changed"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if isinstance(node, cst.Integer) and node.value.isdigit():
            value = int(node.value)
            return [node.with_changes(value=str(value + 1 if value != 1 else 0))]
        if isinstance(node, cst.Name) and node.value in ("True", "False"):
            return [node.with_changes(value="False" if node.value == "True" else "True")]
        return []


class OffByOne(Mutation):
    name, summary = "off_by_one", "a slice bound or range() end is off by one"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if isinstance(node, cst.Slice):
            found: list[Replacement] = []
            if node.upper is not None:
                found.append(node.with_changes(upper=_shift(node.upper, -1)))
            if node.lower is not None:
                found.append(node.with_changes(lower=_shift(node.lower, 1)))
            return found
        if (isinstance(node, cst.Call) and isinstance(node.func, cst.Name)
                and node.func.value == "range" and 1 <= len(node.args) <= 3
                and all(not a.star and a.keyword is None for a in node.args)):
            stop = 0 if len(node.args) == 1 else 1
            args = list(node.args)
            args[stop] = args[stop].with_changes(value=_shift(args[stop].value, -1))
            return [node.with_changes(args=args)]
        return []


class RemoveReturn(Mutation):
    name, summary = "remove_return", "a `return value` is removed"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if isinstance(node, cst.Return) and node.value is not None and not (
                isinstance(node.value, cst.Name) and node.value.value == "None"):
            return [cst.Pass()]
        return []


class RemoveStatement(Mutation):
    name, summary = "remove_statement", "one line of a function body is deleted"
    REMOVABLE = (cst.Assign, cst.AugAssign, cst.AnnAssign, cst.Expr, cst.Raise)

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.IndentedBlock) or len(node.body) < 2:
            return []
        found: list[Replacement] = []
        for index, statement in enumerate(node.body):
            if (isinstance(statement, cst.SimpleStatementLine) and not _is_docstring(statement)
                    and all(isinstance(s, self.REMOVABLE) for s in statement.body)):
                found.append(node.with_changes(body=[*node.body[:index],
                                                     *node.body[index + 1:]]))
        return found


class SwapArguments(Mutation):
    name, summary = "swap_arguments", "two arguments of a call are swapped"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.Call) or len(node.args) < 2:
            return []
        first, second = node.args[0], node.args[1]
        if any(a.star or a.keyword is not None for a in (first, second)):
            return []
        if cst.Module([]).code_for_node(first.value) == cst.Module([]).code_for_node(
                second.value):
            return []
        args = [first.with_changes(value=second.value), second.with_changes(value=first.value),
                *node.args[2:]]
        return [node.with_changes(args=args)]


def _negate(test: cst.BaseExpression) -> cst.BaseExpression:
    if isinstance(test, cst.BooleanOperation | cst.IfExp | cst.NamedExpr) and not test.lpar:
        test = test.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
    return cst.UnaryOperation(operator=cst.Not(), expression=test)


class InvertCondition(Mutation):
    name, summary = "invert_condition", "an `if` or `while` condition is inverted"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.If | cst.While | cst.IfExp):
            return []
        test = node.test
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            return []
        return [node.with_changes(test=_negate(test))]


class DropCondition(Mutation):
    name, summary = "drop_condition", "a guard or one half of a condition is dropped"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        found: list[Replacement] = []
        if isinstance(node, cst.If) and isinstance(node.test, cst.BooleanOperation):
            found += [node.with_changes(test=node.test.left),
                      node.with_changes(test=node.test.right)]
        if isinstance(node, cst.IndentedBlock):
            for index, statement in enumerate(node.body):
                if (isinstance(statement, cst.If) and statement.orelse is None
                        and isinstance(statement.body, cst.IndentedBlock)):
                    body = [*node.body[:index], *statement.body.body, *node.body[index + 1:]]
                    found.append(node.with_changes(body=body))
        return found


class WrongDefault(Mutation):
    name, summary = "wrong_default", "a parameter's default value is wrong"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.Parameters):
            return []
        found: list[Replacement] = []
        for group in ("params", "kwonly_params"):
            params = list(getattr(node, group))
            for index, param in enumerate(params):
                default = param.default
                new: cst.BaseExpression | None = None
                if isinstance(default, cst.Integer) and default.value.isdigit():
                    new = default.with_changes(value=str(int(default.value) + 1))
                elif isinstance(default, cst.Name) and default.value in ("True", "False"):
                    new = default.with_changes(value=str(default.value != "True"))
                elif isinstance(default, cst.SimpleString) and default.value in ("''", '""'):
                    new = default.with_changes(value="' '")
                elif isinstance(default, cst.SimpleString) and len(default.value) <= 12:
                    new = default.with_changes(value="''")
                if new is not None:
                    changed = [*params[:index], param.with_changes(default=new),
                               *params[index + 1:]]
                    found.append(node.with_changes(**{group: changed}))
        return found


class WrongAttribute(Mutation):
    name, summary = "wrong_attribute", "a similar method or builtin is called instead"
    METHODS: ClassVar[dict[str, str]] = {
        "append": "extend", "extend": "append", "lower": "upper", "upper": "lower",
        "startswith": "endswith", "endswith": "startswith", "lstrip": "rstrip",
        "rstrip": "lstrip", "find": "rfind", "rfind": "find", "index": "rindex",
        "rindex": "index", "keys": "values", "values": "keys", "ljust": "rjust",
        "rjust": "ljust", "popleft": "pop", "appendleft": "append", "isdigit": "isalpha",
        "discard": "add", "add": "discard", "split": "rsplit", "insert": "append",
    }
    BUILTINS: ClassVar[dict[str, str]] = {"min": "max", "max": "min", "any": "all",
                                          "all": "any"}

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.Call):
            return []
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in self.METHODS:
            attr = func.attr.with_changes(value=self.METHODS[func.attr.value])
            if func.attr.value == "insert" and len(node.args) == 2:  # insert(0, x) -> append(x)
                last = node.args[1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                return [node.with_changes(func=func.with_changes(attr=attr), args=[last])]
            if func.attr.value != "insert":
                return [node.with_changes(func=func.with_changes(attr=attr))]
        if isinstance(func, cst.Name) and func.value in self.BUILTINS:
            return [node.with_changes(func=func.with_changes(value=self.BUILTINS[func.value]))]
        return []


class RemoveNot(Mutation):
    name, summary = "remove_not", "a `not` is removed"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not):
            expression = node.expression
            if node.lpar:
                expression = expression.with_changes(lpar=node.lpar, rpar=node.rpar)
            return [expression]
        return []


class ShuffleStatements(Mutation):
    name, summary = "shuffle_statements", "two statements of a function run in the wrong order"

    def variants(self, node: cst.CSTNode) -> list[Replacement]:
        if not isinstance(node, cst.IndentedBlock):
            return []
        found: list[Replacement] = []
        body = list(node.body)
        for index in range(len(body) - 1):
            first, second = body[index], body[index + 1]
            if all(isinstance(s, cst.SimpleStatementLine) and not _is_docstring(s)
                   and not _has_flow(s) for s in (first, second)):
                swapped = [*body[:index], second, first, *body[index + 2:]]
                found.append(node.with_changes(body=swapped))
        return found


KINDS: dict[str, Mutation] = {kind.name: kind for kind in (
    FlipComparison(), SwapOperator(), ChangeConstant(), OffByOne(), RemoveReturn(),
    RemoveStatement(), SwapArguments(), InvertCondition(), DropCondition(), WrongDefault(),
    WrongAttribute(), RemoveNot(), ShuffleStatements())}
"""Every kind of bug, by name (`--kinds`)."""


@dataclass(eq=False)
class Site:
    """One candidate bug: replace `node` of `path`'s tree with `replacement`."""

    path: str
    kind: str
    function: str
    """Qualified name of the enclosing function (`Class.method`)."""
    line: int
    module: cst.Module
    node: cst.CSTNode
    replacement: Replacement

    @property
    def key(self) -> tuple[str, str, str]:
        """Near-duplicates share it: same file, function and kind."""
        return self.path, self.function, self.kind


class _SiteFinder(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, path: str, module: cst.Module, kinds: Sequence[Mutation]) -> None:
        super().__init__()
        self.path, self.module, self.kinds = path, module, kinds
        self.scope: list[tuple[str, bool]] = []
        self.sites: list[Site] = []

    def _function(self) -> str | None:
        if not any(is_function for _, is_function in self.scope):
            return None
        return ".".join(name for name, _ in self.scope)

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef | cst.ClassDef):
            self.scope.append((node.name.value, isinstance(node, cst.FunctionDef)))
        function = self._function()
        if function is not None and not _is_docstring(node):
            line = self.get_metadata(PositionProvider, node).start.line
            for kind in self.kinds:
                for replacement in kind.variants(node):
                    self.sites.append(Site(self.path, kind.name, function, line, self.module,
                                           node, replacement))
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, cst.FunctionDef | cst.ClassDef):
            self.scope.pop()


class _Replace(cst.CSTTransformer):
    def __init__(self, target: cst.CSTNode, replacement: Replacement) -> None:
        super().__init__()
        self.target, self.replacement = target, replacement

    def on_leave(  # type: ignore[override]
            self, original_node: cst.CSTNode, updated_node: cst.CSTNode) -> Replacement:
        return self.replacement if original_node is self.target else updated_node


def find_sites(source: str, path: str, kinds: Sequence[str] | None = None) -> list[Site]:
    """Every candidate bug in `source` (the file at `path`); raises cst.ParserSyntaxError."""
    chosen = [KINDS[name] for name in (kinds or KINDS)]
    wrapper = MetadataWrapper(cst.parse_module(source))
    finder = _SiteFinder(path, wrapper.module, chosen)
    wrapper.visit(finder)
    return finder.sites


def apply_site(site: Site) -> str:
    """The source of the file with the site's bug in it."""
    return site.module.visit(_Replace(site.node, site.replacement)).code
