"""The membership program as data: what a program file may say, validated by pydantic.

A program file is YAML (see ``programs/demo.yaml`` and ``docs/profiles.md``)::

    name: demo
    display_timezone: Asia/Shanghai
    tags:
      night_owl: share_events_22_to_02 >= 0.4 and events_90d >= 20
      big_spender:
        rule: m_score >= 5 and orders_365d >= 3
        description: the top fifth of buyers by spend, buying regularly
    segments:            # optional; omitted = the built-in lifecycle segments
      - {name: vip, rule: "rfm_score >= 13"}
      - {name: everyone, rule: "true"}
    personas:
      k_min: 3
      k_max: 8
      names: {0: 夜猫子}

Every model refuses unknown keys (a typo must not be silently ignored, and later sections --
tiers, score, benefits -- are added as new fields of :class:`Program`). Every rule is checked
against the profile field catalog here, so a program that validates never fails a build on a
rule. Errors that need more than pydantic's sentence carry ``problems`` (where inside the value,
what is wrong, how to fix it, and a rule's name and position) in the error context;
:func:`memberwise.program.service.load_program` turns them into one readable report.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from memberwise.privacy.schemas import PrivacySettings
from memberwise.profiles.fields import FIELD_TYPES
from memberwise.profiles.personas import DEFAULT_FEATURES
from memberwise.profiles.rules import FieldType, parse_rule
from memberwise.profiles.segments import LIFECYCLE, NAME_PATTERN, Segment, is_catch_all
from memberwise.program.base import Problem, Section, problem, problems_error, rule_problem, suggest
from memberwise.program.benefits import Benefit, benefit_problems
from memberwise.program.desk import ServiceSettings, service_problems
from memberwise.program.feedback import FeedbackSettings
from memberwise.program.ledger import CouponTemplate, PointsSettings
from memberwise.program.membership import (
    BlackCard,
    Plan,
    ScoreSettings,
    Tier,
    reference_problems,
    tier_problems,
)
from memberwise.program.merchants import MerchantSettings
from memberwise.program.predictions import PredictionSettings
from memberwise.program.recommendations import RecommendationSettings

DEFAULT_TIMEZONE = "Asia/Shanghai"
#: The most personas a program may ask for (more is not a persona any operator can act on).
MAX_PERSONAS = 30


class Tag(Section):
    """A tag: a rule, and what it means to an operator.

    In a file a tag is either the rule alone (``night_owl: "share_events_22_to_02 >= 0.3"``)
    or a mapping with ``rule`` and ``description``.
    """

    rule: str
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _rule_alone(cls, data: Any) -> Any:
        # YAML reads a bare `true` as a boolean; as a rule it means `true`.
        if isinstance(data, bool):
            return {"rule": str(data).lower()}
        if isinstance(data, str):
            return {"rule": data}
        if not isinstance(data, dict | Tag):
            raise problems_error(
                [
                    problem(
                        [],
                        f"a tag is a rule or a mapping, not {data!r}",
                        "write the rule after the name (quote it if it contains ': '), or "
                        "'rule:' and 'description:' below it",
                    )
                ]
            )
        return data


class PersonaSettings(Section):
    """How personas are fitted (see :func:`memberwise.profiles.personas.fit_personas`)."""

    features: tuple[str, ...] = DEFAULT_FEATURES
    k_min: int = Field(default=3, ge=2, le=MAX_PERSONAS)
    k_max: int = Field(default=8, ge=2, le=MAX_PERSONAS)
    #: Operator's names of the clusters, by cluster id (0 = the largest cluster).
    names: dict[int, str] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        found: list[Problem] = []
        numbers = [n for n, t in FIELD_TYPES.items() if t is FieldType.number]
        if not value:
            found.append(problem([], "no features", "list at least one number field"))
        for i, name in enumerate(value):
            if name not in FIELD_TYPES:
                hint = suggest(name, numbers)
                fix = f"{hint}use a number field of the catalog (docs/profiles.md)"
                found.append(problem([i], f"unknown field {name!r}", fix))
            elif FIELD_TYPES[name] is not FieldType.number:
                kind = FIELD_TYPES[name].value
                fix = "personas cluster number fields only; remove it"
                found.append(problem([i], f"{name!r} is a {kind} field", fix))
            elif name in value[:i]:
                found.append(problem([i], f"{name!r} is listed twice", "remove the repeat"))
        if found:
            raise problems_error(found)
        return value

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[int, str]) -> dict[int, str]:
        found: list[Problem] = []
        seen: set[str] = set()
        for cluster, name in value.items():
            if not name.strip():
                found.append(problem([cluster], "the name is empty", "write a name or remove it"))
            elif name in seen:
                found.append(problem([cluster], f"{name!r} names two clusters", "rename one"))
            seen.add(name)
        if found:
            raise problems_error(found)
        return value

    @model_validator(mode="after")
    def _range(self) -> PersonaSettings:
        found: list[Problem] = []
        if self.k_min > self.k_max:
            found.append(
                problem(
                    ["k_min"],
                    f"k_min ({self.k_min}) is larger than k_max ({self.k_max})",
                    "make k_min at most k_max",
                )
            )
        for cluster in self.names:
            if not 0 <= cluster < self.k_max:
                found.append(
                    problem(
                        ["names", cluster],
                        f"cluster id {cluster} does not exist with k_max {self.k_max}",
                        f"use ids 0 to {self.k_max - 1} (0 is the largest cluster)",
                    )
                )
        if found:
            raise problems_error(found)
        return self


class Program(Section):
    """A membership program: its name, display time zone, tags, segments and personas."""

    name: str = Field(min_length=1, max_length=200)
    #: IANA time zone of member-facing day boundaries and of the habit fields' hours.
    display_timezone: str = DEFAULT_TIMEZONE
    #: Language of the staff console's labels (``zh-CN`` or ``en``; others fall back to English).
    locale: str = Field(default="zh-CN", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    #: Tag name -> tag; a member carries every tag whose rule matches.
    tags: dict[str, Tag] = Field(default_factory=dict)
    #: Tried in order, the first match is the member's segment; the last is always ``true``.
    segments: tuple[Segment, ...] = LIFECYCLE
    personas: PersonaSettings = Field(default_factory=PersonaSettings)
    #: The member score (the 淘气值 kind), recomputed at each build.
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    #: Tiers from lowest to highest; the first is everyone's floor. None: no tiers.
    tiers: tuple[Tier, ...] = ()
    #: Paid memberships by name.
    plans: dict[str, Plan] = Field(default_factory=dict)
    #: The invitation-only tier's invitations (the APASS kind).
    black_card: BlackCard | None = None
    #: Benefit name -> what it is; tiers and plans grant benefits by these names.
    benefits: dict[str, Benefit] = Field(default_factory=dict)
    points: PointsSettings = Field(default_factory=PointsSettings)
    #: Coupon template name -> template.
    coupons: dict[str, CouponTemplate] = Field(default_factory=dict)
    predictions: PredictionSettings = Field(default_factory=PredictionSettings)
    recommendations: RecommendationSettings = Field(default_factory=RecommendationSettings)
    #: Consent purposes and defaults, request deadlines, retention (see docs/privacy.md).
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    #: The service desk: SLAs, calendar, routing skills, authority, after-sales, auto tickets.
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    #: Feedback topics and the rising-complaint test (:mod:`memberwise.feedback`).
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    #: Merchant scorecards, penalty points and actions (:mod:`memberwise.merchants`).
    merchants: MerchantSettings = Field(default_factory=MerchantSettings)

    def tier_index(self, name: str) -> int:
        """The position of tier ``name`` in the ladder (0 is the floor)."""
        return next(i for i, t in enumerate(self.tiers) if t.name == name)

    @model_validator(mode="after")
    def _membership(self) -> Program:
        found = [{**p, "at": ["tiers", *p["at"]]} for p in tier_problems(self.tiers, self.score)]
        found += reference_problems(self.tiers, self.plans, self.black_card, self.benefits)
        found += benefit_problems(self)
        found += service_problems([t.name for t in self.tiers], self.service)
        found += self._merchant_tier_problems()
        if found:
            raise problems_error(found)
        return self

    def _merchant_tier_problems(self) -> list[Problem]:
        """Tiers the merchants section names must be the program's ("*": every tier)."""
        names = [t.name for t in self.tiers]
        keep = self.merchants.keep_away
        return [
            problem(["merchants", "keep_away", key, i], f"no tier {tier!r} in the program",
                    f"{suggest(tier, names)}use one of the program's tiers or \"*\"")
            for key, tiers in (("tiers", keep.tiers), ("ticket_tiers", keep.ticket_tiers))
            for i, tier in enumerate(tiers)
            if tier != "*" and tier not in names
        ]  # fmt: skip

    def tag_rules(self) -> dict[str, str]:
        """Tag name -> rule text, in file order (each already checked against the catalog)."""
        return {name: tag.rule for name, tag in self.tags.items()}

    def tag_description(self, name: str) -> str:
        """What the tag ``name`` means ("" when the program does not say)."""
        return self.tags[name].description

    def segment_list(self) -> list[Segment]:
        """The segments in the order they are tried (the last is the catch-all)."""
        return list(self.segments)

    @field_validator("display_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            hint = suggest(value, ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Tokyo", "UTC"])
            raise problems_error(
                [
                    problem(
                        [],
                        f"{value!r} is not a known time zone",
                        f"{hint}use an IANA name such as Asia/Shanghai, Europe/Berlin or UTC",
                    )
                ]
            ) from None
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, Tag]) -> dict[str, Tag]:
        found: list[Problem] = []
        for name, tag in value.items():
            if not NAME_PATTERN.fullmatch(name):
                found.append(
                    problem(
                        [name],
                        f"tag name {name!r} is not a lowercase identifier",
                        "use lowercase letters, digits and '_', starting with a letter "
                        "(at most 63 characters)",
                    )
                )
            elif name in FIELD_TYPES:
                found.append(
                    problem(
                        [name],
                        f"tag name {name!r} is the name of a profile field",
                        "pick another name (tags and fields sit side by side in a profile)",
                    )
                )
            elif bad := rule_problem([name], name, tag.rule):
                found.append(bad)
        if found:
            raise problems_error(found)
        return value

    @field_validator("segments", mode="before")
    @classmethod
    def _built_in(cls, value: Any) -> Any:
        return LIFECYCLE if value is None else value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: tuple[Segment, ...]) -> tuple[Segment, ...]:
        if not value:
            raise problems_error(
                [problem([], "no segments", "list at least one, or remove 'segments'")]
            )
        found: list[Problem] = []
        seen: set[str] = set()
        for i, segment in enumerate(value):
            if segment.name in seen:
                fix = "segment names must be unique; rename one"
                found.append(problem([i, "name"], f"segment {segment.name!r} twice", fix))
            seen.add(segment.name)
            if bad := rule_problem([i, "rule"], segment.name, segment.rule):
                found.append(bad)
                continue
            catch_all = is_catch_all(parse_rule(segment.name, segment.rule, FIELD_TYPES))
            if catch_all and i < len(value) - 1:
                found.append(
                    problem(
                        [i, "rule"],
                        f"segment {segment.name!r} matches every member, so the segments "
                        "after it can never match",
                        "move it to the end, or give it a narrower rule",
                    )
                )
        last = value[-1]
        if not found and not is_catch_all(parse_rule(last.name, last.rule, FIELD_TYPES)):
            found.append(
                problem(
                    [len(value) - 1],
                    f"the last segment ({last.name!r}) does not match every member, so some "
                    "members would have no segment",
                    "end the list with a catch-all, e.g. {name: lost, rule: 'true'}",
                )
            )
        if found:
            raise problems_error(found)
        return value
