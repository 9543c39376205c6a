"""Chinese text plumbing for feedback: jieba segmentation with a user dictionary, clauses.

jieba's default dictionary splits brand names and shop jargon badly (``七天无理由`` becomes
three words), so every :class:`Segmenter` adds :data:`SHOP_TERMS` and the platform's own
brands and categories (passed in by the caller, usually from the item catalog) as user words.
Each segmenter owns its ``jieba.Tokenizer``; the module-level jieba state is never touched.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

import jieba

#: E-commerce words jieba's dictionary lacks or splits; added to every segmenter.
SHOP_TERMS: tuple[str, ...] = (
    "七天无理由",
    "七天无理由退货",
    "性价比",
    "不理人",
    "虚假宣传",
    "迟迟不发货",
    "不发货",
    "色差",
    "假货",
    "正品",
    "客服",
    "售后",
    "退款",
    "退货",
    "换货",
    "物流",
    "快递",
    "发货",
    "好评",
    "差评",
    "回购",
    "做工",
    "尺码",
    "包装",
    "掉色",
    "起球",
    "开线",
    "漏发",
    "发错货",
    "破损",
    "缺货",
    "降价",
    "保价",
    "运费险",
    "描述不符",
    "和描述不符",
)
#: Words that carry no topic (function words and the generic shopping ones).
_STOP_TEXT = (
    "的 了 是 我 你 他 她 它 们 也 就 都 而 及 与 着 或 一个 没有 不是 这个 那个 这 那 很 太 "
    "非常 还 又 吧 吗 呢 啊 哦 呀 会 能 要 在 有 和 对 把 被 让 给 从 到 说 用 买 东西 宝贝 "
    "商品 商家 卖家 店家 一下 一直 已经 还是 但是 可是 因为 所以 如果 什么 怎么 这么 那么 "
    "真的 有点 一般 就是 还有 一次 两天 别"
)
STOPWORDS: frozenset[str] = frozenset(_STOP_TEXT.split(" "))
_CLAUSE = re.compile(r"[，,。.!！?？;；~～\s、…]+")
_WORDLIKE = re.compile(r"[\u4e00-\u9fffA-Za-z0-9]")
_LOCK = threading.Lock()

logging.getLogger("jieba").setLevel(logging.WARNING)


class Segmenter:
    """jieba word segmentation with the shop terms and the platform's own words.

    Parameters
    ----------
    words:
        Extra user-dictionary words, e.g. the platform's brand and category names.
    """

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._tokenizer = jieba.Tokenizer()
        self.words: tuple[str, ...] = tuple(
            dict.fromkeys(w.strip() for w in (*SHOP_TERMS, *words) if w and w.strip())
        )
        with _LOCK:  # initialising the dictionary is not thread-safe in jieba
            self._tokenizer.initialize()
            for word in self.words:
                # A high frequency so the user word wins over the dictionary's split.
                self._tokenizer.add_word(word, freq=20_000)

    def words_of(self, text: str) -> list[str]:
        """The words of ``text`` (punctuation and spaces dropped)."""
        return [w for w in self._tokenizer.lcut(text) if _WORDLIKE.search(w)]

    def keywords(self, text: str) -> list[str]:
        """The content words of ``text``: no stopwords, no single characters but negations."""
        return [w for w in self.words_of(text) if w not in STOPWORDS and (len(w) > 1)]


def clauses(text: str) -> list[str]:
    """``text`` cut at punctuation into its clauses (empty pieces dropped)."""
    return [c for c in _CLAUSE.split(text) if c]


_DEFAULT: Segmenter | None = None


def default_segmenter() -> Segmenter:
    """A process-wide segmenter with only :data:`SHOP_TERMS` (what the sentiment model uses:
    its features must not change with the platform's catalog)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Segmenter()
    return _DEFAULT
