"""The program's ``service:`` section: the service desk's SLAs, calendar, skills, authority
matrix, after-sales rules and automatic tickets.

A program file says, for example::

    service:
      calendar: {holidays: chinese, start: "09:00", end: "18:00"}
      warn_at: [0.5, 0.8]          # warnings at these fractions of a target
      sla:                          # the first policy whose tiers and kinds match applies
        - {name: black_callback, tiers: [apass], kinds: [callback],
           first_response: 3, hours: "24x7"}
        - {name: black, tiers: [apass], first_response: 10, next_response: 30,
           resolution: 1440, hours: "24x7"}
        - {name: standard, first_response: 240, next_response: 480, resolution: 4320}
      authority:                    # lowest first; fen per case and per day (null: no limit)
        agent: {per_case: 5000, daily: 50000}
        manager: {per_case: 200000, daily: 1000000}
        supervisor: {per_case: 1000000, daily: 5000000}
        finance: {per_case: null, daily: null}
      after_sales: {no_reason_days: 7, no_reason_exceptions: [生鲜, 定制]}
      auto:
        - {name: black_complaint, event: complaint, rule: "tier = 'apass'", priority: high}

Targets are minutes. ``hours`` is ``24x7`` or ``business`` (the calendar's working hours on
working days: weekends and, with ``holidays: chinese``, Chinese public holidays are off, and
make-up workdays are on).
"""

from __future__ import annotations

from datetime import date, time
from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from memberwise.profiles.rules import FieldType
from memberwise.program.base import Problem, Section, problem, problems_error, rule_problem

#: At most a year, in minutes: a target longer than that is a typo.
MAX_MINUTES = 525_600


class Channel(StrEnum):
    phone = "phone"
    chat = "chat"
    email = "email"
    app = "app"


class TicketKind(StrEnum):
    inquiry = "inquiry"
    complaint = "complaint"
    after_sales = "after_sales"
    callback = "callback"
    compensation = "compensation"


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class Hours(StrEnum):
    always = "24x7"
    business = "business"


class Metric(StrEnum):
    """The clocks of a ticket."""

    first_response = "first_response"
    next_response = "next_response"
    resolution = "resolution"


class CalendarSettings(Section):
    """Working days and hours of the business-hours clocks (in the display time zone)."""

    #: ``chinese``: Chinese public holidays and make-up workdays (chinese-calendar);
    #: ``weekends``: Monday to Friday only.
    holidays: str = "chinese"
    start: time = time(9, 0)
    end: time = time(18, 0)
    #: Days off and make-up workdays the program adds (e.g. years chinese-calendar lacks).
    extra_holidays: tuple[date, ...] = ()
    extra_workdays: tuple[date, ...] = ()

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: str) -> str:
        if value not in ("chinese", "weekends"):
            raise problems_error(
                [problem([], f"unknown holiday calendar {value!r}", "use 'chinese' or 'weekends'")]
            )
        return value

    @model_validator(mode="after")
    def _hours(self) -> CalendarSettings:
        if self.end <= self.start:
            raise problems_error(
                [
                    problem(
                        ["end"],
                        f"the working day ends ({self.end}) before it starts ({self.start})",
                        "make end later than start, e.g. start: '09:00', end: '18:00'",
                    )
                ]
            )
        return self


class SlaPolicy(Section):
    """Targets in minutes for the tickets of ``tiers`` (empty: any) and ``kinds`` (empty: any)."""

    name: str = Field(min_length=1, max_length=64)
    tiers: tuple[str, ...] = ()
    kinds: tuple[TicketKind, ...] = ()
    first_response: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    next_response: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    resolution: int | None = Field(default=None, ge=1, le=MAX_MINUTES)
    hours: Hours = Hours.business

    def matches(self, tier: str | None, kind: TicketKind) -> bool:
        return (not self.tiers or tier in self.tiers) and (not self.kinds or kind in self.kinds)

    def target(self, metric: Metric) -> int | None:
        """The target of ``metric`` in minutes (None: not measured)."""
        value: int | None = getattr(self, metric.value)
        return value


class Authority(Section):
    """What one role may pay on its own: fen per case and per day (None: no limit)."""

    per_case: int | None = Field(default=None, ge=0, le=10**12)
    daily: int | None = Field(default=None, ge=0, le=10**13)


class AfterSalesSettings(Section):
    """Returns without a reason, and the minutes each step of a request may take."""

    no_reason_days: int = Field(default=7, ge=0, le=365)
    #: Categories that need a reason even within the no-reason window (fresh food, custom...).
    no_reason_exceptions: tuple[str, ...] = ()
    #: Step -> minutes (24x7): approve a request, member ships, goods arrive, money refunded.
    steps: dict[str, int] = Field(
        default_factory=lambda: {"approve": 1440, "ship": 10080, "receive": 10080, "refund": 1440}
    )
    #: Members carrying one of these tags get no express refund (a fraud or abuse flag).
    fraud_tags: tuple[str, ...] = ()

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: dict[str, int]) -> dict[str, int]:
        found: list[Problem] = []
        for name, minutes in value.items():
            if name not in STEPS:
                found.append(problem([name], f"unknown step {name!r}", f"use {', '.join(STEPS)}"))
            elif not 1 <= minutes <= MAX_MINUTES:
                found.append(problem([name], f"{minutes} minutes", "use 1 to 525600"))
        if found:
            raise problems_error(found)
        return value


