"""A static checker for CEL policy expressions, run when a bundle loads.

cel-python evaluates CEL but has no type checker, so a typo such as
``contact.stge`` would only fail when a message is decided. `check` walks the
lark tree that ``celpy.Environment().compile`` builds and reports every problem
it finds, each with its line and column in the expression and a sentence a
compliance officer can act on.

Plan of `check`:
  1. refuse a source longer than the length limit before parsing it;
  2. parse, then count the AST nodes and measure the nesting depth (one node per
     CEL construct; lark's single-child chain nodes and parentheses do not
     count, and a chain of the same ``&&``/``||`` counts as one level);
  3. infer the type of every node bottom-up, reporting unknown identifiers,
     unknown fields of closed records, unknown functions and methods, wrong
     argument counts and operators applied to incompatible known types;
  4. compare the inferred type of the whole expression with the expected one.

Invariant: no false alarms. Where the checker cannot know a type (a ``dyn``
value, a map of ``dyn``, a comprehension over ``dyn``, a mixed list or map
literal, a conditional whose branches differ, an indexed string or record, a
message construction, ``dyn(x)``), it infers ``dyn``, which agrees with every
type, and reports nothing. Operators follow cel-python, which raises on mixed
numbers (``1 == 1.0``, ``1 < 1u``), so the checker reports those too.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import celpy
from celpy.celparser import CELParseError
from lark import Token, Tree

__all__ = [
    "BOOL",
    "BYTES",
    "DOUBLE",
    "DURATION",
    "DYN",
    "INT",
    "NULL",
    "STRING",
    "TIMESTAMP",
    "TYPE",
    "UINT",
    "CelType",
    "CheckProblem",
    "FunctionSig",
    "Limits",
    "TypeEnv",
    "check",
    "list_of",
    "map_of",
    "record",
]

Node = Tree[Token]


# -- Types ---------------------------------------------------------------------


@dataclass(frozen=True)
class CelType:
    """A CEL type: a primitive, list(elem), map(key, value) or a closed record.

    `kind` is one of bool, int, uint, double, string, bytes, timestamp,
    duration, null, dyn, type, list, map, record. `args` holds a list's element
    type or a map's key and value types; a record has a `name` and `members`,
    its fields sorted by name.
    """

    kind: str
    args: tuple[CelType, ...] = ()
    name: str = ""
    members: tuple[tuple[str, CelType], ...] = ()

    @property
    def fields(self) -> dict[str, CelType]:
        """A record's fields by name (empty for every other kind)."""
        return dict(self.members)

    def __str__(self) -> str:
        if self.kind == "record":
            return self.name
        if self.args:
            return f"{self.kind}({', '.join(str(a) for a in self.args)})"
        return self.kind


BOOL = CelType("bool")
INT = CelType("int")
UINT = CelType("uint")
DOUBLE = CelType("double")
STRING = CelType("string")
BYTES = CelType("bytes")
TIMESTAMP = CelType("timestamp")
DURATION = CelType("duration")
NULL = CelType("null")
DYN = CelType("dyn")
TYPE = CelType("type")


def list_of(elem: CelType) -> CelType:
    return CelType("list", (elem,))


def map_of(key: CelType, value: CelType) -> CelType:
    return CelType("map", (key, value))


def record(name: str, fields: Mapping[str, CelType]) -> CelType:
    """A closed record: selecting a field it does not declare is an error."""
    return CelType("record", name=name, members=tuple(sorted(fields.items())))


_NUMBERS = frozenset({"int", "uint", "double"})
_ORDERED = _NUMBERS | {"string", "bytes", "bool", "timestamp", "duration"}
_MAP_KEYS = frozenset({"int", "uint", "bool", "string", "dyn"})


def _assignable(given: CelType, wanted: CelType) -> bool:
    """Whether a value of type `given` may stand where `wanted` is expected."""
    if DYN in (given, wanted):
        return True
    if given.kind != wanted.kind:
        return False
    if given.kind == "record":
        return given == wanted
    return all(_assignable(g, w) for g, w in zip(given.args, wanted.args, strict=True))


