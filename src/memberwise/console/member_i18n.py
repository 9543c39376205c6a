"""The member center's words in Chinese and English, and how it shows money and times.

The program's ``locale`` chooses the language (a link may ask for the other with ``lang``).
Money is kept in fen everywhere and shown in yuan here only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from memberwise.console.engine_words import coder

Locale = Literal["zh-CN", "en"]
LOCALES: tuple[Locale, ...] = ("zh-CN", "en")

_LABELS: dict[str, tuple[str, str]] = {
    "title": ("会员中心", "Member center"),
    "nav_home": ("我的会员", "My membership"),
    "nav_privacy": ("隐私与授权", "Privacy and consent"),
    "tier": ("会员等级", "Tier"),
    "no_tier": (
        "还没有会员等级，下单后即可获得。",
        "No tier yet: it comes with your first orders.",
    ),
    "since": ("自", "since"),
    "until": ("有效至", "valid until"),
    "score": ("成长值", "Score"),
    "next_tier": ("距离下一等级", "To the next tier"),
    "top_tier": ("您已是最高等级。", "You are at the top tier."),
    "any_of": ("满足其一即可", "any one of these"),
    "notice": ("等级提醒", "Tier notice"),
    "plans": ("付费会员", "Paid memberships"),
    "renews": ("当期至", "current period until"),
    "benefits": ("我的权益", "My benefits"),
    "no_benefits": ("暂无权益。", "No benefits yet."),
    "remaining": ("剩余", "left"),
    "of": ("共", "of"),
    "resets": ("重置于", "resets"),
    "points": ("积分", "Points"),
    "available": ("可用", "available"),
    "pending": ("待入账", "pending"),
    "debt": ("待抵扣", "owed"),
    "expiring": ("即将过期", "Expiring soon"),
    "no_expiring": ("90 天内没有积分过期。", "No points expire in the next 90 days."),
    "expire_on": ("到期", "expire on"),
    "coupons": ("我的优惠券", "My coupons"),
    "no_coupons": ("暂无可用优惠券。", "No coupons to use."),
    "valid_until": ("有效期至", "valid until"),
    "min_spend": ("满", "on orders from"),
    "recs": ("为您推荐", "Picked for you"),
    "no_recs": ("暂无推荐。", "Nothing to recommend yet."),
    "recs_general": (
        "您已关闭个性化推荐，以下为通用推荐。",
        "You turned personalised recommendations off: these are the same for everyone.",
    ),
    "consents": ("授权管理", "Your consents"),
    "consent_intro": (
        "您可以随时更改以下授权，更改立即生效。",
        "You may change any of these at any time; a change takes effect at once.",
    ),
    "allowed": ("已允许", "allowed"),
    "not_allowed": ("未允许", "not allowed"),
    "default_note": ("默认", "default"),
    "allow": ("允许", "Allow"),
    "revoke": ("撤回", "Withdraw"),
    "saved": ("已保存。", "Saved."),
    "recorded": ("记录于", "recorded"),
    "error_title": ("无法打开会员中心", "The member center cannot open"),
    "error_again": (
        "请从 App 重新进入会员中心。",
        "Please open the member center from the app again.",
    ),
    "member_unknown": ("没有找到该会员。", "No such member."),
}

_BENEFIT_KINDS: dict[str, tuple[str, str]] = {
    "free_shipping": ("包邮", "Free shipping"),
    "member_price": ("会员价", "Member prices"),
    "monthly_coupons": ("每月优惠券", "Monthly coupons"),
    "points_multiplier": ("积分加倍", "Extra points"),
    "express_refund": ("极速退款额度", "Express-refund credit"),
    "return_cards": ("退货卡", "Return cards"),
    "priority_service": ("专属客服", "Priority service"),
    "account_manager": ("专属客户经理", "Account manager"),
    "early_access": ("新品抢先购", "Early access"),
    "partner_perk": ("合作伙伴权益", "Partner perk"),
}

#: A sentence per source the engine names (``recommend.ranker.SOURCES``, then
#: ``early_access`` of the offline lists, ``session`` of serving's lift and ``fallback`` of the
#: fallback fill): the member center's reason in Chinese, where the engine's is English.
_SOURCES: dict[str, tuple[str, str]] = {
    "repeat": ("您常买的商品", "You buy this regularly"),
    "als": ("与您喜好相似的会员也喜欢", "Members with tastes like yours like it"),
    "cooc": ("常与您看过或买过的商品一起被选购", "Goes with what you looked at or bought"),
    "popular": ("热卖商品", "Popular now"),
    "new": ("新品上架", "New arrival"),
    "neighbours": ("购物习惯与您相似的会员常买", "Members who shop like you buy it"),
    "early_access": ("会员抢先购", "Early access for your tier"),
    "session": ("与您刚刚浏览的商品相关", "Related to what you just looked at"),
    "fallback": ("热卖商品", "Popular now"),
}


_PURPOSES: dict[str, tuple[str, str]] = {
    "personalization": ("个性化推荐", "Personalised recommendations"),
    "profiling": ("用户画像（等级、分群与预测）", "Profiling (tiers, segments, predictions)"),
    "marketing_sms": ("短信营销", "Marketing by SMS"),
    "marketing_email": ("邮件营销", "Marketing by email"),
    "marketing_push": ("推送营销", "Marketing push notifications"),
    "partner_sharing": ("与合作伙伴共享", "Sharing with partners"),
    "sensitive": ("敏感个人信息", "Sensitive personal information"),
}

_PERIODS: dict[str, tuple[str, str]] = {
    "day": ("今日", "today"),
    "month": ("本月", "this month"),
    "year": ("本年", "this year"),
}


def _pick(pair: tuple[str, str], locale: Locale) -> str:
    return pair[0] if locale == "zh-CN" else pair[1]


class Words:
    """The labels of one locale, for templates: ``t.label("tier")``, ``t.yuan(12345)``."""

    def __init__(self, locale: Locale, timezone: str) -> None:
        self.locale: Locale = locale
        self.lang = "zh-CN" if locale == "zh-CN" else "en"
        self._zone = ZoneInfo(timezone)
        self._code = coder(locale)

    def code(self, group: str, value: Any) -> str:
        """A stored status in words (``engine_words.CODES``): ``active`` -> ``生效中``."""
        return self._code(group, value)

    def label(self, key: str) -> str:
        return _pick(_LABELS[key], self.locale)

    def benefit_kind(self, kind: str) -> str:
        pair = _BENEFIT_KINDS.get(kind)
        return _pick(pair, self.locale) if pair else kind

    def reason(self, source: str, text: str) -> str:
        """Why an item is recommended: the engine's sentence in English, a sentence by its
        source in Chinese (the engine's reasons are English)."""
        if self.locale == "en":
            return text
        pair = _SOURCES.get(source.split(":", 1)[0])
        return pair[0] if pair else text

    def purpose(self, name: str, description: str) -> str:
        pair = _PURPOSES.get(name)
        return _pick(pair, self.locale) if pair else (description or name)

    def period(self, kind: str | None) -> str:
        pair = _PERIODS.get(kind or "")
        return _pick(pair, self.locale) if pair else ""

    def yuan(self, fen: int) -> str:
        """``123456`` fen -> ``¥1,234.56``; whole yuan without decimals."""
        sign = "-" if fen < 0 else ""
        whole, cents = divmod(abs(fen), 100)
        return f"{sign}¥{whole:,}" + (f".{cents:02d}" if cents else "")

    def date(self, at: datetime | None) -> str:
        if at is None:
            return ""
        local = at.astimezone(self._zone)
        if self.locale == "zh-CN":
            return f"{local.year}年{local.month}月{local.day}日"
        return local.strftime("%d %b %Y")

    def number(self, value: int | float) -> str:
        return f"{value:,}"


def choose_locale(program_locale: str, asked: str | None) -> Locale:
    """The link's ``lang`` when it is one we speak, else the program's."""
    for locale in LOCALES:
        if asked == locale or (asked and asked.lower().startswith(locale[:2].lower())):
            return locale
    return "zh-CN" if program_locale.lower().startswith("zh") else "en"