#: The after-sales steps that have a deadline.
STEPS = ("approve", "ship", "receive", "refund")

#: Fields an automatic-ticket rule may read: the event's and the member's at that moment.
AUTO_FIELDS: dict[str, FieldType] = {
    "type": FieldType.string,
    "rating": FieldType.number,
    "tier": FieldType.string,
    "tier_rank": FieldType.number,
    "clv_12m": FieldType.number,
    "churn_risk": FieldType.number,
    "price": FieldType.number,
    "channel": FieldType.string,
}

#: Event kinds that may open a ticket.
AUTO_EVENTS = ("complaint", "review", "downgrade_notice", "payment_failed", "refund")


class AutoRule(Section):
    """Open a ticket of ``kind`` when an ``event`` of that type matches ``rule`` (the rule
    language over :data:`AUTO_FIELDS`). (The key is not ``on``: YAML reads that as true.)"""

    name: str = Field(min_length=1, max_length=64)
    event: str
    rule: str = "true"
    kind: TicketKind = TicketKind.complaint
    priority: Priority = Priority.normal

    @field_validator("event")
    @classmethod
    def _event(cls, value: str) -> str:
        if value not in AUTO_EVENTS:
            raise problems_error(
                [problem([], f"unknown event {value!r}", f"use one of {', '.join(AUTO_EVENTS)}")]
            )
        return value


def _default_sla() -> tuple[SlaPolicy, ...]:
    return (SlaPolicy(name="standard", first_response=240, next_response=480, resolution=4320),)


def _default_authority() -> dict[str, Authority]:
    return {
        "agent": Authority(per_case=5_000, daily=50_000),
        "manager": Authority(per_case=200_000, daily=1_000_000),
        "supervisor": Authority(per_case=1_000_000, daily=5_000_000),
        "finance": Authority(per_case=None, daily=None),
    }


class ServiceSettings(Section):
    """The service desk's part of a program (see the module docstring)."""

    calendar: CalendarSettings = Field(default_factory=CalendarSettings)
    sla: tuple[SlaPolicy, ...] = Field(default_factory=_default_sla)
    #: Fractions of a target at which a warning is recorded.
    warn_at: tuple[float, ...] = (0.5, 0.8)
    #: Pending states that pause the clocks (the member owes an answer).
    pause_on: tuple[str, ...] = ("pending_member",)
    #: Days after resolution within which the member may reopen.
    reopen_days: int = Field(default=7, ge=0, le=365)
    #: Ticket kind -> the skill an agent needs for it (kinds not listed: any agent).
    skills: dict[TicketKind, str] = Field(
        default_factory=lambda: {
            TicketKind.after_sales: "after_sales",
            TicketKind.compensation: "finance",
        }
    )
    #: Roles lowest first; a compensation above a role's limits waits for a higher one.
    authority: dict[str, Authority] = Field(default_factory=_default_authority)
    after_sales: AfterSalesSettings = Field(default_factory=AfterSalesSettings)
    auto: tuple[AutoRule, ...] = ()

    @field_validator("warn_at")
    @classmethod
    def _warn_at(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        found = [
            problem([i], f"{f} is not a fraction between 0 and 1", "use e.g. 0.5 or 0.8")
            for i, f in enumerate(value)
            if not 0 < f < 1
        ]
        if found:
            raise problems_error(found)
        return tuple(sorted(set(value)))

    @field_validator("pause_on")
    @classmethod
    def _pause_on(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        found = [
            problem([i], f"{s!r} is not a pending state", "use pending_member, pending_third_party")
            for i, s in enumerate(value)
            if s not in ("pending_member", "pending_third_party")
        ]
        if found:
            raise problems_error(found)
        return value

    @field_validator("authority")
    @classmethod
    def _authority(cls, value: dict[str, Authority]) -> dict[str, Authority]:
        if not value:
            raise problems_error([problem([], "no roles", "list at least one role")])
        return value

    @field_validator("auto")
    @classmethod
    def _auto(cls, value: tuple[AutoRule, ...]) -> tuple[AutoRule, ...]:
        found = [
            bad
            for i, r in enumerate(value)
            if (bad := rule_problem([i, "rule"], r.name, r.rule, AUTO_FIELDS)) is not None
        ]
        if found:
            raise problems_error(found)
        return value

    def policy_for(self, tier: str | None, kind: TicketKind) -> SlaPolicy | None:
        """The first policy matching the tier and kind (None: no SLA)."""
        return next((p for p in self.sla if p.matches(tier, kind)), None)

    def authority_rank(self, role: str) -> int:
        """Position of ``role`` in the matrix (higher may approve more); -1 unknown."""
        names = list(self.authority)
        return names.index(role) if role in names else -1


def service_problems(tiers: list[str], settings: ServiceSettings) -> list[Problem]:
    """Problems that need the rest of the program: SLA tiers that do not exist."""
    found: list[Problem] = []
    for i, policy in enumerate(settings.sla):
        for j, tier in enumerate(policy.tiers):
            if tier not in tiers:
                found.append(
                    problem(
                        ["service", "sla", i, "tiers", j],
                        f"unknown tier {tier!r}",
                        f"use one of the program's tiers: {', '.join(tiers) or '(none)'}",
                    )
                )
    return found
