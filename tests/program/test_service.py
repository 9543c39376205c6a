"""Program files: a good one loads into exactly what it says; a bad one is refused with the file,
the line, the path inside the file, what is wrong and how to fix it -- never a trace."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest
from pydantic import ValidationError

from memberwise.kit.errors import InvalidRequest
from memberwise.profiles.fields import FIELD_TYPES, FIELDS
from memberwise.profiles.personas import DEFAULT_FEATURES
from memberwise.profiles.rules import FieldType, compile_rule, parse_rule
from memberwise.profiles.segments import LIFECYCLE, Segment, segment_column
from memberwise.program.schemas import PersonaSettings, Program, Tag
from memberwise.program.service import ProgramError, default_program, load_program, parse_program

DEMO = Path(__file__).resolve().parents[2] / "programs" / "demo.yaml"

GOOD = """\
name: 测试 program
display_timezone: Europe/Berlin
tags:
  night_owl: share_events_22_to_02 >= 0.4 and events_90d >= 20
  big_spender:
    rule: m_score >= 5
    description: top fifth by spend
  everyone: true
segments:
  - {name: vip, rule: "rfm_score >= 13", description: the best}
  - name: rest
    rule: true
personas:
  features: [events_90d, price_band]
  k_min: 2
  k_max: 4
  names: {0: 夜猫子, 3: "bargain fans"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "program.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refusal(tmp_path: Path, text: str) -> ProgramError:
    with pytest.raises(ProgramError) as caught:
        load_program(write(tmp_path, text))
    return caught.value


def only_problem(error: ProgramError) -> dict[str, Any]:
    problems: list[dict[str, Any]] = error.details["problems"]
    assert len(problems) == 1, problems
    return problems[0]


def test_a_good_file_loads_into_what_it_says(tmp_path: Path) -> None:
    program = load_program(write(tmp_path, GOOD))
    assert program == Program(
        name="测试 program",
        display_timezone="Europe/Berlin",
        tags={
            "night_owl": Tag(rule="share_events_22_to_02 >= 0.4 and events_90d >= 20"),
            "big_spender": Tag(rule="m_score >= 5", description="top fifth by spend"),
            "everyone": Tag(rule="true"),
        },
        segments=(
            Segment(name="vip", rule="rfm_score >= 13", description="the best"),
            Segment(name="rest", rule="true"),
        ),
        personas=PersonaSettings(
            features=("events_90d", "price_band"),
            k_min=2,
            k_max=4,
            names={0: "夜猫子", 3: "bargain fans"},
        ),
    )
    assert program.tag_rules() == {
        "night_owl": "share_events_22_to_02 >= 0.4 and events_90d >= 20",
        "big_spender": "m_score >= 5",
        "everyone": "true",
    }
    assert program.tag_description("big_spender") == "top fifth by spend"
    assert [s.name for s in program.segment_list()] == ["vip", "rest"]


def test_defaults_when_a_file_says_only_its_name(tmp_path: Path) -> None:
    program = load_program(write(tmp_path, "name: minimal\nsegments: null\n"))
    assert program.display_timezone == "Asia/Shanghai"
    assert program.tags == {}
    assert program.segments == LIFECYCLE
    assert program.personas == PersonaSettings(
        features=DEFAULT_FEATURES, k_min=3, k_max=8, names={}
    )


def test_default_program() -> None:
    program = default_program()
    assert (program.name, program.display_timezone, program.tags) == (
        "default",
        "Asia/Shanghai",
        {},
    )
    assert program.segments == LIFECYCLE
    assert default_program() is program


def _all_fields_table() -> ibis.Table:
    """One member with every catalog field null: enough for every rule to compile and run."""
    types = {
        FieldType.number: pa.float64(),
        FieldType.string: pa.string(),
        FieldType.timestamp: pa.timestamp("us", tz="UTC"),
    }
    columns = {"member_id": pa.array(["m1"])}
    for f in FIELDS:
        columns[f.name] = pa.array([None], types[f.type])
    return ibis.memtable(pa.table(columns))


def test_the_demo_program_loads_and_every_rule_runs() -> None:
    program = load_program(DEMO)
    assert program.name == "demo"
    assert set(program.tags) == {
        "night_owl",
        "weekend_shopper",
        "big_spender",
        "bargain_hunter",
        "window_shopper",
        "frequent_returner",
        "lapsing",
        "festival_shopper",
        "win_back",
    }
    assert all(tag.description for tag in program.tags.values())
    assert program.segments == LIFECYCLE
    table = _all_fields_table()
    rules = {
        name: parse_rule(name, text, FIELD_TYPES) for name, text in program.tag_rules().items()
    }
    expr = table.select(
        segment=segment_column(table, program.segments),
        **{name: compile_rule(rule, table) for name, rule in rules.items()},
    )
    con = ibis.duckdb.connect()
    row = con.to_pyarrow(expr).to_pylist()[0]
    # a member with no data has no tag and is lost
    assert row == {"segment": "lost", **dict.fromkeys(rules, False)}


def test_the_error_says_file_line_path_what_and_how(tmp_path: Path) -> None:
    error = refusal(
        tmp_path,
        """\
        name: demo
        tags:
          night_owl: share_events_22_to_2 >= 0.4
        """,
    )
    path = tmp_path / "program.yaml"
    assert isinstance(error, InvalidRequest)
    assert (error.code, error.status_code) == ("invalid_program", 422)
    assert error.message == (
        f"{path}:3: tags.night_owl: rule 'night_owl', position 1: unknown field "
        "'share_events_22_to_2' -- did you mean 'share_events_22_to_02'? write one true/false "
        "expression over profile fields, e.g. 'events_90d >= 20 and share_events_weekend > 0.5' "
        "(fields and syntax: docs/profiles.md)"
    )
    assert error.details["file"] == str(path)
    problem = only_problem(error)
    assert {k: problem[k] for k in ("path", "line", "rule", "position")} == {
        "path": "tags.night_owl",
        "line": 3,
        "rule": "night_owl",
        "position": 1,
    }


def test_a_rule_error_in_a_tag_mapping_keeps_the_rule_position(tmp_path: Path) -> None:
    error = refusal(
        tmp_path,
        """\
        name: demo
        tags:
          ok: events_90d > 1
          mixed:
            rule: events_90d >= 20 and region > 3
            description: compares a string with a number
        """,
    )
    problem = only_problem(error)
    assert (problem["path"], problem["line"], problem["rule"]) == ("tags.mixed", 4, "mixed")
    assert problem["position"] == 22  # where `region > 3` starts
    assert "cannot compare or combine number and string" in problem["message"]


def test_a_rule_error_in_a_segment(tmp_path: Path) -> None:
    error = refusal(
        tmp_path,
        """\
        name: demo
        segments:
          - {name: vip, rule: "rfm_score >= 13"}
          - {name: busy, rule: "events_90d >"}
          - {name: rest, rule: "true"}
        """,
    )
    problem = only_problem(error)
    assert (problem["path"], problem["line"], problem["rule"]) == ("segments[1].rule", 4, "busy")
    assert problem["message"].startswith("rule 'busy', position ")
    assert "cannot parse" in problem["message"]


def test_segments_must_end_with_a_catch_all(tmp_path: Path) -> None:
    error = refusal(
        tmp_path,
        """\
        name: demo
        segments:
          - {name: vip, rule: "rfm_score >= 13"}
          - {name: others, rule: "rfm_score < 13"}
        """,
    )
    problem = only_problem(error)
    assert (problem["path"], problem["line"]) == ("segments[1]", 4)
    assert problem["message"] == (
        "the last segment ('others') does not match every member, so some members would have "
        "no segment"
    )
    assert problem["fix"] == "end the list with a catch-all, e.g. {name: lost, rule: 'true'}"


def test_a_catch_all_before_the_end_and_repeated_names_are_refused(tmp_path: Path) -> None:
    error = refusal(
        tmp_path,
        """\
        name: demo
        segments:
          - {name: all, rule: "(TRUE)"}
          - {name: vip, rule: "rfm_score >= 13"}
          - {name: vip, rule: "true"}
        """,
    )
    problems = error.details["problems"]
    assert [(p["path"], p["line"]) for p in problems] == [
        ("segments[0].rule", 3),
        ("segments[2].name", 5),
    ]
    assert problems[0]["message"] == (
        "segment 'all' matches every member, so the segments after it can never match"
    )
    assert problems[1]["message"] == "segment 'vip' twice"
    assert error.message.startswith(f"{tmp_path / 'program.yaml'}: 2 problems in the program\n")


def test_no_segments_is_refused(tmp_path: Path) -> None:
    problem = only_problem(refusal(tmp_path, "name: demo\nsegments: []\n"))
    assert (problem["path"], problem["message"]) == ("segments", "no segments")


@pytest.mark.parametrize(
    ("text", "path", "line", "message"),
    [
        ("name: x\ncolour: red\n", "colour", 2, "unknown key 'colour'"),
        (
            "name: x\ntags:\n  a:\n    rule: events_90d > 1\n    descripton: typo\n",
            "tags.a.descripton",
            5,
            "unknown key 'descripton'",
        ),
        (
            "name: x\nsegments:\n  - {name: a, rule: 'true', colour: red}\n",
            "segments[0].colour",
            3,
            "unknown key 'colour'",
        ),
        ("name: x\npersonas:\n  k: 3\n", "personas.k", 3, "unknown key 'k'"),
        # later issues add tiers, score, benefits: until then they are unknown keys
        ("name: x\nlevels: []\n", "levels", 2, "unknown key 'levels'"),
    ],
)
def test_unknown_keys_are_refused_with_the_allowed_ones(
    tmp_path: Path, text: str, path: str, line: int, message: str
) -> None:
    problem = only_problem(refusal(tmp_path, text))
    assert (problem["path"], problem["line"], problem["message"]) == (path, line, message)
    assert problem["fix"].startswith("remove it or fix its spelling; the keys allowed here: ")


def test_the_allowed_keys_are_listed(tmp_path: Path) -> None:
    problem = only_problem(refusal(tmp_path, "name: x\ncolour: red\n"))
    assert problem["fix"] == (
        "remove it or fix its spelling; the keys allowed here: "
        "name, display_timezone, locale, tags, segments, personas, score, tiers, plans, "
        "black_card, benefits, points, coupons, predictions, recommendations, privacy, service, "
        "feedback, merchants"
    )


def test_a_missing_name_is_refused(tmp_path: Path) -> None:
    problem = only_problem(refusal(tmp_path, "tags: {}\n"))
    assert (problem["path"], problem["line"], problem["message"], problem["fix"]) == (
        "name",
        1,
        "'name' is required",
        "add it",
    )


def test_a_bad_time_zone_is_refused(tmp_path: Path) -> None:
    problem = only_problem(refusal(tmp_path, "name: x\ndisplay_timezone: Asia/Shangai\n"))
    assert (problem["path"], problem["line"]) == ("display_timezone", 2)
    assert problem["message"] == "'Asia/Shangai' is not a known time zone"
    assert problem["fix"] == (
        "did you mean 'Asia/Shanghai'? use an IANA name such as Asia/Shanghai, Europe/Berlin or UTC"
    )


@pytest.mark.parametrize("zone", ["", "Mars/Olympus", "../etc/passwd", "+08:00"])
def test_other_bad_time_zones(tmp_path: Path, zone: str) -> None:
    problem = only_problem(refusal(tmp_path, f"name: x\ndisplay_timezone: '{zone}'\n"))
    assert problem["path"] == "display_timezone"
    assert problem["message"] == f"{zone!r} is not a known time zone"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("Night_Owl", "tag name 'Night_Owl' is not a lowercase identifier"),
        ("'2nd'", "tag name '2nd' is not a lowercase identifier"),
        ("recency_days", "tag name 'recency_days' is the name of a profile field"),
    ],
)
def test_bad_tag_names(tmp_path: Path, tag: str, message: str) -> None:
    problem = only_problem(refusal(tmp_path, f"name: x\ntags:\n  {tag}: events_90d > 1\n"))
    assert (problem["line"], problem["message"]) == (3, message)
    assert problem["path"] == f"tags.{tag.strip(chr(39))}"


