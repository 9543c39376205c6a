"""The event contract's rules compiled to one DuckDB SELECT, for bulk files.

:class:`~memberwise.events.schemas.EventIn` is the definition; this module states the same rules
in SQL so a batch of millions of rows is checked without a Python object per row. For each row
the SQL yields the typed lake values and the *first* problem in contract field order (the order
pydantic reports them in): a check number that maps to a :class:`RejectCode` and a field, plus a
sentence naming the bad value. What counts as valid is EventIn's lax-mode behaviour:

- ids and texts: strings of at most MAX_ID_LEN / MAX_TEXT_LEN characters, required ones not
  empty (kept as sent: no whitespace stripping);
- ``type``: exactly one of EVENT_TYPES (no stripping, no case folding);
- ``ts``: ISO-8601 date or date-time with or without zone (naive = UTC), or unix seconds (a
  number above 2e10 is milliseconds, as pydantic reads it), within [MIN_TS, now + 1 day];
- ``price``/``quantity``/``rating``: integers (``"12"``, ``" 12 "``, ``"12.0"``, ``12.0`` and
  ``"1_000"`` are integers - the caller strips text numbers - ``12.5`` and ``"1e3"`` are not),
  price >= 0, quantity 1..1e6, rating 1..5;
- ``properties``: a JSON object.

Typed source columns that already have the lake type are only checked, never cast. The time
range is checked after every other rule, as the API does (it checks the range once parsing
succeeded), so a row with several problems gets the same first reason on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from memberwise.events.schemas import (
    EVENT_FIELDS,
    EVENT_TYPES,
    ID_FIELDS,
    LAKE_SCHEMA,
    MAX_ID_LEN,
    MAX_TEXT_LEN,
    MIN_TS,
    REQUIRED_FIELDS,
    TEXT_FIELDS,
    RejectCode,
    max_ts,
)
from memberwise.kit.ids import ID_BODY

#: The column every batch carries: the row's number in its source file (for dead letters).
ROW = "__row"
#: JSON Lines only: the first field whose JSON value had the wrong kind (e.g. a number where a
#: string belongs), found while the line was parsed.
JSON_TYPE_ERROR = "__jtype"
#: JSON Lines only: the original line, used as the dead letter's ``raw``.
LINE = "__line"
#: JSON Lines only: the ``__jtype`` of a line that is not a JSON object at all (the reason is
#: found afterwards, by parsing just those lines again).
MALFORMED_JSON = "!malformed"
#: JSON Lines only: how many ``":`` a line holds when it has no key outside the contract (its
#: contract keys present, plus the pairs inside ``properties``), passed through to the output;
#: a block whose lines hold more has its keys listed (the unknown-field warning).
JSON_KEY_COUNT = "__keycount"
#: Optional, computed by the caller (see :func:`matches`): whether ``ts`` text is an
#: ISO-8601 time in full, and whether ``member_id`` follows kit.ids' rule. Arrow's regular
#: expressions (RE2, as DuckDB's) run in about half the time of DuckDB's ``regexp_full_match``.
TS_ISO = "__ts_iso"
MEMBER_ID_OK = "__member_id_ok"
MATCH_FIELDS = (pa.field(TS_ISO, pa.bool_()), pa.field(MEMBER_ID_OK, pa.bool_()))
INTERNAL = (ROW, JSON_TYPE_ERROR, LINE, JSON_KEY_COUNT, TS_ISO, MEMBER_ID_OK)

#: Fields that must be strings (ids and texts).
STRING_FIELDS: tuple[str, ...] = (*ID_FIELDS, *TEXT_FIELDS)
#: Integer fields; given as text they are stripped of whitespace first, as pydantic does.
INT_FIELDS: tuple[str, ...] = ("price", "quantity", "rating")
#: Above this magnitude a numeric time is milliseconds (pydantic's rule).
MS_THRESHOLD = 20_000_000_000

_ISO_RE = (
    r"\d{4}-\d{2}-\d{2}([Tt ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d([.,]\d+)?)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):?[0-5]\d)?)?"
)
_NUMBER_RE = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
#: _ISO_RE and kit.ids' rule anchored, for a search that must match the whole text.
_ISO_FULL = f"^(?:{_ISO_RE})$"
_ID_FULL = f"^(?:{ID_BODY})$"
_PLAIN_INT_RE = r"[+-]?\d{1,18}"
_LAX_INT_RE = r"[+-]?\d+(_\d+)*(\.0+)?"
_RELATION = "__BATCH_RELATION__"
_INT_RANGES: dict[str, tuple[int, int] | None] = {
    "price": None,
    "quantity": (1, 1_000_000),
    "rating": (1, 5),
}


class SchemaMismatch(ValueError):
    """A source column's type cannot hold the contract field at all (refuse the whole file)."""


