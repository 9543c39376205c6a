"""The membership sections of a program file: the member score, the tiers, the paid plans and the
invitation-only black card.

::

    score:
      name: 淘气值
      parts:
        - {name: spend, field: monetary_365d, weight: 0.1, max: 600}
        - {name: credit, field: credit_stars, weight: 50, max: 350}
    tiers:
      - {name: member}                        # the first tier is everyone's floor
      - name: gold
        qualify:                              # any one of these qualifies
          - {score: 600}
          - {spend: 500000, window_days: 365} # net spend, fen (5,000 CNY)
          - {rule: "orders_365d >= 12"}
        validity: {days: 365, anchor: tier_start}
        downgrade: one_step
        grace_days: 30
        benefits: [free_shipping]
      - {name: apass, invitation: true, benefits: [account_manager]}
    plans:
      88vip:
        fee: 88800                            # fen: 888 CNY
        prices: [{rule: "score >= 1000", fee: 8800}]
        period_days: 365
        refund: {policy: full_within_days, days: 7, otherwise: none}
    black_card:
      tier: apass
      criteria: "monetary_365d >= 100000 and credit_stars >= 5"
      ranking: [{field: monetary_365d, weight: 3}, {field: categories_365d, weight: 1}]
      quota: {per_active_members: 10000}

Money in a program file is integer minor units (fen), as in the operational store, the API and
the other sections (``fee: 8800`` is 88 CNY). Every rule here may use the profile fields and
``score``; each is checked when the file loads.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from memberwise.profiles.fields import FIELD_TYPES
from memberwise.profiles.rules import FieldType
from memberwise.profiles.segments import NAME_PATTERN
from memberwise.program.base import Problem, Section, problem, problems_error, rule_problem, suggest

#: Fields a membership rule may use: the profile catalog plus the member score.
MEMBERSHIP_FIELDS: dict[str, FieldType] = {**FIELD_TYPES, "score": FieldType.number}
#: The longest look-back a spend or points qualification may use.
MAX_WINDOW_DAYS = 3 * 366


#: Plan names may start with a digit (88vip), unlike tier and part names.
PLAN_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,62}")
#: The most money a program file may name: 100 million CNY, in fen.
MAX_FEN = 10_000_000_000


def _name_problem(at: list[str | int], name: str, what: str) -> Problem | None:
    if NAME_PATTERN.fullmatch(name):
        return None
    return problem(
        at,
        f"{what} name {name!r} is not a lowercase identifier",
        "use lowercase letters, digits and '_', starting with a letter (at most 63 characters)",
    )


class ScorePart(Section):
    """One part of the member score: ``min(max, weight * field)`` (a missing value counts 0)."""

    name: str
    field: str
    weight: float = Field(gt=0)
    #: The most this part can add; parts are capped so no single behaviour buys the score.
    max: float = Field(gt=0)
    description: str = ""

    @field_validator("field")
    @classmethod
    def _field(cls, value: str) -> str:
        numbers = [n for n, t in FIELD_TYPES.items() if t is FieldType.number]
        if value not in numbers:
            hint = suggest(value, numbers)
            raise problems_error(
                [problem([], f"{value!r} is not a number field", f"{hint}see docs/profiles.md")]
            )
        return value


class ScoreSettings(Section):
    """The member score (the 淘气值 kind): the sum of capped parts, rounded down."""

    name: str = "score"
    description: str = ""
    parts: tuple[ScorePart, ...] = ()

    @property
    def maximum(self) -> int:
        return int(sum(p.max for p in self.parts))

    @field_validator("parts")
    @classmethod
    def _parts(cls, value: tuple[ScorePart, ...]) -> tuple[ScorePart, ...]:
        found: list[Problem] = []
        seen: set[str] = set()
        for i, part in enumerate(value):
            if bad := _name_problem([i, "name"], part.name, "score part"):
                found.append(bad)
            if part.name in seen:
                found.append(problem([i, "name"], f"part {part.name!r} twice", "rename one"))
            seen.add(part.name)
        if found:
            raise problems_error(found)
        return value


class Anchor(StrEnum):
    """Where a tier's qualification period starts."""

    tier_start = "tier_start"  # the day the member entered the tier
    join_date = "join_date"  # the member's registration anniversary
    yearly = "yearly"  # a fixed yearly cycle, e.g. every 1 January in the program's zone


