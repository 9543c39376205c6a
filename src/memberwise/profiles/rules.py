"""The safe rule language operators write tags, tiers and criteria in.

A rule is one boolean expression over profile fields, in SQL syntax::

    share_events_22_to_02 >= 0.4 and events_90d >= 20
    region in ('浙江', '上海') and not spend_365d between 0 and 10000

Allowed: field names, number / string / true / false / null literals, ``+ - * / %``, unary
minus, comparisons, ``and or not``, ``in (...)`` with literals, ``between``, ``is [not] null``,
and the functions in :data:`FUNCTIONS`. Everything else (subqueries, other functions, table
names, several statements) is refused. Rules are parsed with sqlglot and type-checked against
the field catalog when the program is loaded, so a bad rule is refused with its name, the
position and a sentence before any build runs; a rule that loads always compiles to an Ibis
expression that runs on every engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import ibis
import ibis.expr.types as ir
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from memberwise.kit.errors import InvalidRequest


class FieldType(StrEnum):
    """What a profile field holds, as the rule checker sees it."""

    number = "number"
    string = "string"
    boolean = "boolean"
    timestamp = "timestamp"


class _Null(StrEnum):
    null = "null"  # the type of a bare NULL: fits any comparison


#: Whitelisted functions: name -> (min args, max args).
FUNCTIONS: dict[str, tuple[int, int]] = {
    "abs": (1, 1),
    "least": (2, 8),
    "greatest": (2, 8),
    "coalesce": (2, 8),
    "round": (1, 2),
}
MAX_RULE_LENGTH = 2000


class RuleError(InvalidRequest):
    """A rule that cannot be used; ``details`` has the rule's name and 1-based position."""

    code = "invalid_rule"


@dataclass(frozen=True)
class Rule:
    """A checked rule: its name, text, parsed tree and the fields it reads."""

    name: str
    text: str
    tree: exp.Expr
    fields: frozenset[str]


def _position(node: exp.Expr) -> int:
    """1-based character position of a node (of its first identifier, if it has no own)."""
    for candidate in (node, *node.find_all(exp.Identifier)):
        meta = getattr(candidate, "meta", None) or {}
        if "start" in meta:
            return int(meta["start"]) + 1
    return 1


_Type = FieldType | _Null


class _Checker:
    """Walks a parsed rule, refusing what is not allowed and computing each node's type."""

    def __init__(self, name: str, fields: Mapping[str, FieldType]) -> None:
        self.name = name
        self.fields = fields
        self.used: set[str] = set()

    def fail(self, node: exp.Expr, sentence: str) -> RuleError:
        position = _position(node)
        return RuleError(
            f"rule {self.name!r}, position {position}: {sentence}",
            details={"rule": self.name, "position": position},
        )

    def check(self, node: exp.Expr) -> _Type:
        if isinstance(node, exp.Paren):
            return self.check(node.this)
        if isinstance(node, exp.Column):
            if node.table or not isinstance(node.this, exp.Identifier):
                raise self.fail(node, f"{node.sql()!r} is not a field name")
            field = node.name
            if field not in self.fields:
                raise self.fail(node, f"unknown field {field!r}")
            self.used.add(field)
            return self.fields[field]
        if isinstance(node, exp.Literal):
            return FieldType.string if node.is_string else FieldType.number
        if isinstance(node, exp.Boolean):
            return FieldType.boolean
        if isinstance(node, exp.Null):
            return _Null.null
        if isinstance(node, exp.Neg):
            self.expect(node.this, FieldType.number, "minus")
            return FieldType.number
        if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
            self.expect(node.this, FieldType.number, "arithmetic")
            self.expect(node.expression, FieldType.number, "arithmetic")
            return FieldType.number
        if isinstance(node, exp.EQ | exp.NEQ | exp.GT | exp.GTE | exp.LT | exp.LTE):
            self.same(node, [node.this, node.expression])
            return FieldType.boolean
        if isinstance(node, exp.And | exp.Or):
            self.expect(node.this, FieldType.boolean, node.key)
            self.expect(node.expression, FieldType.boolean, node.key)
            return FieldType.boolean
        if isinstance(node, exp.Not):
            self.expect(node.this, FieldType.boolean, "not")
            return FieldType.boolean
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                raise self.fail(node, "only 'is null' and 'is not null' are allowed")
            self.check(node.this)
            return FieldType.boolean
        if isinstance(node, exp.Between):
            self.same(node, [node.this, node.args["low"], node.args["high"]])
            return FieldType.boolean
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise self.fail(node, "'in' takes a list of values, not a query")
            values = node.expressions
            if not values or not all(isinstance(v, exp.Literal | exp.Neg) for v in values):
                raise self.fail(node, "'in' takes a list of literal values")
            self.same(node, [node.this, *values])
            return FieldType.boolean
        if isinstance(node, exp.Anonymous | exp.Func):
            return self.function(node)
        raise self.fail(node, f"{node.key!r} is not allowed in a rule")

    def function(self, node: exp.Expr) -> _Type:
        name = _function_name(node)
        if name not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise self.fail(node, f"function {name!r} is not allowed (allowed: {allowed})")
        args = _arguments(node)
        low, high = FUNCTIONS[name]
        if not low <= len(args) <= high:
            raise self.fail(node, f"{name}() takes {low} to {high} arguments, not {len(args)}")
        if name in ("abs", "round"):
            self.expect(args[0], FieldType.number, name)
            if len(args) == 2 and not (isinstance(args[1], exp.Literal) and args[1].this.isdigit()):
                raise self.fail(args[1], "round() takes a whole number of digits, e.g. round(x, 2)")
            return FieldType.number
        return self.same(node, args)

    def expect(self, node: exp.Expr, wanted: FieldType, where: str) -> None:
        got = self.check(node)
        if got not in (wanted, _Null.null):
            raise self.fail(node, f"{where} needs a {wanted.value}, but {node.sql()!r} is a {got}")

    def same(self, node: exp.Expr, parts: list[exp.Expr]) -> _Type:
        types = {self.check(p) for p in parts} - {_Null.null}
        if len(types) > 1:
            kinds = " and ".join(sorted(t.value for t in types))
            raise self.fail(node, f"cannot compare or combine {kinds} in {node.sql()!r}")
        return types.pop() if types else _Null.null