@dataclass(frozen=True)
class Check:
    """One rule: when ``condition`` holds, the row is refused with ``code`` on ``field``."""

    code: RejectCode
    field: str
    condition: str
    message: str


@dataclass(frozen=True)
class ValidationPlan:
    """The SELECT over a batch relation (see :meth:`sql`), and how to read its output.

    The output holds ``__row``, the ``exported`` fields (typed as in the lake), ``__check``
    (1-based index into ``checks``, NULL for a good row), ``__message`` and ``__raw`` (bad rows
    only) and ``__hash`` (of the event id). Fields in ``passthrough`` already have the lake type
    in the input and can be taken from it as they are; ``absent`` fields are NULL.
    """

    template: str
    checks: tuple[Check, ...]
    exported: tuple[str, ...]
    passthrough: tuple[str, ...]
    absent: tuple[str, ...] = field(default=())

    def sql(self, relation: str) -> str:
        """The SELECT reading the batch from ``relation``: a FROM item (a quoted view name or a
        parenthesized subquery)."""
        return self.template.replace(_RELATION, relation)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts_lit(value: datetime) -> str:
    return f"TIMESTAMPTZ {_lit(value.isoformat())}"


def _shown(expr: str) -> str:
    """The offending value, quoted and cut short, for a message."""
    return f"'''' || left(CAST({expr} AS VARCHAR), 80) || ''''"