class Validity(Section):
    """How long a qualification lasts: ``days`` from the tier start or join anniversary, or
    until the next ``cycle_start`` (MM-DD, in the program's time zone) for the yearly anchor."""

    anchor: Anchor = Anchor.tier_start
    days: int = Field(default=365, ge=1, le=3 * 366)
    cycle_start: str = "01-01"

    @field_validator("cycle_start")
    @classmethod
    def _cycle(cls, value: str) -> str:
        try:
            month, day = (int(p) for p in value.split("-"))
            ok = 1 <= month <= 12 and 1 <= day <= 28
        except ValueError:
            ok = False
        if not ok:
            raise problems_error(
                [problem([], f"{value!r} is not MM-DD", "write e.g. '01-01' (days 1 to 28)")]
            )
        return value


class Qualification(Section):
    """One way into a tier: exactly one of ``score``, ``spend`` (CNY, net of refunds),
    ``points_earned`` (never the spendable balance) or ``rule``. Spend and points count over
    ``window_days`` or, with ``since_tier_change``, since the member's last tier change."""

    score: int | None = Field(default=None, ge=0)
    spend: int | None = Field(default=None, ge=0, le=MAX_FEN)
    points_earned: int | None = Field(default=None, ge=0)
    rule: str | None = None
    window_days: int | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS)
    since_tier_change: bool = False

    @property
    def metric(self) -> str:
        """What it measures: score, net_spend_<N>d, net_spend_since_change, points_<N>d, ..."""
        if self.score is not None:
            return "score"
        if self.rule is not None:
            return "rule"
        kind = "net_spend" if self.spend is not None else "points"
        return f"{kind}_since_change" if self.since_tier_change else f"{kind}_{self.window_days}d"

    @property
    def threshold(self) -> int | None:
        """The number to reach, in the metric's unit (score points, fen, points)."""
        if self.score is not None:
            return self.score
        if self.spend is not None:
            return self.spend
        return self.points_earned

    @model_validator(mode="after")
    def _one(self) -> Qualification:
        given = [
            k for k in ("score", "spend", "points_earned", "rule") if getattr(self, k) is not None
        ]
        found: list[Problem] = []
        if len(given) != 1:
            found.append(
                problem(
                    [],
                    f"a qualification has {len(given)} of score, spend, points_earned, rule",
                    "give exactly one per item; list several items for 'any of'",
                )
            )
        elif given[0] in ("spend", "points_earned"):
            if (self.window_days is None) == (not self.since_tier_change):
                found.append(
                    problem(
                        [],
                        f"{given[0]} needs either window_days or since_tier_change: true",
                        "say over which period it counts, e.g. window_days: 365",
                    )
                )
        elif self.window_days is not None or self.since_tier_change:
            found.append(
                problem(
                    [],
                    f"window_days and since_tier_change apply to spend and points, not {given[0]}",
                    "remove them",
                )
            )
        if self.rule is not None and (
            bad := rule_problem(["rule"], "qualify", self.rule, MEMBERSHIP_FIELDS)
        ):
            found.append(bad)
        if found:
            raise problems_error(found)
        return self


class Downgrade(StrEnum):
    one_step = "one_step"  # down one tier at a time
    to_qualifying = "to_qualifying"  # straight to the highest tier still qualified for


