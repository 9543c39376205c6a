"""Aspects of a review or complaint (logistics, matches description, service attitude, quality,
refund/after-sales, price), each with the phrase that triggered it.

A lexicon, not a model: the triggers below are the words Chinese shoppers use for each aspect
on Taobao/JD review pages, and a lexicon says exactly *why* a text got an aspect (the trigger
and its clause), which is what an operator reading a complaint cluster needs. Matching is by
substring over each clause (so jieba's segmentation cannot hide a trigger), the longest
trigger first so ``和描述不符`` wins over ``描述``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memberwise.feedback.text import clauses

#: Aspect -> trigger words. Keys are the stable codes the API and tables use.
ASPECTS: dict[str, tuple[str, ...]] = {
    "logistics": (
        "物流", "快递", "包装", "发货", "送货", "到货", "配送", "派送", "运输", "签收", "包邮",
        "收到货", "几天才到", "送到", "漏发", "发错", "丢件", "运费",
    ),
    "description": (
        "描述不符", "描述", "不符", "图片", "实物", "色差", "假货", "正品", "虚假宣传", "宣传",
        "与图",
        "跟图", "货不对板", "尺码", "尺寸", "不一样", "山寨", "仿冒", "盗版",
    ),
    "service": (
        "客服", "态度", "服务", "不理人", "回复", "掌柜", "沟通",
        "耐心", "热情", "爱答不理",
    ),
    "quality": (
        "质量", "做工", "坏了", "材质", "好用", "破损", "质感", "结实", "耐用", "掉色",
        "起球", "开线", "异味", "瑕疵", "粗糙", "用了两天", "不能用", "效果",
    ),
    "after_sales": (
        "退款", "退货", "换货", "售后", "退换", "七天无理由", "保修", "维修", "赔偿",
        "补发", "运费险", "投诉",
    ),
    "price": (
        "价格", "价钱", "贵", "便宜", "性价比", "划算", "实惠", "降价", "保价", "优惠",
        "不值", "值得", "物美价廉", "元",
    ),
}  # fmt: skip
_TRIGGERS: tuple[tuple[str, str], ...] = tuple(
    sorted(
        ((word, aspect) for aspect, words in ASPECTS.items() for word in words),
        key=lambda pair: -len(pair[0]),
    )
)


@dataclass(frozen=True)
class AspectHit:
    """One aspect found in a text: the trigger word and the clause it sits in."""

    aspect: str
    trigger: str
    phrase: str


def find_aspects(text: str) -> list[AspectHit]:
    """Each aspect of ``text`` once (its first trigger, longest first within a clause), in
    the order of :data:`ASPECTS`."""
    found: dict[str, AspectHit] = {}
    for clause in clauses(text):
        for word, aspect in _TRIGGERS:
            if aspect not in found and word in clause:
                found[aspect] = AspectHit(aspect, word, clause)
    return [found[a] for a in ASPECTS if a in found]


def aspect_sets(texts: Sequence[str]) -> list[frozenset[str]]:
    """The aspect codes of each text (for evaluation and counting)."""
    return [frozenset(h.aspect for h in find_aspects(t)) for t in texts]
