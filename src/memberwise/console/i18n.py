"""The console's labels in Chinese and English, chosen by the program's ``locale``.

A small catalogue rather than gettext: a few hundred labels, two languages, no build step.
A key missing from the catalogue shows as itself, so a forgotten label is visible, not fatal.
"""

from __future__ import annotations

from collections.abc import Callable

#: key -> (zh-CN, en). Pages add their own keys with :func:`add`.
MESSAGES: dict[str, tuple[str, str]] = {
    "app.title": ("memberwise 运营台", "memberwise console"),
    "nav.overview": ("总览", "Overview"),
    "nav.members": ("会员 360", "Member 360"),
    "nav.program": ("会员方案", "Program"),
    "nav.skip": ("跳到正文", "Skip to content"),
    "nav.main": ("主导航", "Main navigation"),
    "auth.sign_in": ("登录", "Sign in"),
    "auth.sign_out": ("退出", "Sign out"),
    "auth.staff_id": ("员工账号", "Staff id"),
    "auth.password": ("密码", "Password"),
    "auth.link_title": ("一次性登录链接", "One-time sign-in link"),
    "auth.link_continue": ("用此链接登录", "Sign in with this link"),
    "auth.link_help": (
        "此链接只能使用一次，并会很快过期。",
        "This link works once and expires soon.",
    ),
    "auth.signed_in_as": ("当前用户", "Signed in as"),
    "auth.failed": ("登录失败", "Sign-in failed"),
    "error.title": ("出错了", "Something went wrong"),
    "error.back": ("返回总览", "Back to the overview"),
    "error.not_found": ("页面不存在", "There is no such page"),
    "common.table": ("表格", "Table"),
    "common.chart": ("图表", "Chart"),
    "common.count": ("数量", "Count"),
    "common.members": ("会员数", "Members"),
    "common.none": ("暂无数据", "Nothing yet"),
    "common.submit": ("提交", "Submit"),
    "common.search": ("搜索", "Search"),
    "common.reason": ("原因", "Reason"),
    "common.when": ("时间", "When"),
    "common.amount": ("金额", "Amount"),
    "common.role": ("角色", "Role"),
}


def add(messages: dict[str, tuple[str, str]]) -> None:
    """Register a page's labels (keys must be new, so two pages cannot fight over one)."""
    clash = sorted(set(messages) & set(MESSAGES))
    if clash:
        raise ValueError(f"console labels defined twice: {', '.join(clash)}")
    MESSAGES.update(messages)


def translator(locale: str) -> Callable[[str], str]:
    """``t(key)`` in ``locale``: Chinese for ``zh*``, English for everything else."""
    column = 0 if locale.lower().startswith("zh") else 1

    def t(key: str) -> str:
        entry = MESSAGES.get(key)
        return entry[column] if entry is not None else key

    return t


def yuan(fen: int | float | None) -> str:
    """Integer fen as yuan for display: ``123456`` -> ``¥1,234.56`` (None -> ``-``)."""
    if fen is None:
        return "-"
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(round(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"
