"""The console's navigation: one entry a page, shown to the roles that may open it.

Each page module in :mod:`memberwise.console.pages` declares its own ``NAV`` entry (or none, for
pages reached by link only); :func:`entries` collects them in ``order``, so adding a page edits
no shared file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from memberwise.privacy.schemas import Role

#: The API's analytics readers (segments, tags, models).
ANALYSTS = frozenset({Role.admin, Role.operator, Role.analyst})
#: The API's member readers: every role (the platform included).
READERS = frozenset(Role)


@dataclass(frozen=True)
class NavEntry:
    """A page in the nav bar: its path under /console, label key, who sees it, and where."""

    path: str
    label: str
    roles: frozenset[Role]
    #: Position in the bar (overview 10, members 20, program 30; leave gaps for new pages).
    order: int = 100


@cache
def page_modules() -> tuple[ModuleType, ...]:
    """Every module of :mod:`memberwise.console.pages`, imported (each may hold a ``router``)."""
    from memberwise.console import pages

    return tuple(
        importlib.import_module(f"{pages.__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda i: i.name)
    )


@cache
def entries() -> tuple[NavEntry, ...]:
    """Every page's nav entry, in display order."""
    found = [m.NAV for m in page_modules() if isinstance(getattr(m, "NAV", None), NavEntry)]
    return tuple(sorted(found, key=lambda e: (e.order, e.path)))


def may(role: Role, roles: frozenset[Role]) -> bool:
    """Whether ``role`` is one of ``roles``; admin may do everything (as the API's
    ``authorize``), so a page shows admin every action."""
    return role is Role.admin or role in roles


def visible(role: Role) -> list[NavEntry]:
    """The entries ``role`` may open."""
    return [e for e in entries() if may(role, e.roles)]