def _kind(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_null(t):
        return "null"
    return str(t)


def _lake_type(name: str) -> pa.DataType:
    return LAKE_SCHEMA.field(name).type


def _numeric_time(n: str, lo: datetime, hi: datetime) -> str:
    """A TIMESTAMPTZ from a number of seconds (or milliseconds above 2e10); out-of-range
    numbers become the epoch, which the range check then refuses."""
    secs = f"(CASE WHEN abs({n}) > {MS_THRESHOLD} THEN {n} / 1000.0 ELSE {n} END)"
    low, high = lo.timestamp() - 86_400, hi.timestamp() + 86_400
    return (
        f"(CASE WHEN {secs} BETWEEN {low} AND {high} THEN to_timestamp({secs}) "
        "ELSE TIMESTAMPTZ '1970-01-01 00:00:00+00' END)"
    )


def matches(ts: pa.ChunkedArray, member_id: pa.ChunkedArray) -> list[pa.ChunkedArray]:
    """The MATCH_FIELDS of string ``ts`` and ``member_id`` columns, which
    :func:`build_validation` then reads instead of matching in DuckDB (NULL for a NULL value,
    as ``regexp_full_match`` gives)."""
    return [
        pc.match_substring_regex(ts, _ISO_FULL),
        pc.match_substring_regex(member_id, _ID_FULL),
    ]


def _ts_value(src: str, kind: str, lo: datetime, hi: datetime, iso_match: str | None = None) -> str:
    if kind == "timestamp" or kind == "date":
        return f"CAST({src} AS TIMESTAMPTZ)"
    if kind in ("integer", "float", "decimal"):
        return _numeric_time(f"CAST({src} AS DOUBLE)", lo, hi)
    if kind == "string":
        number = f"TRY_CAST({src} AS DOUBLE)"
        # DuckDB's cast refuses exactly the lowercase 't'/'z' and the decimal comma that
        # ISO-8601 allows, and reads the text as its normalised form otherwise: the text is
        # cast as it is first, and only the few it refuses are normalised (upper + replace
        # made a new string per row: half the cast's cost).
        normalised = f"TRY_CAST(replace(upper({src}), ',', '.') AS TIMESTAMPTZ)"
        iso = iso_match or f"regexp_full_match({src}, {_lit(_ISO_RE)})"
        return (
            f"(CASE WHEN {iso} "
            f"THEN coalesce(TRY_CAST({src} AS TIMESTAMPTZ), {normalised}) "
            f"WHEN regexp_full_match({src}, {_lit(_NUMBER_RE)}) "
            f"THEN {_numeric_time(number, lo, hi)} END)"
        )
    raise SchemaMismatch(f"column ts has type {kind}; expected a time, a number or text")


def _int_value(name: str, src: str, kind: str) -> str:
    """A BIGINT, or NULL when the value is not an integer (pydantic's lax int rules)."""
    if kind == "integer":
        return f"TRY_CAST({src} AS BIGINT)"
    if kind in ("float", "decimal"):
        return (
            f"(CASE WHEN isfinite(CAST({src} AS DOUBLE)) AND {src} = trunc({src}) "
            f"THEN TRY_CAST({src} AS BIGINT) END)"
        )
    if kind == "string":
        cleaned = f"regexp_replace(replace({src}, '_', ''), '\\.0+$', '')"
        return (
            f"(CASE WHEN regexp_full_match({src}, {_lit(_PLAIN_INT_RE)}) "
            f"THEN TRY_CAST({src} AS BIGINT) "
            f"WHEN regexp_full_match({src}, {_lit(_LAX_INT_RE)}) "
            f"THEN TRY_CAST({cleaned} AS BIGINT) END)"
        )
    raise SchemaMismatch(f"column {name} has type {kind}; expected an integer or text")


def build_validation(
    schema: pa.Schema,
    *,
    now: datetime,
    raw_columns: Sequence[str] | None = None,
    export_all: bool = False,
) -> ValidationPlan:
    """Compile the contract's rules for a batch with ``schema`` (contract field names, plus
    ``__row`` and optionally ``__jtype``/``__line``).

    ``raw_columns`` are the source columns shown in a dead letter's ``raw`` (default: every
    non-internal column); a ``__line`` column, when present, is shown instead. With
    ``export_all`` every present field is in the output (for sources DuckDB reads itself),
    otherwise only those that needed a conversion.

    Raises SchemaMismatch when a column's type cannot hold its field (e.g. a number for
    ``member_id`` in a Parquet file), since every row would then be refused.
    """
    lo, hi = MIN_TS, max_ts(now)
    names = set(schema.names)
    has_jtype = JSON_TYPE_ERROR in names
    values: dict[str, str] = {}
    converted: list[str] = []
    passthrough: list[str] = []
    absent: list[str] = []
    checks: list[Check] = []

    def add(code: RejectCode, name: str, condition: str, message: str) -> None:
        checks.append(Check(code, name, condition, message))

    if has_jtype:
        add(
            RejectCode.malformed_row,
            "",
            f"{JSON_TYPE_ERROR} = {_lit(MALFORMED_JSON)}",
            _lit("not a JSON object"),
        )

    for name in EVENT_FIELDS:
        if name not in names:
            absent.append(name)
            values[name] = f"CAST(NULL AS {_sql_type(name)})"
            continue
        src = f"__s_{name}"
        kind = _kind(schema.field(name).type)
        lake_type = _lake_type(name)
        if schema.field(name).type == lake_type:
            value = _q(src)  # already typed as in the lake: checked, never cast
        elif kind == "null":
            value = f"CAST(NULL AS {_sql_type(name)})"
        elif name == "ts":
            iso = _q(TS_ISO) if TS_ISO in names and kind == "string" else None
            value = _ts_value(src, kind, lo, hi, iso)
        elif name in INT_FIELDS:
            value = _int_value(name, src, kind)
        elif kind == "string":
            value = src
        else:
            raise SchemaMismatch(f"column {name} has type {kind}; expected text")
        if schema.field(name).type == lake_type or (kind == "string" and lake_type == pa.string()):
            passthrough.append(name)
        else:
            converted.append(name)
        values[name] = value
        v, q = _q(name), _q(src)

        if has_jtype and (name in STRING_FIELDS or name == "properties"):
            expected = "a JSON object" if name == "properties" else "a string"
            add(
                RejectCode.wrong_type,
                name,
                f"{JSON_TYPE_ERROR} = {_lit(name)}",
                _lit(f"{name} must be {expected}"),
            )
        if name in REQUIRED_FIELDS:
            empty = f"{q} IS NULL" + (f" OR {v} = ''" if name in STRING_FIELDS else "")
            add(RejectCode.missing_field, name, empty, _lit(f"{name} is missing"))
        if name in STRING_FIELDS:
            limit = MAX_TEXT_LEN if name in TEXT_FIELDS else MAX_ID_LEN
            add(
                RejectCode.invalid_value,
                name,
                f"strlen({v}) > {limit} AND length({v}) > {limit}",
                _lit(f"{name} is longer than {limit} characters"),
            )
            if name == "member_id":  # the one id rule of kit.ids, as the API's EventIn has it
                matched = f"regexp_full_match({v}, {_lit(ID_BODY)})"
                if MEMBER_ID_OK in names and kind == "string":
                    matched = _q(MEMBER_ID_OK)
                add(
                    RejectCode.invalid_value,
                    name,
                    f"NOT {matched}",
                    f"'member_id ' || {_shown(v)} || "
                    + _lit(" may hold only ASCII letters, digits, '_', '-', ':' and single dots"),
                )
        elif name == "type":
            allowed = ", ".join(_lit(t) for t in EVENT_TYPES)
            add(
                RejectCode.unknown_event_type,
                name,
                f"{v} NOT IN ({allowed})",
                f"'unknown event type ' || {_shown(v)} || "
                + _lit(f"; expected one of {', '.join(EVENT_TYPES)}"),
            )
        elif name == "ts":
            add(
                RejectCode.bad_time,
                name,
                f"{v} IS NULL",
                f"'ts ' || {_shown(q)} || ' is not an ISO-8601 time or unix seconds'",
            )
        elif name in INT_FIELDS:
            add(
                RejectCode.wrong_type,
                name,
                f"{q} IS NOT NULL AND {v} IS NULL",
                _lit(f"{name} must be an integer") + f" || ', not ' || {_shown(q)}",
            )
            bounds = _INT_RANGES[name]
            if bounds is None:
                add(
                    RejectCode.negative_price,
                    name,
                    f"{v} < 0",
                    _lit(f"{name} must not be negative") + f" || ', not ' || {_shown(v)}",
                )
            else:
                low, high = bounds
                add(
                    RejectCode.invalid_value,
                    name,
                    f"{v} < {low} OR {v} > {high}",
                    _lit(f"{name} must be between {low} and {high}")
                    + f" || ', not ' || {_shown(v)}",
                )
        elif name == "properties":
            add(
                RejectCode.invalid_value,
                name,
                f"{v} IS NOT NULL AND NOT (CASE WHEN json_valid({v}) "
                f"THEN json_type({v}) = 'OBJECT' ELSE false END)",
                _lit("properties must be a JSON object"),
            )

    if "ts" not in absent:
        add(
            RejectCode.bad_time,
            "ts",
            f'"ts" < {_ts_lit(lo)} OR "ts" > {_ts_lit(hi)}',
            "'ts ' || "
            + _shown('"__s_ts"')
            + " || "
            + _lit(f" is outside {lo.date().isoformat()} .. now + 1 day"),
        )
    if "event_id" in absent or "member_id" in absent or "type" in absent or "ts" in absent:
        missing = [n for n in REQUIRED_FIELDS if n in absent]
        raise SchemaMismatch(f"missing required column(s): {', '.join(missing)}")

    shown = [c for c in (raw_columns or schema.names) if c not in INTERNAL and c in names]
    carried = [n for n in EVENT_FIELDS if n not in absent]
    carried += [c for c in shown if c not in EVENT_FIELDS]
    sources = [f"{_q(c)} AS {_q('__s_' + c)}" for c in carried]
    extra = [_q(c) for c in INTERNAL[1:] if c in names]
    level1 = ", ".join([_q(ROW), *sources, *extra])
    typed = ", ".join(f"{values[n]} AS {_q(n)}" for n in EVENT_FIELDS)
    case = " ".join(f"WHEN {c.condition} THEN {i}" for i, c in enumerate(checks, start=1))
    messages = " ".join(f"WHEN {i} THEN {c.message}" for i, c in enumerate(checks, start=1))
    if LINE in names:
        raw = _q(LINE)
    else:
        pairs = ", ".join(f"{_q(c)} := {_q('__s_' + c)}" for c in shown)
        raw = f"to_json(struct_pack({pairs}))" if pairs else "NULL"
    exported = [n for n in EVENT_FIELDS if n in converted or (export_all and n not in absent)]
    outputs = [_q(ROW)]
    outputs += [
        f"TRY_CAST({_q(n)} AS {_sql_type(n)}) AS {_q(n)}" if n in converted else _q(n)
        for n in exported
    ]
    outputs.append("__check")
    outputs.append(
        f"CASE WHEN __check IS NOT NULL THEN (CASE __check {messages} END) END AS __message"
    )
    outputs.append(f"CASE WHEN __check IS NOT NULL THEN {raw} END AS __raw")
    outputs.append('hash("event_id") AS __hash')
    if JSON_KEY_COUNT in names:
        outputs.append(_q(JSON_KEY_COUNT))
    sql = (
        f"SELECT {', '.join(outputs)} FROM ("
        f"SELECT *, CASE {case} END AS __check FROM ("
        f"SELECT *, {typed} FROM (SELECT {level1} FROM {_RELATION})))"
    )
    return ValidationPlan(
        template=sql,
        checks=tuple(checks),
        exported=tuple(exported),
        passthrough=tuple(passthrough),
        absent=tuple(absent),
    )


def _sql_type(name: str) -> str:
    t = _lake_type(name)
    if t == pa.string():
        return "VARCHAR"
    if t == pa.int64():
        return "BIGINT"
    if t == pa.int32():
        return "INTEGER"
    return "TIMESTAMPTZ"
