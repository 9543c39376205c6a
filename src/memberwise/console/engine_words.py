"""The engines' codes and English sentences in the console's language, for staff pages.

The API stays language-neutral: it answers stable codes (a status, a recommendation's
``source``, a shortfall's metric and numbers) with an English sentence beside them. The console
shows a page in the program's ``locale``, so it words those codes here, in Chinese or English,
from the codes and numbers -- never by translating the engine's sentence. A code this module does
not know shows as the engine gave it (visible, not fatal). A program's own descriptions come in
the language the page speaks when the program file gives one (``description_zh``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from memberwise.membership.schemas import Shortfall


def is_zh(locale: str) -> bool:
    """Chinese for ``zh*`` locales, English for every other (as ``i18n.translator`` does)."""
    return locale.lower().startswith("zh")


class _Described(Protocol):
    @property
    def description(self) -> str: ...
    @property
    def description_zh(self) -> str: ...


def described(section: _Described | None, locale: str) -> str:
    """A program section's description in the page's language: ``description_zh`` on a Chinese
    page when the program gives one, else ``description`` (the program file's own words)."""
    if section is None:
        return ""
    if is_zh(locale) and section.description_zh:
        return section.description_zh
    return section.description


#: code -> (zh-CN, en): the statuses and kinds the engines store, as staff read them.
CODES: dict[str, tuple[str, str]] = {
    # campaigns (campaigns.tables: draft | running | finished)
    "campaign.draft": ("草稿", "draft"),
    "campaign.running": ("进行中", "running"),
    "campaign.finished": ("已结束", "finished"),
    # a campaign's members (scheduled | sent | held_out | skipped)
    "target.scheduled": ("待发送", "scheduled"),
    "target.sent": ("已发送", "sent"),
    "target.held_out": ("对照组（不发送）", "held out"),
    "target.skipped": ("已跳过", "skipped"),
    # a campaign's experiment arms (campaigns.schemas HOLDOUT, TREATMENT)
    "arm.treatment": ("实验组", "treatment"),
    "arm.holdout": ("对照组", "holdout"),
    # data-subject requests (privacy.schemas.RequestStatus, RequestKind)
    "dsr_status.open": ("待处理", "open"),
    "dsr_status.completed": ("已完成", "completed"),
    "dsr_status.rejected": ("已拒绝", "rejected"),
    "dsr_kind.access": ("查阅", "access"),
    "dsr_kind.copy": ("复制（导出）", "copy"),
    "dsr_kind.correction": ("更正", "correction"),
    "dsr_kind.erasure": ("删除", "erasure"),
    # paid memberships (membership.schemas.SubscriptionStatus)
    "subscription.pending": ("待支付", "pending"),
    "subscription.active": ("生效中", "active"),
    "subscription.past_due": ("待续费", "past due"),
    "subscription.cancelled": ("已取消续费", "cancelled"),
    "subscription.expired": ("已过期", "expired"),
    # the ledgers (ledger.schemas LotStatus, EntryKind, CouponStatus, OrderStatus)
    "lot.pending": ("待生效", "pending"),
    "lot.available": ("可用", "available"),
    "lot.expired": ("已过期", "expired"),
    "lot.cancelled": ("已取消", "cancelled"),
    "entry.earn_order": ("下单获得", "earned by an order"),
    "entry.earn_review": ("评价获得", "earned by a review"),
    "entry.earn_check_in": ("签到获得", "earned by a check-in"),
    "entry.adjust": ("人工调整", "adjustment"),
    "entry.spend_order": ("下单抵扣", "spent on an order"),
    "entry.spend_redeem": ("兑换", "redeemed"),
    "entry.mature": ("待生效转可用", "matured"),
    "entry.expire": ("过期", "expired"),
    "entry.reverse_refund": ("退款扣回", "taken back by a refund"),
    "entry.restore_refund": ("退款返还", "given back by a refund"),
    "entry.debt": ("欠扣", "owed"),
    "entry.repay_debt": ("补扣", "debt repaid"),
    "entry.merge_in": ("账户合并转入", "merged in"),
    "entry.merge_out": ("账户合并转出", "merged out"),
    "coupon.issued": ("未使用", "issued"),
    "coupon.redeemed": ("已使用", "redeemed"),
    "coupon.expired": ("已过期", "expired"),
    "coupon.void": ("已作废", "void"),
    "order.placed": ("已下单", "placed"),
    "order.completed": ("已完成", "completed"),
    "order.partially_refunded": ("部分退款", "partially refunded"),
    "order.refunded": ("已退款", "refunded"),
    # how a member holds their tier (membership.tiers.Source), a member's record
    "tier_source.auto": ("自动评定", "qualified"),
    "tier_source.manual": ("人工授予", "granted by staff"),
    "tier_source.invitation": ("受邀", "by invitation"),
    "member.active": ("正常", "active"),
    "member.closed": ("已注销", "closed"),
    # black-card invitations (membership: pending | accepted | declined | expired)
    "invitation.pending": ("待接受", "pending"),
    "invitation.accepted": ("已接受", "accepted"),
    "invitation.declined": ("已拒绝", "declined"),
    "invitation.expired": ("已过期", "expired"),
}


def coder(locale: str) -> Callable[[str, Any], str]:
    """``code(group, value)`` in ``locale``: the label of ``group.value``, or the value itself
    when the group has no such code (a new status shows, untranslated, rather than failing)."""
    column = 0 if is_zh(locale) else 1

    def code(group: str, value: Any) -> str:
        said = str(getattr(value, "value", value))
        entry = CODES.get(f"{group}.{said}")
        return entry[column] if entry is not None else said

    return code


#: Why an item is recommended, by the source the engine names (``recommend.ranker.SOURCES``,
#: then ``early_access``, ``session`` and ``fallback``), as staff read it about the member.
REASONS: dict[str, tuple[str, str]] = {
    "repeat": ("该会员常买的商品", "The member buys it regularly"),
    "als": ("与该会员喜好相似的会员也喜欢", "Members with similar tastes like it"),
    "cooc": ("常与该会员看过或买过的商品一起被选购", "Goes with what the member viewed or bought"),
    "popular": ("热卖商品", "Popular now"),
    "new": ("新品上架", "New arrival"),
    "neighbours": ("购物习惯相似的会员常买", "Members who shop alike buy it"),
    "early_access": ("会员等级抢先购", "Early access for the member's tier"),
    "session": ("与该会员刚刚浏览的商品相关", "Related to what the member just viewed"),
    "fallback": ("热卖商品（通用推荐）", "Popular now (the same for everyone)"),
}


def reason(source: str, text: str, locale: str) -> str:
    """A recommendation's reason: the engine's own sentence in English, a sentence by its source
    (``als``, ``early_access:gold`` ...) in Chinese; an unknown source keeps the engine's."""
    if not is_zh(locale):
        return text
    pair = REASONS.get(source.split(":", 1)[0])
    return pair[0] if pair else text


def shortfall(s: Shortfall, score_name: str, locale: str, yuan: Callable[[int], str]) -> str:
    """What a member still needs for a tier, in words: ``再获得 410 淘气值``,
    ``再消费 ¥1,703.04（净额）``, or the engine's sentence in English."""
    if not is_zh(locale):
        return s.text
    if s.rule is not None:
        return f"满足条件 {s.rule}"
    if s.missing is None:
        return s.text
    if not s.missing:
        return "已达成"
    if s.unit == "fen":
        return f"再消费 {yuan(s.missing)}（净额）"
    if s.metric == "score":
        return f"再获得 {s.missing:,} {score_name}"
    return f"再获得 {s.missing:,} 积分"


_WEEKDAYS_ZH = "一二三四五六日"
_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def prediction_reasons(p: Any, locale: str, yuan: Callable[[int | None], str]) -> dict[str, str]:
    """Each prediction's explanation from the model's inputs (BG/NBD and Gamma-Gamma value a
    buyer by their repeat purchases, the days they bought on and the gap between them)."""
    interval = p.purchase_interval_days
    if is_zh(locale):
        history = f"复购 {p.repeat_purchases} 次，共 {p.purchase_days} 天有购买" + (
            f"，平均每 {interval:.0f} 天一次" if interval else ""
        )
        return {
            "clv_12m": f"BG/NBD + Gamma-Gamma：{history}",
            "p_alive": f"BG/NBD：{history}",
            "churn_risk": "倾向模型：依据最近一次购买、购买频次与活跃度",
            "expected_purchases_90d": f"预计消费 {yuan(p.expected_spend_fen)}",
            "next_purchase_date": (
                f"最佳触达时间：星期{_WEEKDAYS_ZH[p.best_weekday - 1]} {p.best_hour}:00"
            ),
        }
    history = f"{p.repeat_purchases} repeat purchases on {p.purchase_days} days" + (
        f", every {interval:.0f} days" if interval else ""
    )
    return {
        "clv_12m": f"BG/NBD + Gamma-Gamma: {history}",
        "p_alive": f"BG/NBD: {history}",
        "churn_risk": "propensity model on recency, frequency, activity",
        "expected_purchases_90d": f"expected spend {yuan(p.expected_spend_fen)}",
        "next_purchase_date": (
            f"best time to reach them: {_WEEKDAYS_EN[p.best_weekday - 1]} {p.best_hour}:00"
        ),
    }


#: Ranking contributions named in an invitation's explanation (the largest first).
TOP_CONTRIBUTIONS = 3


def invitation_reason(explanation: dict[str, Any], criteria: dict[str, Any], locale: str) -> str:
    """Why a member was invited to the black card: the hard criteria they met, then the ranking
    fields that weighed most, each with its percentile among the eligible members. ``criteria``
    maps a ranking field to the program's criterion (for its description in the page's
    language); the explanation's own description is used for a field the program no longer
    ranks by."""
    zh = is_zh(locale)
    said: list[str] = []
    rule = explanation.get("criteria")
    if rule:
        said.append(f"硬性条件：{rule}" if zh else f"criteria: {rule}")
    contributions = sorted(
        explanation.get("contributions") or [],
        key=lambda c: float(c.get("contribution") or 0.0),
        reverse=True,
    )
    parts = []
    for c in contributions[:TOP_CONTRIBUTIONS]:
        field = str(c.get("field", ""))
        name = described(criteria.get(field), locale) or c.get("description") or field
        pct = 100 * float(c.get("percentile") or 0.0)
        parts.append(
            f"{name}（候选会员第 {pct:.0f} 百分位）"
            if zh
            else f"{name} (percentile {pct:.0f} of the eligible)"
        )
    if parts:
        said.append(f"排名主要依据：{'，'.join(parts)}" if zh else f"ranked by {', '.join(parts)}")
    return "；".join(said) if zh else "; ".join(said)
