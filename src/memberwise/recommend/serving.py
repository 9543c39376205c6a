"""Online re-ranking: a member's precomputed list, lifted by what they did in the last minutes,
filtered by business rules and filled from the fallback chain so it always has ``n`` items.

The member's last minutes come from the event lake itself (:class:`RecentEvents`): every
``POST /v1/events`` batch lands as one ``api-*.parquet`` file before the request returns, so a
reader that notices new files in today's partition sees an event within the same request
cycle, in every API process, with no second write path at ingest. Noticing is one ``stat`` of
the partition directory per request (its mtime changes when a file is renamed into it); only
new, recent files are read, and only events of the last :data:`WINDOW` are kept in memory.

Everything else here is pure: :func:`rerank` takes the lists and facts and returns the answer,
so the rules are tested without a store.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.kit.lake import EventLake, partition_name

#: How far back "the member's last minutes" reach.
WINDOW = timedelta(minutes=30)
#: A directory whose mtime looks unchanged is listed again at most this often.
RESCAN_SECONDS = 0.05
#: A recent event's lift halves every this many minutes.
HALF_LIFE_MINUTES = 10.0
#: How much each recent event type lifts the items similar to its item.
SIGNAL_WEIGHTS: dict[str, float] = {"view": 1.0, "favorite": 1.5, "cart": 2.0, "purchase": 1.0}
#: The item a page shows (``context=item:{id}``) counts as this strong a signal.
CONTEXT_WEIGHT = 2.0
#: The lift of an item's nearest neighbour, viewed just now: above the member's best own item
#: (scaled to 1), so what they look at this minute leads the list.
LIFT_SCALE = 1.5
#: How many of a signal item's nearest neighbours are lifted.
SESSION_NEIGHBOURS = 4
#: At most this share of a list filled from the fallbacks is new arrivals.
NEW_SHARE = 0.25
#: Fallback items rank below every personalized one: their scores are scaled by this.
FALLBACK_SCALE = 0.1
#: The order fallback lists are tried in (``{region}``, ``{category}`` are the member's).
FALLBACK_ORDER = (
    "region:{region}|category:{category}",
    "category:{category}",
    "region:{region}",
    "new",
    "all",
)


@dataclass(frozen=True)
class RecentEvent:
    """One of the member's events of the last minutes."""

    type: str
    item_id: str
    ts: datetime


@dataclass(frozen=True)
class ItemFacts:
    """What the rules need to know about an item right now."""

    category_id: str | None
    parent_category_id: str | None
    title: str | None
    in_stock: bool
    hidden: bool
    launched_at: datetime | None
    consumable: bool

    def in_category(self, category: str) -> bool:
        return category in (self.category_id, self.parent_category_id)


@dataclass
class Ranked:
    """One item of the answer."""

    item_id: str
    score: float
    reason: str
    source: str


@dataclass(frozen=True)
class Context:
    """Where the list is shown: ``home``, ``cart`` or an item page (``item:{id}``)."""

    kind: str
    item_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> Context | None:
        """The context ``text`` names, or None when it names none."""
        if text in ("home", "cart"):
            return cls(text)
        if text.startswith("item:") and 0 < len(text) - 5 <= 128:
            return cls("item", text[5:])
        return None

    def __str__(self) -> str:
        return f"item:{self.item_id}" if self.kind == "item" else self.kind


def decay(age: timedelta) -> float:
    """A recent event's weight after ``age`` (1 now, 1/2 after one half-life)."""
    minutes = max(age.total_seconds(), 0.0) / 60.0
    return math.pow(0.5, minutes / HALF_LIFE_MINUTES)


def signals(recent: Sequence[RecentEvent], context: Context, now: datetime) -> dict[str, float]:
    """Item -> how strongly the member's last minutes point at it (summed, decayed)."""
    strength: dict[str, float] = defaultdict(float)
    for event in recent:
        weight = SIGNAL_WEIGHTS.get(event.type)
        if weight is None or (context.kind == "cart" and event.type != "cart"):
            continue
        strength[event.item_id] += weight * decay(now - event.ts)
    if context.kind == "item" and context.item_id is not None:
        strength[context.item_id] += CONTEXT_WEIGHT
    return dict(strength)