def _comparable(left: CelType, right: CelType) -> bool:
    """Whether `==` between the two types can ever succeed."""
    if NULL in (left, right):
        return True
    return _assignable(left, right)


def _join(types: Sequence[CelType]) -> CelType:
    """The common type of a literal's items or a conditional's branches."""
    distinct = set(types)
    return distinct.pop() if len(distinct) == 1 else DYN


def _describe(t: CelType) -> str:
    """A type as a compliance officer reads it: 'a string', 'an int', ..."""
    if t == list_of(DYN):
        return "a list"
    if t == map_of(DYN, DYN):
        return "a map"
    if t.kind == "record":
        return f"a {t.name} record"
    if t.kind in {"null", "bytes"}:
        return t.kind
    if t == DYN:
        return "a value of any type"
    article = "an" if str(t)[0] in "aeio" else "a"
    return f"{article} {t}"


# -- Public API ----------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSig:
    """One overload of a function, or of a method when `receiver` is set.

    The last `optional` parameters may be left out.
    """

    name: str
    params: tuple[CelType, ...]
    result: CelType
    receiver: CelType | None = None
    optional: int = 0

    def accepts_count(self, count: int) -> bool:
        return len(self.params) - self.optional <= count <= len(self.params)


@dataclass(frozen=True)
class TypeEnv:
    """The declared variables and the host functions added to the built-ins."""

    variables: Mapping[str, CelType]
    functions: Sequence[FunctionSig] = ()


@dataclass(frozen=True)
class Limits:
    """The size an expression may reach: characters, AST nodes, nesting."""

    max_length: int = 4000
    max_nodes: int = 500
    max_depth: int = 32


@dataclass(frozen=True)
class CheckProblem:
    """One problem, at a 1-based line and column of the expression source."""

    line: int
    column: int
    message: str


# -- Built-in functions (CEL standard definitions) -----------------------------


def _builtins() -> tuple[FunctionSig, ...]:
    sigs: list[FunctionSig] = []
    sized = (STRING, BYTES, list_of(DYN), map_of(DYN, DYN))
    for t in sized:
        sigs += [FunctionSig("size", (t,), INT), FunctionSig("size", (), INT, t)]
    conversions: dict[CelType, tuple[CelType, ...]] = {
        INT: (INT, UINT, DOUBLE, STRING, TIMESTAMP),
        UINT: (INT, UINT, DOUBLE, STRING),
        DOUBLE: (INT, UINT, DOUBLE, STRING),
        STRING: (INT, UINT, DOUBLE, STRING, BYTES, BOOL, TIMESTAMP, DURATION),
        BYTES: (STRING, BYTES),
        BOOL: (BOOL, STRING),
        TIMESTAMP: (STRING, TIMESTAMP),
        DURATION: (STRING, DURATION),
    }
    for result, sources in conversions.items():
        sigs += [FunctionSig(result.kind, (s,), result) for s in sources]
    sigs += [FunctionSig("dyn", (DYN,), DYN), FunctionSig("type", (DYN,), TYPE)]
    sigs.append(FunctionSig("matches", (STRING, STRING), BOOL))
    for name in ("contains", "startsWith", "endsWith", "matches"):
        sigs.append(FunctionSig(name, (STRING,), BOOL, STRING))
    return tuple(sigs) + _time_getters()


def _time_getters() -> tuple[FunctionSig, ...]:
    both = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")
    dated = ("getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek")
    on_timestamp = (*dated, "getDayOfYear", *both)
    return tuple(
        FunctionSig(n, (STRING,), INT, TIMESTAMP, optional=1) for n in on_timestamp
    ) + tuple(FunctionSig(n, (), INT, DURATION) for n in both)


_BUILTINS = _builtins()
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TYPE_NAMES = frozenset({"bool", "bytes", "double", "duration", "dyn", "int", "list"})
_TYPE_NAMES |= {"map", "null_type", "string", "timestamp", "type", "uint"}
# Packages whose names celpy resolves itself, e.g. google.protobuf.Int32Value.
_PACKAGES = frozenset({"google"})


