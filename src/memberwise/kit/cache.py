"""A bounded in-process set, for facts that never become false (e.g. "this member exists")."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class BoundedSet:
    """Remembers up to ``max_items`` strings; when full it forgets everything and starts again.

    Forgetting is always safe for its users (they fall back to asking the store), so the
    simplest eviction that bounds memory is enough.
    """

    def __init__(self, max_items: int) -> None:
        self._max = max_items
        self._items: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add_all(self, items: Iterable[str]) -> None:
        with self._lock:
            self._items.update(items)
            if len(self._items) > self._max:
                self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