@dataclass
class RerankInput:
    """Everything :func:`rerank` needs, read by the service in a few keyed queries."""

    base: Sequence[tuple[str, float, str, str]]
    signals: Mapping[str, float]
    similar: Mapping[str, Sequence[tuple[str, float]]]
    facts: Mapping[str, ItemFacts]
    titles: Mapping[str, str | None] = field(default_factory=dict)
    #: Items bought in the last minutes (a durable just bought is not shown again).
    bought: frozenset[str] = frozenset()
    #: Items the member may see before launch (their tier grants early access).
    early_access: bool = False


def lifted(data: RerankInput) -> dict[str, Ranked]:
    """The base list with scores scaled to 0.1..1 (rank kept), plus the items similar to the
    signals' items.

    The nearest :data:`SESSION_NEIGHBOURS` of each signal's item are lifted by
    :data:`LIFT_SCALE` x signal strength x similarity / the best similarity of that item's
    list: the nearest neighbour of an item viewed just now gains 1.5 and moves above the
    member's strongest own item (1), a few more follow, and the member's own list goes on
    after them.
    """
    scores = [s for _, s, _, _ in data.base]
    low, high = min(scores, default=0.0), max(scores, default=0.0)
    spread = high - low
    ranked: dict[str, Ranked] = {}
    for item_id, score, reason, source in data.base:
        if item_id not in ranked:
            scaled = 0.1 + 0.9 * (score - low) / spread if spread > 0 else 1.0
            ranked[item_id] = Ranked(item_id, scaled, reason, source)
    best_lift: dict[str, tuple[float, str]] = {}
    for anchor, strength in data.signals.items():
        neighbours = [x for x in data.similar.get(anchor, ()) if x[0] != anchor]
        neighbours = sorted(neighbours, key=lambda x: -x[1])[:SESSION_NEIGHBOURS]
        best = max((s for _, s in neighbours), default=0.0)
        if best <= 0:
            continue
        for item_id, similarity in neighbours:
            lift = LIFT_SCALE * strength * similarity / best
            total, why = best_lift.get(item_id, (0.0, anchor))
            best_lift[item_id] = (total + lift, why if total >= lift else anchor)
    for item_id, (lift, anchor) in best_lift.items():
        title = data.titles.get(anchor) or anchor
        if item_id in ranked:
            entry = ranked[item_id]
            entry.score += lift
            entry.reason = f"{entry.reason}; related to {title} you just looked at"
        else:
            ranked[item_id] = Ranked(
                item_id, lift, f"related to {title} you just looked at", "session"
            )
    return ranked


def allowed(
    item_id: str,
    facts: ItemFacts | None,
    *,
    now: datetime,
    category: str | None,
    exclude: frozenset[str],
    early_access: bool,
) -> bool:
    """The business rules every answer obeys: a known, visible, in-stock, launched item (or
    one the member's tier may see early), of the asked category, not excluded."""
    if facts is None or facts.hidden or not facts.in_stock or item_id in exclude:
        return False
    if facts.launched_at is not None and facts.launched_at > now and not early_access:
        return False
    return category is None or facts.in_category(category)


def diversify(
    ranked: Sequence[Ranked], facts: Mapping[str, ItemFacts], n: int, share: float
) -> list[Ranked]:
    """The best ``n`` with at most ``ceil(n * share)`` (and at least 2) of one category; the
    overflow fills the end only when there is nothing else."""
    cap = max(2, math.ceil(n * share))
    per: dict[str | None, int] = defaultdict(int)
    chosen: list[Ranked] = []
    overflow: list[Ranked] = []
    for entry in ranked:
        category = facts[entry.item_id].category_id
        if per[category] < cap:
            per[category] += 1
            chosen.append(entry)
            if len(chosen) == n:
                return chosen
        else:
            overflow.append(entry)
    return chosen + overflow[: n - len(chosen)]


def rerank(
    data: RerankInput,
    *,
    n: int,
    now: datetime,
    category: str | None = None,
    context: Context = Context("home"),
    diversity_share: float = 0.5,
) -> list[Ranked]:
    """The personalized part of the answer (may hold fewer than ``n``; the caller fills).

    Order: base score (scaled 0..1) plus the lift of the member's last minutes; then the
    rules (:func:`allowed`): durables bought in the window and, on an item page, the item
    itself are excluded; at most ``diversity_share`` of the list from one category.
    """
    exclude = {i for i in data.bought if (f := data.facts.get(i)) is not None and not f.consumable}
    if context.kind == "item" and context.item_id is not None:
        exclude.add(context.item_id)
    frozen = frozenset(exclude)
    scored = lifted(data)
    kept = [
        entry
        for entry in scored.values()
        if allowed(
            entry.item_id,
            data.facts.get(entry.item_id),
            now=now,
            category=category,
            exclude=frozen,
            early_access=data.early_access or entry.source == "early_access",
        )
    ]
    kept.sort(key=lambda e: (-e.score, e.item_id))
    return diversify(kept, data.facts, n, diversity_share)