# -- Tree helpers --------------------------------------------------------------

# Rules that are a CEL construct only when they have more than one child.
_OPERATOR_RULES = frozenset({"expr", "conditionalor", "conditionaland", "relation"})
_OPERATOR_RULES |= {"addition", "multiplication", "unary"}
# Rules that pass their single child through.
_CHAIN_RULES = _OPERATOR_RULES | {"member", "primary", "paren_expr"}
# Rules that are always one CEL construct.
_LEAF_RULES = frozenset({"literal", "ident", "dot_ident", "ident_arg", "dot_ident_arg"})
_LEAF_RULES |= {"member_dot", "member_dot_arg", "member_index", "member_object"}
_LEAF_RULES |= {"list_lit", "map_lit"}
_RELATIONS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
}
_ARITHMETIC = {
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}
_LITERALS = {
    "INT_LIT": INT,
    "UINT_LIT": UINT,
    "FLOAT_LIT": DOUBLE,
    "STRING_LIT": STRING,
    "MLSTRING_LIT": STRING,
    "BYTES_LIT": BYTES,
    "BOOL_LIT": BOOL,
    "NULL_LIT": NULL,
}
_SPECIAL_ARITHMETIC = {
    ("+", "string", "string"): STRING,
    ("+", "bytes", "bytes"): BYTES,
    ("+", "timestamp", "duration"): TIMESTAMP,
    ("+", "duration", "timestamp"): TIMESTAMP,
    ("+", "duration", "duration"): DURATION,
    ("-", "timestamp", "timestamp"): DURATION,
    ("-", "timestamp", "duration"): TIMESTAMP,
    ("-", "duration", "duration"): DURATION,
}


def _unwrap(node: Node) -> Node:
    """Skip the chain of single-child rules down to the construct itself."""
    while node.data in _CHAIN_RULES and len(node.children) == 1:
        child = node.children[0]
        if not isinstance(child, Tree):
            break
        node = child
    return node


def _subtrees(node: Node) -> list[Node]:
    return [c for c in node.children if isinstance(c, Tree)]


def _tokens(node: Node) -> list[Token]:
    return [c for c in node.children if isinstance(c, Token)]


def _args(node: Node) -> list[Node]:
    """The argument expressions of a call (its optional exprlist)."""
    lists = [t for t in _subtrees(node) if t.data == "exprlist"]
    return _subtrees(lists[0]) if lists else []


def _tokens_in_order(root: Node) -> Iterator[Token]:
    """The tokens under `root` in source order, without recursion."""
    stack: list[Node | Token] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, Token):
            yield item
        else:
            stack.extend(reversed(item.children))


def _edge_token(node: Node, *, last: bool) -> Token | None:
    """The first (or last) token under `node` that knows its position."""
    placed = [t for t in _tokens_in_order(node) if t.start_pos is not None]
    return (placed[-1] if last else placed[0]) if placed else None


def _bounds(node: Node) -> tuple[int, int] | None:
    """The node's start and end offsets in the source, if known."""
    start: int | None = getattr(node.meta, "start_pos", None)
    end: int | None = getattr(node.meta, "end_pos", None)
    first, last = _edge_token(node, last=False), _edge_token(node, last=True)
    if start is None and first is not None:
        start = first.start_pos
    if end is None and last is not None:
        end = last.end_pos
    return (start, end) if start is not None and end is not None else None


_BOOLEAN_OR_COMMENT = re.compile(r"//[^\n]*|(?<!\w)(true|false)(?!\w)")


def _place_booleans(root: Node, source: str) -> None:
    """Give `true` and `false` tokens their position in the source.

    celpy's lexer callback re-creates these tokens without one; each is the
    first `true`/`false` word after the previous token, outside comments.
    """
    end = 0
    for token in _tokens_in_order(root):
        if token.start_pos is None:
            matches = _BOOLEAN_OR_COMMENT.finditer(source, end)
            found = next((m for m in matches if m.group(1)), None)
            if found is not None:
                _set_position(token, source, found.start(1))
        end = token.end_pos if token.end_pos is not None else end