def _function_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(cast(exp.Func, node).sql_name()).lower()


def _arguments(node: exp.Expr) -> list[exp.Expr]:
    """A function node's arguments in call order, whatever sqlglot named them."""
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    args: list[exp.Expr] = []
    for key in node.arg_types:
        value = node.args.get(key)
        if isinstance(value, list):
            args.extend(value)
        elif isinstance(value, exp.Expr):
            args.append(value)
    return args


def parse_rule(name: str, text: str, fields: Mapping[str, FieldType]) -> Rule:
    """Check a rule against the field catalog. Raises RuleError with a position and a sentence."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"rule {name!r} is empty", details={"rule": name, "position": 1})
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(
            f"rule {name!r} is longer than {MAX_RULE_LENGTH} characters",
            details={"rule": name, "position": MAX_RULE_LENGTH + 1},
        )
    try:
        trees = [t for t in sqlglot.parse(text, read="duckdb") if t is not None]
    except (ParseError, TokenError) as exc:
        errors = getattr(exc, "errors", None) or [{}]
        col = int(errors[0].get("col") or 1)
        description = errors[0].get("description") or str(exc).splitlines()[0]
        raise RuleError(
            f"rule {name!r}, position {col}: cannot parse: {description}",
            details={"rule": name, "position": col},
        ) from exc
    except Exception as exc:  # sqlglot raises bare errors on some garbage; never leak a trace
        raise RuleError(
            f"rule {name!r} cannot be parsed", details={"rule": name, "position": 1}
        ) from exc
    if len(trees) != 1:
        raise RuleError(
            f"rule {name!r} must be one expression, not {len(trees)} statements",
            details={"rule": name, "position": 1},
        )
    checker = _Checker(name, fields)
    result = checker.check(trees[0])
    if result is not FieldType.boolean:
        raise checker.fail(trees[0], f"a rule must be true or false, but this is a {result}")
    return Rule(name=name, text=text, tree=trees[0], fields=frozenset(checker.used))


_BINARY: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.Add: lambda a, b: a + b,
    exp.Sub: lambda a, b: a - b,
    exp.Mul: lambda a, b: a * b,
    # x / 0 is unknown (null) on every engine, as in SQL, never infinity.
    exp.Div: lambda a, b: a / b.nullif(0),
    exp.Mod: lambda a, b: a % b.nullif(0),
    exp.EQ: lambda a, b: a == b,
    exp.NEQ: lambda a, b: a != b,
    exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b,
    exp.LT: lambda a, b: a < b,
    exp.LTE: lambda a, b: a <= b,
    exp.And: lambda a, b: a & b,
    exp.Or: lambda a, b: a | b,
}


def _literal(node: exp.Expr) -> Any:
    if isinstance(node, exp.Neg):
        return -_literal(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        return float(text) if any(c in text for c in ".eE") else int(text)
    raise TypeError(node.key)


def _compile(node: exp.Expr, table: ir.Table) -> Any:
    if isinstance(node, exp.Paren):
        return _compile(node.this, table)
    if isinstance(node, exp.Column):
        return table[node.name]
    if isinstance(node, exp.Literal):
        value = _literal(node)
        # 64-bit literals: ibis would type 100 as int8, and 100 * 100 would overflow.
        kind = "string" if node.is_string else "float64" if isinstance(value, float) else "int64"
        return ibis.literal(value, type=kind)
    if isinstance(node, exp.Neg):
        return -_compile(node.this, table)
    if isinstance(node, exp.Boolean):
        return ibis.literal(bool(node.this))
    if isinstance(node, exp.Null):
        return ibis.null()
    if type(node) in _BINARY:
        return _BINARY[type(node)](_compile(node.this, table), _compile(node.expression, table))
    if isinstance(node, exp.Not):
        return ~_compile(node.this, table)
    if isinstance(node, exp.Is):  # "is not null" arrives as Not(Is(...))
        return _compile(node.this, table).isnull()
    if isinstance(node, exp.Between):
        return _compile(node.this, table).between(
            _compile(node.args["low"], table), _compile(node.args["high"], table)
        )
    if isinstance(node, exp.In):
        return _compile(node.this, table).isin([_literal(v) for v in node.expressions])
    name = _function_name(node)
    args = [_compile(a, table) for a in _arguments(node)]
    if name == "abs":
        return args[0].abs()
    if name == "round":
        digits = _literal(_arguments(node)[1]) if len(args) == 2 else 0
        return args[0].round(digits)
    if name == "least":
        return ibis.least(*args)
    if name == "greatest":
        return ibis.greatest(*args)
    return ibis.coalesce(*args)


def compile_rule(rule: Rule, table: ir.Table) -> ir.BooleanValue:
    """The rule as a boolean column of ``table``; unknown (null) counts as false."""
    value: ir.BooleanValue = ibis.coalesce(_compile(rule.tree, table), False)
    return value
