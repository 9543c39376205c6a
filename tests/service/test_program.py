"""The program's service section: what loads, and refusals that name the file, line and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from memberwise.program.desk import Hours, Metric, TicketKind
from memberwise.program.service import ProgramError, load_program

BASE = """name: p
tiers:
  - {name: member}
  - {name: black, manual: true}
service:
"""


def _problems(tmp_path: Path, section: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(BASE + section, encoding="utf-8")
    with pytest.raises(ProgramError) as caught:
        load_program(path)
    return [f"{p['line']}: {p['path']}: {p['message']}" for p in caught.value.details["problems"]]


def test_the_demo_programs_service_section_loads() -> None:
    program = load_program(Path("programs/demo.yaml"))
    callback = program.service.policy_for("apass", TicketKind.callback)
    assert callback is not None
    assert (callback.target(Metric.first_response), callback.hours) == (3, Hours.always)
    standard = program.service.policy_for("member", TicketKind.inquiry)
    assert standard is not None and standard.hours is Hours.business
    assert program.service.authority["manager"].per_case == 200_000


def test_refusals_name_the_line_and_the_path(tmp_path: Path) -> None:
    section = """  sla:
    - {name: vip, tiers: [blak], first_response: 3}
  warn_at: [1.5]
  calendar: {holidays: moon}
  auto:
    - {name: a, event: complaint, rule: "tier = 'black' and ratingg < 2"}
"""
    assert sorted(_problems(tmp_path, section)) == [
        "11: service.auto[0].rule: rule 'a', position 20: unknown field 'ratingg'",
        "8: service.warn_at[0]: 1.5 is not a fraction between 0 and 1",
        "9: service.calendar.holidays: unknown holiday calendar 'moon'",
    ]
    only_sla = "  sla:\n    - {name: vip, tiers: [blak], first_response: 3}\n"
    assert _problems(tmp_path, only_sla) == ["7: service.sla[0].tiers[0]: unknown tier 'blak'"]