def _set_position(token: Token, source: str, start: int) -> None:
    line_start = source.rfind("\n", 0, start) + 1
    token.start_pos, token.end_pos = start, start + len(token)
    token.line = token.end_line = source.count("\n", 0, start) + 1
    token.column = start - line_start + 1
    token.end_column = token.column + len(token)


def _is_construct(node: Node) -> bool:
    if node.data in _LEAF_RULES:
        return True
    return node.data in _OPERATOR_RULES and len(node.children) > 1


def _measure(root: Node) -> tuple[int, int]:
    """Count the CEL constructs and the deepest nesting, without recursion."""
    nodes, deepest = 0, 0
    stack: list[tuple[Node, int, str]] = [(root, 0, "")]
    while stack:
        node, depth, parent = stack.pop()
        data = str(node.data)
        if _is_construct(node):
            nodes += 1
            same_chain = data == parent and data in {"conditionalor", "conditionaland"}
            depth += 0 if same_chain else 1
            parent = data
        deepest = max(deepest, depth)
        stack.extend((child, depth, parent) for child in _subtrees(node))
    return nodes, deepest


# -- The checker ---------------------------------------------------------------

Position = tuple[int, int]


class _Checker:
    """Infers types bottom-up and collects problems; one instance per check."""

    def __init__(self, source: str, env: TypeEnv) -> None:
        self.source = source
        self.env = env
        self.sigs = _BUILTINS + tuple(env.functions)
        self.scopes: list[dict[str, CelType]] = []
        self.problems: list[CheckProblem] = []

    # Positions, snippets and reports.

    def report(self, where: Node | Token | Position, message: str) -> None:
        line, column = where if isinstance(where, tuple) else self.position(where)
        self.problems.append(CheckProblem(line, column, message))

    @staticmethod
    def position(where: Node | Token) -> Position:
        if isinstance(where, Token):
            return where.line or 1, where.column or 1
        if getattr(where.meta, "line", None) is not None:
            return where.meta.line, where.meta.column
        first = _edge_token(where, last=False)
        return _Checker.position(first) if first is not None else (1, 1)

    def snippet(self, node: Node) -> str:
        """The node's source text, on one line and shortened, for messages."""
        bounds = _bounds(node)
        if bounds is None:
            return "this expression"
        text = " ".join(self.source[bounds[0] : bounds[1]].split())
        return text if len(text) <= 40 else text[:37] + "..."

    def operator_position(self, op_node: Node, op: str) -> Position:
        """Where a relation's or an arithmetic operator's symbol stands."""
        if op_node.meta.empty:
            return self.position(op_node)
        return op_node.meta.end_line, op_node.meta.end_column - len(op)

    # Dispatch.

    def infer(self, node: Node) -> CelType:
        node = _unwrap(node)
        handler: Callable[[Node], CelType] | None = getattr(self, f"_{node.data}", None)
        return handler(node) if handler is not None else DYN

    def expect(self, node: Node, wanted: CelType, complaint: str) -> CelType:
        """Infer `node`; report `complaint` (formatted) if it is not `wanted`."""
        got = self.infer(node)
        if not _assignable(got, wanted):
            self.report(node, complaint.format(self.snippet(node), _describe(got)))
        return got

    # Operators.

    def _expr(self, node: Node) -> CelType:
        condition, then, otherwise = _subtrees(node)
        self.expect(
            condition,
            BOOL,
            "the condition before '?' must be true or false, but {} gives {}",
        )
        return _join([self.infer(then), self.infer(otherwise)])

    def _logical(self, node: Node, op: str) -> CelType:
        for side in _subtrees(node):
            self.expect(
                side,
                BOOL,
                f"'{op}' needs true or false on each side, but {{}} gives {{}}",
            )
        return BOOL

    def _conditionalor(self, node: Node) -> CelType:
        return self._logical(node, "||")

    def _conditionaland(self, node: Node) -> CelType:
        return self._logical(node, "&&")

    def _unary(self, node: Node) -> CelType:
        op_node, operand = _subtrees(node)
        if op_node.data == "unary_not":
            self.expect(operand, BOOL, "'!' needs true or false, but {} gives {}")
            return BOOL
        got = self.infer(operand)
        if got == DYN or got.kind in {"int", "double", "duration"}:
            return got
        where = self.snippet(operand)
        self.report(operand, f"'-' needs a number, but {where} gives {_describe(got)}")
        return DYN

    def _relation(self, node: Node) -> CelType:
        op_node, right_node = _subtrees(node)
        op = _RELATIONS.get(str(op_node.data), "")
        left_node = _subtrees(op_node)[0]
        left, right = self.infer(left_node), self.infer(right_node)
        at = self.operator_position(op_node, op)
        if op == "in":
            self.check_in(left, right, right_node, at)
        elif not self.relation_ok(op, left, right):
            self.report(
                at, self.mismatch(op, "compare", left_node, right_node, (left, right))
            )
        return BOOL

    @staticmethod
    def relation_ok(op: str, left: CelType, right: CelType) -> bool:
        if op in {"==", "!="}:
            return _comparable(left, right)
        if DYN in (left, right):
            return all(t == DYN or t.kind in _ORDERED for t in (left, right))
        return left == right and left.kind in _ORDERED

    def mismatch(
        self, op: str, verb: str, left: Node, right: Node, types: Sequence[CelType]
    ) -> str:
        return (
            f"'{op}' cannot {verb} {self.snippet(left)} ({_describe(types[0])}) "
            f"with {self.snippet(right)} ({_describe(types[1])})"
        )

    def check_in(
        self, item: CelType, container: CelType, node: Node, at: Position
    ) -> None:
        where = self.snippet(node)
        if container.kind not in {"list", "map", "dyn"}:
            self.report(
                at,
                f"'in' needs a list or a map on its right, but {where} "
                f"gives {_describe(container)}",
            )
            return
        if container == DYN or _comparable(item, container.args[0]):
            return
        holds = "items" if container.kind == "list" else "keys"
        self.report(
            at,
            f"'in' cannot look for {_describe(item)} among the "
            f"{container.args[0]} {holds} of {where}",
        )

    def _arithmetic(self, node: Node) -> CelType:
        op_node, right_node = _subtrees(node)
        op = _ARITHMETIC.get(str(op_node.data), "")
        left_node = _subtrees(op_node)[0]
        left, right = self.infer(left_node), self.infer(right_node)
        result = _arithmetic_result(op, left, right)
        if result is None:
            at = self.operator_position(op_node, op)
            self.report(
                at, self.mismatch(op, "combine", left_node, right_node, (left, right))
            )
            return DYN
        return result

    def _addition(self, node: Node) -> CelType:
        return self._arithmetic(node)

    def _multiplication(self, node: Node) -> CelType:
        return self._arithmetic(node)

    # Names, fields and indexes.

    def _ident(self, node: Node) -> CelType:
        token = _tokens(node)[0]
        name = str(token)
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in self.env.variables:
            return self.env.variables[name]
        if name in _TYPE_NAMES:
            return TYPE
        if name in _PACKAGES:
            return DYN
        known = sorted({*self.env.variables, *(n for s in self.scopes for n in s)})
        hint = _did_you_mean(name, known) or f"; known names: {', '.join(known)}"
        self.report(token, f"unknown identifier '{name}'{hint}")
        return DYN

    def _dot_ident(self, node: Node) -> CelType:
        return self._ident(node)

    def _member_dot(self, node: Node) -> CelType:
        operand = _subtrees(node)[0]
        return self.select(operand, self.infer(operand), _tokens(node)[0])

    def select(self, operand: Node, of: CelType, field: Token) -> CelType:
        if of.kind == "record":
            if str(field) in of.fields:
                return of.fields[str(field)]
            self.report(field, _unknown_field(str(field), of))
            return DYN
        if of.kind == "map":
            return of.args[1]
        if of != DYN:
            self.report(
                field,
                f"{self.snippet(operand)} gives {_describe(of)}, "
                f"which has no field '{field}'",
            )
        return DYN

    def _member_index(self, node: Node) -> CelType:
        operand, index_node = _subtrees(node)
        of, index = self.infer(operand), self.infer(index_node)
        if of.kind == "list":
            self.expect_index(index_node, index, INT, "a list position")
            return of.args[0]
        if of.kind == "map":
            self.expect_index(index_node, index, of.args[0], "a key")
            return of.args[1]
        if of.kind not in {"dyn", "string", "bytes", "record"}:
            self.report(
                index_node,
                f"{self.snippet(operand)} gives "
                f"{_describe(of)}, which cannot be indexed",
            )
        return DYN

    def expect_index(
        self, node: Node, index: CelType, wanted: CelType, what: str
    ) -> None:
        fits = _comparable(index, wanted) or {index, wanted} == {INT, UINT}
        if not fits:
            self.report(
                node,
                f"{what} here must be {_describe(wanted)}, but "
                f"{self.snippet(node)} gives {_describe(index)}",
            )

    def _member_object(self, node: Node) -> CelType:
        for child in _subtrees(node)[1:]:
            for value in _subtrees(child):
                self.infer(value)
        return DYN

    # Literals.

    def _literal(self, node: Node) -> CelType:
        return _LITERALS.get(_tokens(node)[0].type, DYN)

    def _list_lit(self, node: Node) -> CelType:
        items = [self.infer(item) for item in _args(node)]
        return list_of(_join(items) if items else DYN)

    def _map_lit(self, node: Node) -> CelType:
        inits = [t for t in _subtrees(node) if t.data == "mapinits"]
        parts = _subtrees(inits[0]) if inits else []
        keys = [self.infer(k) for k in parts[0::2]]
        values = [self.infer(v) for v in parts[1::2]]
        for key_node, key in zip(parts[0::2], keys, strict=True):
            if key.kind not in _MAP_KEYS:
                self.report(
                    key_node,
                    f"a map key must be a string, an int, a uint "
                    f"or a bool, but {self.snippet(key_node)} gives "
                    f"{_describe(key)}",
                )
        return map_of(_join(keys) if keys else DYN, _join(values) if values else DYN)

    # Calls and macros.

    def _ident_arg(self, node: Node) -> CelType:
        name, args = _tokens(node)[0], _args(node)
        if str(name) == "has":
            return self.has_macro(name, args)
        arg_types = [self.infer(a) for a in args]
        if str(name) == "dyn" and len(args) == 1:
            return DYN
        return self.call(name, None, arg_types, args)

    def _dot_ident_arg(self, node: Node) -> CelType:
        return self._ident_arg(node)

    def has_macro(self, name: Token, args: list[Node]) -> CelType:
        selection = _unwrap(args[0]) if len(args) == 1 else None
        if selection is None or selection.data != "member_dot":
            self.report(
                name,
                "has() needs exactly one field selection, e.g. "
                "has(contact.attributes.vip)",
            )
            for arg in args:
                self.infer(arg)
            return BOOL
        self._member_dot(selection)
        return BOOL

    def _member_dot_arg(self, node: Node) -> CelType:
        operand, name, args = _subtrees(node)[0], _tokens(node)[0], _args(node)
        if str(name) in _MACROS:
            return self.macro(operand, name, args)
        receiver = self.infer(operand)
        arg_types = [self.infer(a) for a in args]
        return self.call(name, (operand, receiver), arg_types, args)

    def macro(self, operand: Node, name: Token, args: list[Node]) -> CelType:
        of = self.infer(operand)
        counts = (2, 3) if str(name) == "map" else (2,)
        variable = _as_ident(args[0]) if args else None
        if len(args) not in counts or variable is None:
            self.report(
                name,
                f"'{name}' takes a variable name and an expression, "
                f"e.g. list.{name}(x, x > 0)",
            )
            return DYN
        if of.kind not in {"list", "map", "dyn"}:
            self.report(
                name,
                f"'{name}' works on a list or a map, but "
                f"{self.snippet(operand)} gives {_describe(of)}",
            )
        item = of.args[0] if of.kind in {"list", "map"} else DYN
        self.scopes.append({str(variable): item})
        try:
            return self.macro_body(str(name), item, args[1:])
        finally:
            self.scopes.pop()

    def macro_body(self, name: str, item: CelType, body: list[Node]) -> CelType:
        if name == "map":
            if len(body) == 2:
                self.expect(
                    body[0],
                    BOOL,
                    "the filter of 'map' must be true or false, but {} gives {}",
                )
            return list_of(self.infer(body[-1]))
        self.expect(
            body[0],
            BOOL,
            f"the condition of '{name}' must be true or false, but {{}} gives {{}}",
        )
        return list_of(item) if name == "filter" else BOOL

    def call(
        self,
        name: Token,
        receiver: tuple[Node, CelType] | None,
        arg_types: list[CelType],
        args: list[Node],
    ) -> CelType:
        """Resolve a function (no receiver) or a method against its overloads."""
        style = self.same_style(name, receiver is not None)
        if not style:
            return DYN
        counted = [s for s in style if s.accepts_count(len(arg_types))]
        if not counted:
            message = _arity_message(str(name), style, len(arg_types))
            self.report(name, message)
            return DYN
        if receiver is not None:
            counted = self.match_receiver(name, counted, *receiver)
        matched = [s for s in counted if _args_fit(s, arg_types)]
        if counted and not matched:
            self.report(name, self.argument_message(name, counted, arg_types, args))
        return _join([s.result for s in matched]) if matched else DYN

    def same_style(self, name: Token, is_method: bool) -> list[FunctionSig]:
        """The overloads called the same way; report if there are none."""
        named = [s for s in self.sigs if s.name == str(name)]
        style = [s for s in named if (s.receiver is not None) == is_method]
        kind = "method" if is_method else "function"
        if not named:
            names = {s.name for s in self.sigs if (s.receiver is not None) == is_method}
            hint = _did_you_mean(str(name), names)
            self.report(name, f"{kind} '{name}' does not exist{hint}")
        elif not style and is_method:
            self.report(
                name, f"'{name}' is a function, not a method; write it as {name}(...)"
            )
        elif not style:
            self.report(name, f"'{name}' is a method; write it as value.{name}(...)")
        return style

    def match_receiver(
        self, name: Token, sigs: list[FunctionSig], operand: Node, of: CelType
    ) -> list[FunctionSig]:
        fitting = [s for s in sigs if s.receiver and _assignable(of, s.receiver)]
        if not fitting:
            kinds = _alternatives([_describe(s.receiver) for s in sigs if s.receiver])
            self.report(
                name,
                f"method '{name}' applies to {kinds}, but "
                f"{self.snippet(operand)} gives {_describe(of)}",
            )
        return fitting

    def argument_message(
        self,
        name: Token,
        sigs: list[FunctionSig],
        given: list[CelType],
        args: list[Node],
    ) -> str:
        """Name the first argument that no overload accepts, else list them."""
        for i, (got, arg) in enumerate(zip(given, args, strict=True)):
            params = [s.params[i] for s in sigs if i < len(s.params)]
            if params and not any(_assignable(got, p) for p in params):
                wanted = _alternatives([_describe(p) for p in params])
                return (
                    f"argument {i + 1} of '{name}' must be {wanted}, but "
                    f"{self.snippet(arg)} gives {_describe(got)}"
                )
        accepted = _alternatives([_signature(s) for s in sigs])
        given_text = ", ".join(str(t) for t in given)
        return f"'{name}' accepts {accepted}, but is given ({given_text})"


