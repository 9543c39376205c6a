"""Labelled review lines the sentiment tests share: four whose sentiment no model should miss,
and a small repeated training set around them (1 positive, 0 negative)."""

from __future__ import annotations

CLEAR = {
    "质量很好，物流很快，非常满意，会回购": 1,
    "宝贝很好用，性价比高，推荐购买": 1,
    "质量太差了，用了两天就坏了，退货": 0,
    "客服态度很差，不理人，再也不来了": 0,
}
TEXTS = [*CLEAR, "还可以", "一般般", "物流太慢了", "非常好", "不好用", "很满意"] * 3
LABELS = [*CLEAR.values(), 1, 0, 0, 1, 0, 1] * 3