def test_every_bad_tag_is_reported_at_once(tmp_path: Path) -> None:
    error = refusal(
        tmp_path,
        """\
        name: x
        tags:
          a: events_90d >
          b: events_90d > 1
          c: nope = 1
        """,
    )
    problems = error.details["problems"]
    assert [(p["path"], p["line"], p["rule"]) for p in problems] == [
        ("tags.a", 3, "a"),
        ("tags.c", 5, "c"),
    ]


@pytest.mark.parametrize(
    ("personas", "path", "message"),
    [
        (
            "features: [events_90d, eventz_90d]",
            "personas.features[1]",
            "unknown field 'eventz_90d'",
        ),
        ("features: [region]", "personas.features[0]", "'region' is a string field"),
        (
            "features: [events_90d, events_90d]",
            "personas.features[1]",
            "'events_90d' is listed twice",
        ),
        ("features: []", "personas.features", "no features"),
        ("{k_min: 5, k_max: 4}", "personas.k_min", "k_min (5) is larger than k_max (4)"),
        ("names: {8: x}", "personas.names.8", "cluster id 8 does not exist with k_max 8"),
        ("names: {0: x, 1: x}", "personas.names.1", "'x' names two clusters"),
        ("names: {0: ' '}", "personas.names.0", "the name is empty"),
    ],
)
def test_bad_persona_settings(tmp_path: Path, personas: str, path: str, message: str) -> None:
    problem = only_problem(refusal(tmp_path, f"name: x\npersonas:\n  {personas}\n"))
    assert (problem["path"], problem["message"]) == (path, message)


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("name: x\ntags:\n  a:\n", "tags.a", "a tag is a rule or a mapping, not None"),
        ("name: x\ntags:\n  a: 3\n", "tags.a", "a tag is a rule or a mapping, not 3"),
        (
            "name: x\nsegments:\n  - lost\n",
            "segments[0]",
            "a segment is a mapping with 'name', 'rule' and an optional 'description', not "
            "'lost': write e.g. {name: lost, rule: 'true'}",
        ),
    ],
)
def test_a_tag_or_segment_of_the_wrong_shape(
    tmp_path: Path, text: str, path: str, message: str
) -> None:
    problem = only_problem(refusal(tmp_path, text))
    assert (problem["path"], problem["line"], problem["message"]) == (path, 3, message)