class Tier(Section):
    """A tier. The first tier of a program is everyone's floor (no qualification). A tier with
    ``invitation`` or ``manual`` is entered only by invitation or by staff and is never changed
    by recalculation."""

    name: str
    description: str = ""
    #: The description in Chinese, shown where the page is Chinese (see docs/membership.md).
    description_zh: str = ""
    qualify: tuple[Qualification, ...] = ()
    invitation: bool = False
    manual: bool = False
    validity: Validity = Field(default_factory=Validity)
    downgrade: Downgrade = Downgrade.one_step
    #: Days after the qualification period ends during which the tier is kept.
    grace_days: int = Field(default=0, ge=0, le=366)
    #: Days after entering the tier during which it cannot be lost.
    protection_days: int = Field(default=0, ge=0, le=3 * 366)
    #: A member about to be downgraded is told this many days before.
    notice_days: int = Field(default=30, ge=0, le=366)
    benefits: tuple[str, ...] = ()

    @property
    def automatic(self) -> bool:
        return not (self.invitation or self.manual)


class RefundPolicy(StrEnum):
    none = "none"
    pro_rata = "pro_rata"
    full_within_days = "full_within_days"


class Refund(Section):
    """What a member gets back on cancelling: nothing, the unused share, or everything within
    ``days`` of paying if no benefit was used (else ``otherwise``)."""

    policy: RefundPolicy = RefundPolicy.none
    days: int = Field(default=7, ge=0, le=366)
    otherwise: RefundPolicy = RefundPolicy.none

    @model_validator(mode="after")
    def _otherwise(self) -> Refund:
        if self.otherwise is RefundPolicy.full_within_days:
            raise problems_error(
                [
                    problem(
                        ["otherwise"],
                        "otherwise cannot be full_within_days",
                        "use none or pro_rata",
                    )
                ]
            )
        return self


class PlanPrice(Section):
    """A member-dependent fee: the first price whose rule holds applies."""

    rule: str
    fee: int = Field(ge=0, le=MAX_FEN)

    @field_validator("rule")
    @classmethod
    def _rule(cls, value: str) -> str:
        if bad := rule_problem([], "price", value, MEMBERSHIP_FIELDS):
            raise problems_error([bad])
        return value


class Plan(Section):
    """A paid membership (the 88VIP / JD PLUS / Prime kind): a fee per period."""

    description: str = ""
    #: The description in Chinese, shown where the page is Chinese (see docs/membership.md).
    description_zh: str = ""
    fee: int = Field(ge=0, le=MAX_FEN)
    prices: tuple[PlanPrice, ...] = ()
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    period_days: int = Field(default=365, ge=1, le=3 * 366)
    trial_days: int = Field(default=0, ge=0, le=366)
    auto_renew: bool = True
    #: Days a renewal may stay unpaid (past_due) before the subscription expires.
    grace_days: int = Field(default=7, ge=0, le=90)
    #: Hours a new subscription may wait for its first payment before it expires.
    payment_window_hours: int = Field(default=24, ge=1, le=24 * 30)
    refund: Refund = Field(default_factory=Refund)
    benefits: tuple[str, ...] = ()


class Quota(Section):
    """How many members may hold the black card: a count, or one per N active members."""

    count: int | None = Field(default=None, ge=1)
    per_active_members: int | None = Field(default=None, ge=1)
    #: Who counts as active (a rule); by default anyone with a purchase in 365 days.
    active_rule: str = "orders_365d >= 1"

    @model_validator(mode="after")
    def _one(self) -> Quota:
        if (self.count is None) == (self.per_active_members is None):
            raise problems_error(
                [
                    problem(
                        [],
                        "give exactly one of count and per_active_members",
                        "e.g. per_active_members: 10000",
                    )
                ]
            )
        if bad := rule_problem(["active_rule"], "active", self.active_rule, MEMBERSHIP_FIELDS):
            raise problems_error([bad])
        return self


