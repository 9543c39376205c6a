"""The engines' codes in the console's words: every code the engines store has its Chinese label
and every recommendation source its staff sentence; an unknown code shows as it is."""

from __future__ import annotations

from memberwise.console.engine_words import CODES, coder, reason, shortfall
from memberwise.console.i18n import yuan
from memberwise.membership.schemas import Shortfall, SubscriptionStatus
from memberwise.privacy.schemas import RequestKind, RequestStatus
from memberwise.recommend.ranker import SOURCES


def test_every_stored_status_has_a_chinese_label() -> None:
    zh = coder("zh-CN")
    groups = {
        "dsr_status": [s.value for s in RequestStatus],
        "dsr_kind": [k.value for k in RequestKind],
        "subscription": [s.value for s in SubscriptionStatus],
        # campaigns.tables: a campaign is draft | running | finished; a member of it is
        # scheduled | sent | held_out | skipped; an invitation pending | accepted | declined |
        # expired.
        "campaign": ["draft", "running", "finished"],
        "target": ["scheduled", "sent", "held_out", "skipped"],
        "invitation": ["pending", "accepted", "declined", "expired"],
    }
    for group, values in groups.items():
        assert all(f"{group}.{v}" in CODES for v in values), group
    assert [zh("target", v) for v in groups["target"]] == [
        "待发送",
        "已发送",
        "对照组（不发送）",
        "已跳过",
    ]
    assert zh("dsr_status", RequestStatus.open) == "待处理"
    assert coder("en")("target", "held_out") == "held out"
    assert zh("target", "bounced") == "bounced"  # a new code shows, untranslated


def test_every_source_has_a_staff_sentence_and_english_keeps_the_engines() -> None:
    named = [*SOURCES, "early_access:gold", "session", "fallback"]
    said = [reason(s, "the engine's sentence", "zh-CN") for s in named]
    assert "the engine's sentence" not in said
    assert reason("als", "members with tastes like yours like this", "en") == (
        "members with tastes like yours like this"
    )
    assert reason("unheard_of", "its own words", "zh-CN") == "its own words"


def test_what_is_missing_for_the_next_tier() -> None:
    spend = Shortfall(metric="net_spend_365d", unit="fen", need=200_000, have=29_696,
                      missing=170_304, text="1,703.04 CNY more net spend")  # fmt: skip
    score = Shortfall(metric="score", unit="points", need=1000, have=590, missing=410,
                      text="410 more 淘气值")  # fmt: skip
    done = Shortfall(metric="score", unit="points", need=700, have=800, missing=0,
                     text="score reached")  # fmt: skip
    rule = Shortfall(metric="rule", rule="orders_365d >= 3", text="meet 'orders_365d >= 3'")
    assert [shortfall(s, "淘气值", "zh-CN", yuan) for s in (spend, score, done, rule)] == [
        "再消费 ¥1,703.04（净额）",
        "再获得 410 淘气值",
        "已达成",
        "满足条件 orders_365d >= 3",
    ]
    assert shortfall(score, "淘气值", "en", yuan) == "410 more 淘气值"