def test_a_value_of_the_wrong_type(tmp_path: Path) -> None:
    problem = only_problem(refusal(tmp_path, "name: x\npersonas:\n  k_min: many\n"))
    assert (problem["path"], problem["line"]) == ("personas.k_min", 3)
    assert problem["message"] == (
        "Input should be a valid integer, unable to parse string as an integer (found 'many')"
    )


def test_a_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    error = refusal(tmp_path, "name: x\ntags:\n  a: events_90d: 3\n")
    problem = only_problem(error)
    assert (problem["path"], problem["line"]) == ("", 3)
    assert problem["message"] == "column 16: not valid YAML: mapping values are not allowed here"
    assert "quote a rule that contains ': '" in problem["fix"]
    assert error.message.startswith(f"{tmp_path / 'program.yaml'}:3: column 16: not valid YAML")


def test_an_unclosed_quote_gives_the_line(tmp_path: Path) -> None:
    problem = only_problem(refusal(tmp_path, 'name: x\ntags:\n  a: "events_90d > 1\n  b: x\n'))
    assert problem["line"] == 5  # YAML notices at the end of the file
    assert "while scanning a quoted scalar" in problem["message"]


def test_a_key_twice_is_refused(tmp_path: Path) -> None:
    text = "name: x\ntags:\n  a: events_90d > 1\n  a: events_90d > 2\n"
    problem = only_problem(refusal(tmp_path, text))
    assert (problem["line"], problem["message"]) == (4, "the key 'a' appears twice")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the program is empty"),
        ("# only a comment\n", "the program is empty"),
        ("- name: x\n", "the program must be a mapping of keys, not a list"),
        ("just words\n", "the program must be a mapping of keys, not a str"),
    ],
)
def test_empty_or_not_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    assert only_problem(refusal(tmp_path, text))["message"] == message