def fallback_keys(region: str | None, category: str | None) -> list[str]:
    """The fallback lists to try, most specific first (those needing an unknown are skipped)."""
    keys = []
    for pattern in FALLBACK_ORDER:
        if ("{region}" in pattern and not region) or ("{category}" in pattern and not category):
            continue
        keys.append(pattern.format(region=region, category=category))
    return keys


def fill(
    chosen: list[Ranked],
    fallbacks: Sequence[tuple[str, Sequence[tuple[str, float, str]]]],
    facts: Mapping[str, ItemFacts],
    *,
    n: int,
    now: datetime,
    category: str | None,
    exclude: frozenset[str],
) -> list[Ranked]:
    """``chosen`` topped up to ``n`` from the fallback lists ``(key, entries)`` in order, each
    item once, new arrivals at most :data:`NEW_SHARE` of ``n``. Fallback items score below
    every personalized one, decreasing in fill order (their rank)."""
    floor = min((e.score for e in chosen), default=1.0)
    scale = FALLBACK_SCALE * (floor if floor > 0 else 1.0)
    seen = {e.item_id for e in chosen} | set(exclude)
    picked: list[tuple[str, str]] = []
    wanted = n - len(chosen)
    for key, entries in fallbacks:
        cap = math.ceil(n * NEW_SHARE) if key == "new" else wanted
        taken = 0
        for item_id, _score, reason in entries:
            if len(picked) >= wanted or taken >= cap:
                break
            if item_id in seen or not allowed(
                item_id,
                facts.get(item_id),
                now=now,
                category=category,
                exclude=exclude,
                early_access=False,
            ):
                continue
            seen.add(item_id)
            picked.append((item_id, reason))
            taken += 1
    return list(chosen) + [
        Ranked(item_id, scale * (len(picked) - k) / len(picked), reason, "fallback")
        for k, (item_id, reason) in enumerate(picked)
    ]


# --- the member's last minutes, read back from the lake ---------------------------------------