# -- Pure helpers for messages and overloads ------------------------------------


def _arithmetic_result(op: str, left: CelType, right: CelType) -> CelType | None:
    """The type of `left op right`, DYN if unknown, None if no overload fits."""
    if DYN in (left, right):
        return DYN
    if left == right and left.kind in _NUMBERS:
        return None if op == "%" and left == DOUBLE else left
    if op == "+" and left.kind == right.kind == "list":
        return list_of(_join([left.args[0], right.args[0]]))
    return _SPECIAL_ARITHMETIC.get((op, left.kind, right.kind))


def _args_fit(sig: FunctionSig, given: Sequence[CelType]) -> bool:
    return all(_assignable(g, p) for g, p in zip(given, sig.params, strict=False))


def _as_ident(node: Node) -> Token | None:
    node = _unwrap(node)
    return _tokens(node)[0] if node.data == "ident" else None


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(known)), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _unknown_field(name: str, of: CelType) -> str:
    known = ", ".join(of.fields)
    hint = _did_you_mean(name, of.fields)
    return f"unknown field '{name}' of {of.name}; known fields: {known}{hint}"


def _signature(sig: FunctionSig) -> str:
    return f"({', '.join(str(p) for p in sig.params)})"


def _alternatives(items: Sequence[str]) -> str:
    unique = list(dict.fromkeys(items))
    if len(unique) == 1:
        return unique[0]
    return f"{', '.join(unique[:-1])} or {unique[-1]}"


