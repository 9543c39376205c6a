"""The console's navigation: one entry a page, shown to the roles that may open it."""

from __future__ import annotations

from dataclasses import dataclass

from memberwise.privacy.schemas import Role

ANALYSTS = frozenset({Role.admin, Role.operator, Role.analyst})
READERS = frozenset(Role)  # as the API's member reads: every role


@dataclass(frozen=True)
class NavEntry:
    """A page in the nav bar: its path under /console, label key and who sees it."""

    path: str
    label: str
    roles: frozenset[Role]


#: In display order. A page adds its entry here and its router in :mod:`memberwise.console.web`.
NAV: list[NavEntry] = [
    NavEntry("/", "nav.overview", ANALYSTS),
    # The operations pages, with the roles of the API routes they use.
    NavEntry("/desk", "nav.desk", frozenset({Role.admin, Role.service})),
    NavEntry("/merchants", "nav.merchants", READERS),
    NavEntry("/campaigns", "nav.campaigns", ANALYSTS),
    NavEntry("/webhooks", "nav.webhooks", frozenset({Role.admin, Role.platform})),
    NavEntry("/privacy", "nav.privacy", frozenset({Role.admin, Role.service})),
    NavEntry("/bulk", "nav.bulk", ANALYSTS),
]


def visible(role: Role) -> list[NavEntry]:
    """The entries ``role`` may open (admin opens every page)."""
    return [e for e in NAV if role is Role.admin or role in e.roles]
