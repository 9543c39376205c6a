"""The rule language: what it accepts runs, and means what the same SQL means; what it refuses
is refused with a position and a sentence, never a trace."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import ibis
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from memberwise.profiles.rules import FieldType, RuleError, compile_rule, parse_rule

FIELDS = {
    "views_30d": FieldType.number,
    "share_night": FieldType.number,
    "region": FieldType.string,
    "is_plus": FieldType.boolean,
}
ROWS = pa.table(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "views_30d": [0, 5, 20, 120, None, 7],
        "share_night": [0.0, 0.45, 0.1, 0.9, 0.5, None],
        "region": ["浙江", "上海", "广东", None, "浙江", "北京"],
        "is_plus": [True, False, None, True, False, True],
    }
)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[ibis.BaseBackend, duckdb.DuckDBPyConnection]]:
    con = ibis.duckdb.connect()
    raw = duckdb.connect()
    # The language defines x / 0 as unknown (null); plain DuckDB 2 raises instead.
    raw.sql("SET error_on_division_by_zero = false")
    raw.register("t", ROWS)
    yield con, raw
    raw.close()


def _ibis_result(con: ibis.BaseBackend, text: str) -> list[bool]:
    table = ibis.memtable(ROWS)
    expr = table.select("id", hit=compile_rule(parse_rule("r", text, FIELDS), table)).order_by("id")
    return [bool(v) for v in con.to_pyarrow(expr).column("hit").to_pylist()]


def _sql_result(raw: duckdb.DuckDBPyConnection, text: str) -> list[bool]:
    """The rule run as plain SQL, with the language's one deviation from DuckDB's SQL applied:
    x / 0 is null (DuckDB gives infinity; Spark gives null)."""
    tree = sqlglot.parse_one(text, read="duckdb")
    for div in list(tree.find_all(exp.Div)):  # in place, so nested divisions are rewritten too
        div.set("expression", exp.Nullif(this=div.expression, expression=exp.Literal.number(0)))
    sql = tree.sql(dialect="duckdb")
    rows = raw.sql(f"SELECT coalesce(({sql}), false) FROM t ORDER BY id").fetchall()
    return [bool(r[0]) for r in rows]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("share_night >= 0.4 and views_30d >= 5", [False, True, False, True, False, False]),
        ("region in ('浙江', '上海')", [True, True, False, False, True, False]),
        ("not views_30d between 1 and 10", [True, False, True, True, False, False]),
        ("region is null or is_plus", [True, False, False, True, False, True]),
        ("region is not null and not is_plus", [False, True, False, False, True, False]),
        (
            "abs(views_30d - 10) <= 5 or greatest(views_30d, 100) > 100",
            [False, True, False, True, False, True],
        ),
        ("round(share_night * 100) = 45", [False, True, False, False, False, False]),
        ("coalesce(views_30d, 0) = 0", [True, False, False, False, True, False]),
        ("views_30d / 0 > 1", [False] * 6),
    ],
)
def test_rules_select_exactly_the_expected_members(
    engine: tuple[ibis.BaseBackend, duckdb.DuckDBPyConnection], text: str, expected: list[bool]
) -> None:
    con, raw = engine
    assert _ibis_result(con, text) == expected
    assert _sql_result(raw, text) == expected


def test_a_rule_names_the_fields_it_reads() -> None:
    rule = parse_rule("night_owl", "share_night >= 0.4 and views_30d >= 20", FIELDS)
    assert rule.fields == {"share_night", "views_30d"}


@pytest.mark.parametrize(
    ("text", "position", "sentence"),
    [
        ("views_90d > 1", 1, "unknown field 'views_90d'"),
        ("views_30d > 1 and regoin = 'x'", 19, "unknown field 'regoin'"),
        ("views_30d > 'many'", 1, "cannot compare or combine number and string"),
        ("views_30d + 1", 1, "a rule must be true or false, but this is a number"),
        ("is_plus and views_30d", 13, "and needs a boolean"),
        ("region in (select region from members)", 1, "'in' takes a list of values"),
        ("views_30d > (select 1)", 1, "is not allowed in a rule"),
        ("lower(region) = 'x'", 1, "function 'lower' is not allowed"),
        ("t.views_30d > 1", 3, "is not a field name"),
        ("views_30d > 1; drop table members", 1, "must be one expression, not 2 statements"),
        ("views_30d >", 11, "cannot parse"),
        ("round(share_night, views_30d) > 1", 20, "round() takes a whole number of digits"),
        ("", 1, "is empty"),
    ],
)
def test_bad_rules_are_refused_with_name_position_and_sentence(
    text: str, position: int, sentence: str
) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule("vip", text, FIELDS)
    error = caught.value
    assert error.code == "invalid_rule"
    assert error.details == {"rule": "vip", "position": position}
    assert error.message.startswith("rule 'vip'")
    assert sentence in error.message


# -- properties -----------------------------------------------------------------------------

NUMBER_LEAF = st.one_of(
    st.sampled_from(["views_30d", "share_night"]),
    st.integers(-1000, 1000).map(str),
    st.floats(-1000, 1000, allow_nan=False).map(lambda x: f"{x:.3f}"),
)
NUMBERS = st.recursive(
    NUMBER_LEAF,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"abs({x})"),
        st.tuples(inner, inner).map(lambda t: f"greatest({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"least({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"coalesce({t[0]}, {t[1]})"),
    ),
    max_leaves=5,
)
COMPARISON = st.one_of(
    st.tuples(NUMBERS, st.sampled_from(["=", "<>", "<", "<=", ">", ">="]), NUMBERS).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}"
    ),
    st.tuples(NUMBERS, NUMBERS, NUMBERS).map(lambda t: f"{t[0]} between {t[1]} and {t[2]}"),
    st.lists(st.sampled_from(["'浙江'", "'上海'", "'x'"]), min_size=1, max_size=3).map(
        lambda vs: f"region in ({', '.join(vs)})"
    ),
    st.sampled_from(["is_plus", "region is null", "views_30d is not null", "true", "false"]),
)
CONDITIONS = st.recursive(
    COMPARISON,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"not ({x})"),
    ),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=CONDITIONS)
def test_every_rule_it_accepts_compiles_and_means_what_the_sql_means(
    engine: tuple[ibis.BaseBackend, duckdb.DuckDBPyConnection], text: str
) -> None:
    con, raw = engine
    assert _ibis_result(con, text) == _sql_result(raw, text)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.lists(
            st.sampled_from(
                [
                    "views_30d",
                    "region",
                    "(",
                    ")",
                    "and",
                    "or",
                    "not",
                    "in",
                    "between",
                    ">",
                    "=",
                    "'a'",
                    "1",
                    "-",
                    "*",
                    "select",
                    ";",
                    ",",
                    "abs",
                    "null",
                    "is",
                    ".",
                ]
            ),
            max_size=12,
        ).map(" ".join),
    )
)
def test_any_string_is_either_a_rule_or_a_clear_refusal(text: str) -> None:
    outcome: RuleError | frozenset[str]
    try:
        outcome = parse_rule("r", text, FIELDS).fields
    except RuleError as error:  # anything else (a trace) fails the test
        outcome = error
    if isinstance(outcome, RuleError):
        assert outcome.message.startswith("rule 'r'")
        assert isinstance(outcome.details["position"], int)
    else:
        assert outcome <= set(FIELDS)