def _arity_message(name: str, sigs: Sequence[FunctionSig], given: int) -> str:
    counts = sorted(
        {n for s in sigs for n in range(len(s.params) - s.optional, len(s.params) + 1)}
    )
    plural = "" if counts == [1] else "s"
    detail = f" {_signature(sigs[0])}" if len(sigs) == 1 and sigs[0].params else ""
    wanted = _alternatives([str(n) for n in counts])
    kind = "function" if sigs[0].receiver is None else "method"
    return (
        f"{kind} '{name}' takes {wanted} argument{plural}{detail}, but is given {given}"
    )


def _expectation(expected: CelType, got: CelType) -> str:
    gives = _describe(got)
    if expected == BOOL:
        return f"condition must be true or false, but this expression gives {gives}"
    return f"this expression must give {_describe(expected)}, but it gives {gives}"


# -- Entry point ----------------------------------------------------------------

_ENV = celpy.Environment()


def _parse(source: str) -> Node | CheckProblem:
    try:
        tree: Any = _ENV.compile(source)
    except CELParseError as exc:
        line, column = exc.line or 1, exc.column or 1
        return CheckProblem(line, column, f"the expression is not valid CEL: {exc}")
    return cast(Node, tree)


def _limit_problems(tree: Node, limits: Limits) -> list[CheckProblem]:
    nodes, depth = _measure(tree)
    problems = []
    if nodes > limits.max_nodes:
        message = f"the expression has {nodes} parts; the limit is {limits.max_nodes}"
        problems.append(CheckProblem(1, 1, message))
    if depth > limits.max_depth:
        message = f"the expression is nested {depth} levels deep; "
        message += f"the limit is {limits.max_depth}"
        problems.append(CheckProblem(1, 1, message))
    return problems