def test_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProgramError) as caught:
        load_program(tmp_path / "nope.yaml")
    assert caught.value.message == (
        f"{tmp_path / 'nope.yaml'}: the program file does not exist -- check the path "
        "(MEMBERWISE_PROGRAM_FILE), or unset it to use the built-in program"
    )
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ProgramError, match="not UTF-8 text"):
        load_program(latin)


def test_parse_program_names_its_source() -> None:
    with pytest.raises(ProgramError) as caught:
        parse_program("name: x\ncolour: red\n", source="upload")
    assert caught.value.message.startswith("upload:2: colour: unknown key 'colour'")


def test_a_program_built_in_python_is_checked_too() -> None:
    with pytest.raises(ValidationError, match="unknown field 'nope'"):
        Program(name="x", tags={"a": Tag(rule="nope > 1")})
    with pytest.raises(ValidationError, match="does not match every member"):
        Program(name="x", segments=(Segment(name="a", rule="events_90d > 1"),))
    with pytest.raises(ValidationError):
        Program(name="x", colour="red")  # type: ignore[call-arg]


def test_merchant_keep_away_tiers_must_be_the_programs(tmp_path: Path) -> None:
    text = "name: x\nmerchants:\n  keep_away:\n    tiers: [gold]\n"
    problem = only_problem(refusal(tmp_path, text))
    assert (problem["path"], problem["message"]) == (
        "merchants.keep_away.tiers[0]",
        "no tier 'gold' in the program",
    )
