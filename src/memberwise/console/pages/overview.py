"""Overview: members by tier and segment over builds, subscriptions and revenue, points
liability, coupon budgets, CLV and churn-risk distributions, black-card quota."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from memberwise.console import charts, engine_words, i18n
from memberwise.console import overview_builds as per_build
from memberwise.console.nav import ANALYSTS, NavEntry, visible
from memberwise.console.web import PREFIX, Staff, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.kit.errors import MemberwiseError
from memberwise.kit.time import utcnow
from memberwise.ledger import service as ledger
from memberwise.membership import service as membership
from memberwise.predict import service as predict
from memberwise.predict.schemas import ChurnFit
from memberwise.privacy.service import authorize

router = APIRouter()
NAV = NavEntry("/", "nav.overview", ANALYSTS, order=10)

i18n.add(
    {
        "overview.title": ("运营总览", "Overview"),
        "overview.tiers": ("各等级会员数", "Members by tier"),
        "overview.tiers_over_time": ("各等级会员数（按构建）", "Members by tier over builds"),
        "overview.segments": ("生命周期分群（按构建）", "Lifecycle segments over builds"),
        "overview.subscriptions": ("付费会员订阅", "Paid subscriptions"),
        "overview.revenue": ("会员费收入", "Membership fee revenue"),
        "overview.points": ("积分负债", "Points liability"),
        "overview.coupons": ("优惠券预算使用", "Coupon budgets used"),
        "overview.clv": ("12 个月 CLV 分布", "12-month CLV distribution"),
        "overview.churn": ("流失风险分布", "Churn-risk distribution"),
        "overview.black_card": ("黑卡名额使用", "Black-card quota used"),
        "overview.churn_too_young": (
            "流失模型尚未训练：它从构建前 {days} 天（流失预测期）的会员画像学习，而那时有画像的"
            "会员太少（事件数据还不够久，或会员太少）。",
            "The churn model was not fitted: it learns from member profiles {days} days (its "
            "horizon) before the build, and too few members had one then (the events do not "
            "reach back that far yet, or there are too few members).",
        ),
        "overview.churn_not_fitted": (
            "流失模型尚未训练：{message}",
            "The churn model was not fitted: {message}",
        ),
        "col.tier": ("等级", "Tier"),
        "col.build": ("构建", "Build"),
        "col.segment": ("分群", "Segment"),
        "col.plan": ("方案", "Plan"),
        "col.status": ("状态", "Status"),
        "col.paid": ("已收", "Paid"),
        "col.refunded": ("已退", "Refunded"),
        "col.net": ("净收入", "Net"),
        "col.kind": ("类别", "Kind"),
        "col.points": ("积分", "Points"),
        "col.template": ("券模板", "Template"),
        "col.issued": ("已发", "Issued"),
        "col.redeemed": ("已核销", "Redeemed"),
        "col.budget": ("预算", "Budget"),
        "col.discount": ("优惠金额", "Discount given"),
        "col.range": ("区间", "Range"),
        "col.quota": ("名额", "Quota"),
        "black_card.quota": ("名额", "Quota"),
        "black_card.taken": ("已占用", "Taken"),
        "black_card.eligible": ("符合条件", "Eligible"),
        "black_card.active_members": ("活跃会员", "Active members"),
        "black_card.per_active": ("每 {n:,} 名活跃会员 1 个", "1 / {n:,} active"),
        "points.available": ("可用", "Available"),
        "points.pending": ("待生效", "Pending"),
        "points.expiring_30d": ("30 天内过期", "Expiring in 30 days"),
        "points.expiring_90d": ("90 天内过期", "Expiring in 90 days"),
    }
)

_QUOTA_KEYS = ("quota", "taken", "eligible", "active_members")


def _tier_order(rt_program: Any, found: set[str]) -> list[str]:
    ladder = [t.name for t in rt_program.tiers] if rt_program is not None else []
    return ladder + sorted(found - set(ladder))


def _build_label(as_of: Any) -> str:
    return f"{as_of:%Y-%m-%d %H:%M}"


def overview_context(request: Request) -> dict[str, Any]:
    """Every figure and table of the overview (one read transaction): the live counts are read
    each time, the per-build ones come from :mod:`~memberwise.console.overview_builds`."""
    rt = runtime_of(request)
    t = i18n.translator(rt.program().locale)
    code = engine_words.coder(rt.program().locale)
    try:
        program = rt.program()
    except MemberwiseError:
        program = None
    now = utcnow()
    with transaction(rt.engine) as conn:
        built = per_build.build_figures(conn, rt.engine)
        tiers_now = membership.members_by_tier(conn)
        subs = membership.subscriptions_by_plan(conn)
        revenue = membership.revenue_by_plan(conn)
        points = ledger.points_liability(conn, now)
        coupons = ledger.coupon_budget_use(conn)
        invitations = membership.invitations_by_status(conn)
        churn_fit = predict.get_models(conn).churn
    recent, segments, tiers_then = built.recent, built.segments, built.tiers_then
    quota = built.quota
    order = _tier_order(program, set(tiers_now) | {k for v in tiers_then.values() for k in v})
    labels = [_build_label(a) for _, a in recent]
    seg_names = [s.name for s in program.segments] if program is not None else []
    seg_names += sorted({k for v in segments.values() for k in v} - set(seg_names))
    budgets = program.coupons if program is not None else {}
    card = program.black_card if program is not None else None
    ctx: dict[str, Any] = {
        "tiers": {
            "figure": charts.bar(order, [tiers_now.get(n, 0) for n in order]),
            "rows": [(n, f"{tiers_now.get(n, 0):,}") for n in order if n in tiers_now],
        },
        "tiers_over_time": _over_builds(
            labels, [tiers_then[b] for b, _ in recent], order, keep_zero=False
        ),
        "segments": _over_builds(
            labels, [segments[b] for b, _ in recent], seg_names, keep_zero=True
        ),
        "subscriptions": {
            "figure": charts.stacked(
                sorted({p for p, _, _ in subs}),
                {
                    status: [
                        sum(n for p, s, n in subs if p == plan and s == status)
                        for plan in sorted({p for p, _, _ in subs})
                    ]
                    for status in sorted({s for _, s, _ in subs})
                },
            ),
            "rows": [(p, s, f"{n:,}") for p, s, n in subs],
        },
        "revenue": {
            "figure": charts.bar(
                sorted(revenue), [(revenue[p][0] - revenue[p][1]) / 100 for p in sorted(revenue)]
            ),
            "rows": [
                (p, i18n.yuan(paid), i18n.yuan(back), i18n.yuan(paid - back))
                for p, (paid, back) in sorted(revenue.items())
            ],
        },
        "points": {
            "figure": charts.bar([t(f"points.{k}") for k in points], list(points.values())),
            "rows": [(t(f"points.{k}"), f"{v:,}") for k, v in points.items()],
        },
        "coupons": {
            "figure": charts.stacked(
                [c[0] for c in coupons],
                {
                    t("col.issued"): [c[1] for c in coupons],
                    t("col.redeemed"): [c[2] for c in coupons],
                },
            )
            | {
                "layout": {
                    "barmode": "group",
                    "legend": {"orientation": "h", "y": -0.35},
                    "xaxis": {"automargin": True, "tickangle": -20},
                }
            },
            "rows": [
                (
                    name,
                    f"{issued:,}",
                    f"{redeemed:,}",
                    i18n.yuan(money),
                    _budget(budgets.get(name)),
                )
                for name, issued, redeemed, money in coupons
            ],
        },
        "clv": {
            "figure": charts.binned(
                built.clv_chart.edges, built.clv_chart.counts, x_title="¥", label="¥{:,.2f}"
            ),
            "rows": _binned(built.clv_table, money=True),
        },
        "churn": {
            "figure": charts.binned(built.risk.edges, built.risk.counts, label="{:.1f}"),
            "rows": _binned(built.risk, money=False),
            "empty": _churn_missing(churn_fit, t),
        },
        "black_card": {
            "figure": charts.bar(
                [t(f"black_card.{k}") for k in _QUOTA_KEYS if k in quota]
                + [_invitation_status(s, t, code) for s in sorted(invitations)],
                [quota[k] for k in _QUOTA_KEYS if k in quota]
                + [invitations[s] for s in sorted(invitations)],
            ),
            "rows": [(t(f"black_card.{k}"), f"{quota[k]:,}") for k in _QUOTA_KEYS if k in quota]
            + [(_invitation_status(s, t, code), f"{n:,}") for s, n in sorted(invitations.items())],
            "tier": card.tier if card is not None else None,
            "quota": _quota_text(card, t),
        },
    }
    return ctx


def _over_builds(
    labels: list[str], by_build: list[dict[str, int]], names: list[str], *, keep_zero: bool
) -> dict[str, Any]:
    """Members per name over the builds (one count dict a build, in ``labels``' order): a
    stacked chart and its table, a row a build and name it counted (with ``keep_zero``, a
    name published with no members too)."""
    return {
        "figure": charts.stacked(labels, {n: [c.get(n, 0) for c in by_build] for n in names}),
        "rows": [
            (lab, n, f"{c.get(n, 0):,}")
            for c, lab in zip(by_build, labels, strict=True)
            for n in names
            if (n in c if keep_zero else c.get(n))
        ],
    }


def _churn_missing(fit: ChurnFit | None, t: Any) -> str | None:
    """Why the churn chart is empty when the published build's churn model was not fitted
    (e.g. a demo of fewer days than the churn horizon), instead of a bare "no data"."""
    if fit is None or fit.status == "fitted":
        return None
    if fit.details.get("reason") == "too_few_members":
        return str(t("overview.churn_too_young")).format(days=fit.horizon_days)
    return str(t("overview.churn_not_fitted")).format(message=fit.message or fit.status)


def _budget(template: Any) -> str:
    if template is None:
        return "-"
    parts = []
    if template.budget_count is not None:
        parts.append(f"{template.budget_count:,}")
    if template.budget_money is not None:
        parts.append(i18n.yuan(template.budget_money))
    return " / ".join(parts) or "-"


def _quota_text(card: Any, t: Any) -> str:
    if card is None:
        return "-"
    quota = card.quota
    if quota.count is not None:
        return f"{quota.count:,}"
    return str(t("black_card.per_active")).format(n=quota.per_active_members)


def _invitation_status(status: str, t: Any, code: Any) -> str:
    """An invitation status in the page's language (an unknown one as it is stored)."""
    return f"{t('col.status')}: {code('invitation', status)}"


def _binned(hist: per_build.Histogram, *, money: bool) -> list[tuple[str, str]]:
    out = []
    for i, n in enumerate(hist.counts):
        lo, hi = hist.edges[i], hist.edges[i + 1]
        label = (
            (f"¥{lo:,.0f} – ¥{hi:,.0f}" if money and hi < 10**9 else f"≥ ¥{lo:,.0f}")
            if money
            else f"{lo:.1f} – {hi:.1f}"
        )
        if n:
            out.append((label, f"{n:,}"))
    return out


@router.get("/", include_in_schema=False)
def overview(request: Request, user: Staff) -> Response:
    """The overview; a role that may not read it lands on the first page it may open."""
    if user.role not in ANALYSTS:
        pages = visible(user.role)
        if pages:
            return RedirectResponse(PREFIX + pages[0].path, status_code=303)
    authorize(user.principal, ANALYSTS)
    return render(request, "overview.html", user, **overview_context(request))