def check(
    source: str,
    env: TypeEnv,
    expected: CelType | None = None,
    limits: Limits = Limits(),
) -> tuple[CelType, list[CheckProblem]]:
    """Infer the type of one CEL expression and report every problem found.

    Returns the inferred type (DYN when unknown) and the problems in source
    order; an empty list means the expression is accepted.
    """
    # 1. Length, before parsing.
    if len(source) > limits.max_length:
        message = f"the expression is {len(source)} characters long; "
        message += f"the limit is {limits.max_length}"
        return DYN, [CheckProblem(1, 1, message)]

    # 2. Parse; size and depth.
    tree = _parse(source)
    if isinstance(tree, CheckProblem):
        return DYN, [tree]
    problems = _limit_problems(tree, limits)
    if problems:
        return DYN, problems

    # 3. Types.
    _place_booleans(tree, source)
    checker = _Checker(source, env)
    try:
        result = checker.infer(tree)
    except RecursionError:
        message = "the expression is nested too deeply to be checked"
        return DYN, [CheckProblem(1, 1, message)]

    # 4. Expected result.
    if expected is not None and not _assignable(result, expected):
        checker.report(tree, _expectation(expected, result))
    problems = sorted(checker.problems, key=lambda p: (p.line, p.column))
    return result, problems