class RecentEvents:
    """Events of the last :data:`WINDOW` that reached the lake through the API, by member.

    Thread-safe; one instance per process and lake (:func:`recent_events`). Bulk files are
    history, not "the last minutes", and are not read.
    """

    def __init__(self, lake: EventLake, window: timedelta = WINDOW) -> None:
        self.lake = lake
        self.window = window
        self._lock = threading.Lock()
        self._seen_files: set[str] = set()
        self._dir_state: dict[Path, int] = {}
        self._listed_at: dict[Path, float] = {}
        self._by_member: dict[str, list[RecentEvent]] = defaultdict(list)
        self._oldest_kept = datetime.max.replace(tzinfo=UTC)

    def for_member(self, member_id: str, now: datetime) -> list[RecentEvent]:
        """The member's events with ``now - window <= ts <= now``, oldest first."""
        self.refresh(now)
        start = now - self.window
        events = self._by_member.get(member_id, [])
        return [e for e in events if start <= e.ts <= now]

    def _partitions(self, now: datetime) -> list[Path]:
        days = {(now - self.window).date(), now.date()}
        return [self.lake.events_dir / partition_name(d) for d in sorted(days)]

    def refresh(self, now: datetime) -> None:
        """Read the API files that appeared since the last look (cheap when none did)."""
        changed = []
        for directory in self._partitions(now):
            try:
                state = directory.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            # A directory changed within the last second is listed again even if its mtime
            # looks the same (a coarse file-system clock may stamp two renames alike), but
            # at most every RESCAN_SECONDS, so steady ingest does not list it per request.
            clock = time.monotonic()
            recent = now.timestamp() * 1e9 - state < 1e9
            due = clock - self._listed_at.get(directory, 0.0) >= RESCAN_SECONDS
            if self._dir_state.get(directory) != state or (recent and due):
                self._listed_at[directory] = clock
                changed.append((directory, state))
        if not changed:
            return
        with self._lock:
            for directory, state in changed:
                self._scan(directory, now)
                self._dir_state[directory] = state
            self._prune(now)

    def _scan(self, directory: Path, now: datetime) -> None:
        start = now - self.window
        cutoff = start.timestamp() - 60  # a file older than the window holds no recent event
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry.name
            if not name.startswith("api-") or not name.endswith(".parquet"):
                continue
            key = f"{directory.name}/{name}"
            if key in self._seen_files:
                continue
            self._seen_files.add(key)
            try:
                if entry.stat().st_mtime < cutoff:
                    continue
                table = pq.read_table(entry.path, columns=["member_id", "type", "ts", "item_id"])
            except (FileNotFoundError, OSError):
                continue
            table = table.filter(pc.is_valid(table.column("item_id")))
            touched: set[str] = set()
            for member_id, kind, ts, item_id in zip(
                *(table.column(c).to_pylist() for c in ("member_id", "type", "ts", "item_id")),
                strict=True,
            ):
                if ts >= start:
                    self._by_member[member_id].append(RecentEvent(kind, item_id, ts))
                    self._oldest_kept = min(self._oldest_kept, ts)
                    touched.add(member_id)
            for member_id in touched:
                self._by_member[member_id].sort(key=lambda e: e.ts)

    def _prune(self, now: datetime) -> None:
        start = now - self.window
        if self._oldest_kept >= start:
            return
        for member_id in list(self._by_member):
            kept = [e for e in self._by_member[member_id] if e.ts >= start]
            if kept:
                self._by_member[member_id] = kept
            else:
                del self._by_member[member_id]
        self._oldest_kept = min(
            (e.ts for events in self._by_member.values() for e in events),
            default=datetime.max.replace(tzinfo=UTC),
        )
        live = {d.name for d in self._partitions(now)}
        self._seen_files = {k for k in self._seen_files if k.split("/", 1)[0] in live}
        self._dir_state = {d: s for d, s in self._dir_state.items() if d.name in live}
        self._listed_at = {d: t for d, t in self._listed_at.items() if d.name in live}


_READERS: dict[Path, RecentEvents] = {}
_READERS_LOCK = threading.Lock()


def recent_events(lake: EventLake) -> RecentEvents:
    """The process's reader of ``lake``'s recent API events (made on first use)."""
    root = lake.root.absolute()
    with _READERS_LOCK:
        reader = _READERS.get(root)
        if reader is None:
            reader = _READERS[root] = RecentEvents(lake)
        return reader


# --- what serving keeps in memory ---------------------------------------------------------------

#: Items written this long before the last look are read again (clock skew between writers).
SYNC_OVERLAP = timedelta(seconds=5)
#: Bounds of the in-process caches (entries); past them a cache starts again empty.
MAX_FACTS = 1_000_000
MAX_LISTS = 200_000


class ServingCache:
    """Item facts, similar-items and fallback lists of one operational store, in memory.

    Facts stay current without trusting a TTL: before each use, :meth:`changed_since` says
    from when the store must be asked for changed items (``items.updated_at``, indexed), and
    :meth:`update_facts` applies them, so a ``PUT /v1/items/{id}`` in any process is seen by
    the next request of every process. Lists are keyed by the model that published them, so
    a newly published model is never mixed with cached lists of the old one.
    """

    def __init__(self) -> None:
        self.facts: dict[str, ItemFacts | None] = {}
        self.lists: dict[tuple[str, str, str], object] = {}
        self.last_sync: datetime | None = None
        self.lock = threading.Lock()

    def changed_since(self, now: datetime) -> datetime | None:
        """When to read changes from (None on first use: nothing is cached yet)."""
        with self.lock:
            last, self.last_sync = self.last_sync, now
        return None if last is None else last - SYNC_OVERLAP

    def update_facts(self, found: Mapping[str, ItemFacts | None]) -> None:
        with self.lock:
            if len(self.facts) + len(found) > MAX_FACTS:
                self.facts.clear()
            self.facts.update(found)

    def get_list(self, kind: str, model_id: str, key: str) -> object | None:
        return self.lists.get((kind, model_id, key))

    def put_list(self, kind: str, model_id: str, key: str, value: object) -> None:
        with self.lock:
            if len(self.lists) >= MAX_LISTS:
                self.lists.clear()
            self.lists[(kind, model_id, key)] = value