class RankingCriterion(Section):
    """One weighted field of the black-card ranking (scored by its percentile among the
    eligible members, so fields of any scale weigh as their weights say)."""

    field: str
    weight: float = Field(gt=0)
    description: str = ""
    #: The description in Chinese, shown where the page is Chinese (see docs/membership.md).
    description_zh: str = ""


class BlackCard(Section):
    """The invitation-only tier (the APASS kind): hard criteria, then a weighted ranking, then a
    quota; the result is a list of invitations, each with why the member qualified."""

    tier: str
    criteria: str
    ranking: tuple[RankingCriterion, ...]
    quota: Quota
    #: Member ids never invited.
    exclude: tuple[str, ...] = ()
    #: A pending invitation expires after this many days.
    invitation_days: int = Field(default=30, ge=1, le=366)
    #: A member who declined is not invited again for this many days.
    reinvite_after_days: int = Field(default=365, ge=0, le=3 * 366)

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value: str) -> str:
        if bad := rule_problem([], "criteria", value, MEMBERSHIP_FIELDS):
            raise problems_error([bad])
        return value

    @field_validator("ranking")
    @classmethod
    def _ranking(cls, value: tuple[RankingCriterion, ...]) -> tuple[RankingCriterion, ...]:
        found: list[Problem] = []
        numbers = [n for n, t in MEMBERSHIP_FIELDS.items() if t is FieldType.number]
        if not value:
            found.append(problem([], "no ranking criteria", "list at least one weighted field"))
        seen: set[str] = set()
        for i, criterion in enumerate(value):
            if criterion.field not in numbers:
                hint = suggest(criterion.field, numbers)
                found.append(
                    problem(
                        [i, "field"],
                        f"{criterion.field!r} is not a number field",
                        f"{hint}see docs/profiles.md",
                    )
                )
            elif criterion.field in seen:
                found.append(
                    problem(
                        [i, "field"], f"{criterion.field!r} is ranked twice", "remove the repeat"
                    )
                )
            seen.add(criterion.field)
        if found:
            raise problems_error(found)
        return value


def tier_problems(tiers: tuple[Tier, ...], score: ScoreSettings) -> list[Problem]:
    """What is wrong with the tier ladder as a whole: names, a floor, reachability, overlap."""
    found: list[Problem] = []
    seen: set[str] = set()
    for i, tier in enumerate(tiers):
        if bad := _name_problem([i, "name"], tier.name, "tier"):
            found.append(bad)
        if tier.name in seen:
            found.append(
                problem([i, "name"], f"tier {tier.name!r} twice", "tier names must be unique")
            )
        seen.add(tier.name)
        if tier.invitation and tier.manual:
            found.append(
                problem([i], f"tier {tier.name!r} is both invitation and manual", "choose one")
            )
        if i == 0:
            if tier.qualify or not tier.automatic:
                found.append(
                    problem(
                        [0],
                        f"the first tier ({tier.name!r}) is everyone's floor, so it has no "
                        "qualification and is neither invitation nor manual",
                        "add a plain first tier, e.g. {name: member}",
                    )
                )
            continue
        if tier.automatic and not tier.qualify:
            found.append(
                problem(
                    [i, "qualify"],
                    f"tier {tier.name!r} cannot be reached: it has no qualification",
                    "list at least one qualification, or mark it invitation: true or manual: true",
                )
            )
        if not tier.automatic and tier.qualify:
            found.append(
                problem(
                    [i, "qualify"],
                    f"tier {tier.name!r} is not automatic, so qualify is never used",
                    "remove it",
                )
            )
        for j, q in enumerate(tier.qualify):
            if q.score is not None and score.parts and q.score > score.maximum:
                found.append(
                    problem(
                        [i, "qualify", j, "score"],
                        f"tier {tier.name!r} cannot be reached: it needs score {q.score} but the "
                        f"score is at most {score.maximum}",
                        "lower the threshold or raise the score parts' max",
                    )
                )
            if q.score is not None and not score.parts:
                found.append(
                    problem(
                        [i, "qualify", j, "score"],
                        f"tier {tier.name!r} qualifies by score, but the program has no "
                        "score parts",
                        "define score.parts, or qualify by spend or a rule",
                    )
                )
    # Overlap: on one metric, a higher tier must ask strictly more than every lower tier, or
    # anyone qualifying for the lower tier by that metric would already be in the higher one.
    automatic = [(i, t) for i, t in enumerate(tiers) if i > 0 and t.automatic]
    for pos, (i, tier) in enumerate(automatic):
        for j, q in enumerate(tier.qualify):
            if q.metric == "rule":
                continue
            for _, lower in automatic[:pos]:
                for lq in lower.qualify:
                    if lq.metric == q.metric and (q.threshold or 0) <= (lq.threshold or 0):
                        found.append(
                            problem(
                                [i, "qualify", j],
                                f"tiers {lower.name!r} and {tier.name!r} overlap: "
                                f"{tier.name!r} asks {q.metric} >= {_shown(q)} but the lower "
                                f"{lower.name!r} asks >= {_shown(lq)}, so {lower.name!r} "
                                "could never be reached that way",
                                f"ask more in {tier.name!r} than in {lower.name!r}",
                            )
                        )
            for k, other in enumerate(tier.qualify[:j]):
                if other == q:
                    found.append(
                        problem(
                            [i, "qualify", j], "the same qualification twice", f"remove item {k}"
                        )
                    )
    return found


def _shown(q: Qualification) -> str:
    if q.spend is not None:
        return f"{q.spend / 100:g} CNY"
    return str(q.threshold)


def reference_problems(
    tiers: tuple[Tier, ...],
    plans: dict[str, Plan],
    black_card: BlackCard | None,
    benefits: dict[str, Any],
) -> list[Problem]:
    """Benefits named by tiers and plans exist; the black card names an invitation tier."""
    found: list[Problem] = []
    names = list(benefits)
    granting: list[tuple[list[str | int], tuple[str, ...]]] = [
        (["tiers", i, "benefits"], t.benefits) for i, t in enumerate(tiers)
    ]
    granting += [(["plans", name, "benefits"], p.benefits) for name, p in plans.items()]
    for where, granted in granting:
        for k, benefit in enumerate(granted):
            if benefit not in benefits:
                hint = suggest(benefit, names)
                found.append(
                    problem(
                        [*where, k],
                        f"benefit {benefit!r} does not exist",
                        f"{hint}define it under 'benefits' or remove it",
                    )
                )
    for name in plans:
        if not PLAN_NAME.fullmatch(name):
            found.append(
                problem(
                    ["plans", name],
                    f"plan name {name!r} is not a lowercase identifier",
                    "use lowercase letters, digits and '_' (at most 63 characters), e.g. 88vip",
                )
            )
    tier_names = {t.name: t for t in tiers}
    if black_card is not None:
        tier = tier_names.get(black_card.tier)
        if tier is None:
            hint = suggest(black_card.tier, list(tier_names))
            found.append(
                problem(
                    ["black_card", "tier"],
                    f"tier {black_card.tier!r} does not exist",
                    f"{hint}name a tier of 'tiers'",
                )
            )
        elif not tier.invitation:
            found.append(
                problem(
                    ["black_card", "tier"],
                    f"tier {black_card.tier!r} is not invitation-only",
                    f"add 'invitation: true' to tier {black_card.tier!r}",
                )
            )
    invitation_tiers = [t.name for t in tiers if t.invitation]
    if invitation_tiers and (black_card is None or black_card.tier not in invitation_tiers):
        found.append(
            problem(
                ["tiers"],
                f"tier {invitation_tiers[0]!r} is invitation-only but no black_card section "
                "invites to it",
                "add a black_card section naming it, or remove 'invitation: true'",
            )
        )
    return found
