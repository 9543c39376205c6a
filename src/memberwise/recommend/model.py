"""The recommender: candidate sources, a learned ranker, business rules and reasons, in one object.

Interface (what the build stage, serving and export use)::

    from memberwise.recommend.model import Recommender, RecommenderConfig

    rec = Recommender(RecommenderConfig(seed=7)).fit(events, items=items, categories=categories)
    recs = rec.recommend(member_ids, n=20, exclude_items=hidden,
                         early_access_items=["i9"], early_access_members=plus_members)
    # pa.Table: member_id str, rank int32 (1 = best), item_id str, score float64,
    #           reason str (a short sentence), source str (repeat|als|cooc|popular|new|
    #           neighbours|early_access)
    sims = rec.similar_items(n=20)      # pa.Table: item_id, rank, similar_item_id, score
    rec.save(directory); rec = Recommender.load(directory)   # npz + JSON + LightGBM text

``events`` is an Arrow table with the event contract's columns (``member_id, type, ts,
item_id`` required; ``category_id, price, order_id, region`` used when present); ``items``
(``item_id, category_id, price, launched_at, title``) and ``categories`` (``category_id,
name``) are optional catalog tables that improve new arrivals and the reasons' wording. Every
member id passed to :meth:`Recommender.recommend` gets exactly ``n`` rows when the catalog has
``n`` eligible items: members unknown to the model get the popular fallback ("popular right
now"). ``rec.info`` says how the model was trained (ranker kind, sizes, seconds).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from memberwise.recommend.candidates import (
    AlsSource,
    Candidates,
    CoocSource,
    NeighboursSource,
    NewArrivalsSource,
    PopularSource,
    RepeatSource,
    Source,
    top_per_member,
)
from memberwise.recommend.interactions import (
    FloatArray,
    IntArray,
    Interactions,
    StrArray,
    from_events,
)
from memberwise.recommend.policy import OwnHistory, PairHistory, Trial, learn
from memberwise.recommend.policy import scores as policy_scores
from memberwise.recommend.ranker import (
    FALLBACK_WEIGHTS,
    SOURCES,
    ItemStats,
    Ranker,
    features,
    own_pairs,
    source_tables,
)
from memberwise.recommend.rules import (
    diverse,
    not_durable_just_bought,
    not_hidden,
    not_refunded,
)

FORMAT_VERSION = 2
T = TypeVar("T")
#: The sources the own-history policy reads (its candidates: own purchases, popular items),
#: and those its serving model fits (co-occurrence too, for the similar items).
OWN_SOURCES: tuple[str, ...] = ("repeat", "popular")
OWN_SERVING_SOURCES: tuple[str, ...] = ("repeat", "popular", "cooc")
RESULT_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
SIMILAR_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("similar_item_id", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
    ]
)


@dataclass
class RecommenderConfig:
    """Every knob of the recommender; saved with the model as JSON.

    Times are in the data's unit: days for events, baskets for basket data (Ta-Feng).
    """

    seed: int = 7
    threads: int = 2
    #: Candidates each source proposes per member.
    candidates: int = 50
    popular_candidates: int = 30
    new_candidates: int = 10
    #: Recency half-life (days) of own purchases; decay per basket for basket data.
    half_life: float = 45.0
    basket_decay: float = 0.9
    #: Minimum share of buyers re-buying a category for it to count as a consumable.
    min_rebuy_rate: float = 0.08
    als_factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    als_alpha: float = 2.0
    als_pool: int = 20_000
    #: ALS sweeps of the serving fit, started from the factors fitted on the ranker's history
    #: (the same members and items, one label period less); 0 = fit from scratch with
    #: ``als_iterations``. Used only when the ranker's split was fitted.
    als_refit_iterations: int = 5
    cooc_neighbours: int = 30
    neighbours_k: int = 300
    neighbours_max_members: int = 15_000
    new_days: float = 14.0
    #: Ranker: a LambdaRank model on a time split, if enough members have a label.
    use_ranker: bool = True
    label_days: float = 7.0
    #: Members whose candidates train the ranker (a seeded sample above this). Ta-Feng has
    #: 13,858, so the cap changes nothing there; 20,000 members x ~120 candidates are ~2.4 M
    #: rows for 32 features, and early stopping picked 20-79 rounds in our runs.
    max_train_members: int = 20_000
    min_train_groups: int = 50
    ranker_rounds: int = 300
    #: What orders the lists: ``ranker`` (LambdaRank, or the fallback blend) or
    #: ``own_history`` (the member's own purchases, then popular items: :mod:`.policy`).
    policy: str = "ranker"
    #: The own-history policy's weights; ``learn_policy`` replaces them by the best of
    #: :data:`memberwise.recommend.policy.GRID` on the fit's time split.
    own_recency: float = 0.0
    own_category_power: float = 0.0
    own_explore: float = 0.0
    learn_policy: bool = True
    #: Business rules.
    durable_cooldown: float = 90.0
    max_per_category: int = 4
    early_access_slots: int = 2
    early_access_position: int = 3
    batch_size: int = 20_000
    #: Batches of members scored at once, one thread each (NumPy, implicit's top-k and
    #: LightGBM release the GIL for the heavy parts, so 2 threads use 2 cores). Each batch
    #: runs single-threaded inside; results do not depend on this.
    scoring_threads: int = 2

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecommenderConfig:
        """Read a dict written by :meth:`to_json` (unknown keys are refused)."""
        return cls(**data)


def _make_sources(cfg: RecommenderConfig) -> dict[str, Source]:
    return {
        "repeat": RepeatSource(
            half_life=cfg.half_life,
            basket_decay=cfg.basket_decay,
            min_rebuy_rate=cfg.min_rebuy_rate,
        ),
        "als": AlsSource(
            factors=cfg.als_factors,
            regularization=cfg.als_regularization,
            alpha=cfg.als_alpha,
            iterations=cfg.als_iterations,
            seed=cfg.seed,
            threads=cfg.threads,
            pool=cfg.als_pool,
        ),
        "cooc": CoocSource(k=cfg.cooc_neighbours),
        "popular": PopularSource(),
        "new": NewArrivalsSource(days=cfg.new_days),
        "neighbours": NeighboursSource(
            k=cfg.neighbours_k,
            half_life=cfg.half_life,
            basket_decay=cfg.basket_decay,
            max_members=cfg.neighbours_max_members,
        ),
    }


@dataclass
class Fitted:
    """Sources and item statistics fitted on one set of interactions."""

    data: Interactions
    sources: dict[str, Source]
    stats: ItemStats

    @property
    def repeat(self) -> RepeatSource:
        src = self.sources["repeat"]
        assert isinstance(src, RepeatSource)
        return src


@dataclass
class Ranked:
    """One batch's final lists: ``pos`` indexes the batch's members; sorted by pos, rank."""

    pos: IntArray
    item: IntArray
    score: FloatArray
    source: IntArray  # index into SOURCES
    arg: IntArray
    arg2: FloatArray


class Recommender:
    """Personalized item lists with reasons for every member, trained offline."""

    def __init__(self, config: RecommenderConfig | None = None) -> None:
        self.config = config or RecommenderConfig()
        self.ranker = Ranker(
            min_groups=self.config.min_train_groups,
            rounds=self.config.ranker_rounds,
            seed=self.config.seed,
            threads=self.config.threads,
        )
        self._fitted: Fitted | None = None
        self._item_ids_arrow: pa.Array | None = None
        self.info: dict[str, Any] = {}
        cfg = self.config
        if cfg.policy not in ("ranker", "own_history"):
            raise ValueError(f"unknown policy {cfg.policy!r}: ranker or own_history")
        #: The own-history policy (learned by ``fit`` unless ``learn_policy`` is off).
        self.own_policy = OwnHistory(cfg.own_recency, cfg.own_category_power, cfg.own_explore)
        self.policy_trials: list[Trial] = []

    # -- training ------------------------------------------------------------------------
    @property
    def data(self) -> Interactions:
        """The interactions the model was fitted on."""
        return self.fitted.data

    @property
    def fitted(self) -> Fitted:
        if self._fitted is None:
            raise RuntimeError("the recommender is not fitted: call fit() or load() first")
        return self._fitted

    def _fit_sources(
        self, data: Interactions, start: Fitted | None = None, *, only: tuple[str, ...] = ()
    ) -> Fitted:
        """Fit every source on ``data`` (or ``only`` those; the others are left out); ALS
        starts from ``start``'s factors when given."""
        sources = _make_sources(self.config)
        if only:
            sources = {name: src for name, src in sources.items() if name in only}
        refit = self.config.als_refit_iterations
        for name, src in sources.items():
            if name == "als" and start is not None and refit > 0:
                prior = start.sources["als"]
                assert isinstance(src, AlsSource) and isinstance(prior, AlsSource)
                src.fit_from(data, prior, refit)
            else:
                src.fit(data)
        return Fitted(data, sources, ItemStats.fit(data))

    def fit(
        self,
        events: pa.Table | Interactions,
        *,
        now: datetime | None = None,
        items: pa.Table | None = None,
        categories: pa.Table | None = None,
        history_fit: Recommender | None = None,
    ) -> Recommender:
        """Fit every source on ``events`` and train the ranker on a time split of them.

        The ranker's training data: sources fitted on the history before the split, their
        candidates for (up to ``max_train_members``) members who bought after it, labelled by
        what they bought. Then every source is fitted again on all the data for serving.

        ``history_fit``: a recommender already fitted on exactly that history (the build's
        held-out evaluation fits one on all but the last ``label_days``): its sources are
        used instead of fitting them a second time (ALS, co-occurrence: most of a fit).
        Ignored unless it holds every source fitted on the same members, items and rows.
        """
        began = time.perf_counter()
        data = (
            events
            if isinstance(events, Interactions)
            else from_events(events, now=now, items=items, categories=categories)
        )
        cfg = self.config
        trained = False
        past: Fitted | None = None
        ranker_wanted = cfg.use_ranker and cfg.policy == "ranker"
        if ranker_wanted or cfg.learn_policy:
            history, labels = data.split_last(label_days=cfg.label_days)
            members = np.array(sorted(labels), np.int64)
            has_history = np.zeros(data.n_members, bool)
            has_history[history.member] = True
            members = members[has_history[members]] if len(members) else members
            if len(members) > cfg.max_train_members:
                rng = np.random.default_rng(cfg.seed)
                members = np.sort(rng.choice(members, cfg.max_train_members, replace=False))
            if len(members) >= cfg.min_train_groups and not ranker_wanted:
                # Only the own-history policy is wanted: its two sources suffice.
                self._learn_policy(self._fit_sources(history, only=OWN_SOURCES), members, labels)
            elif len(members) >= cfg.min_train_groups:
                reused = _fitted_on(history_fit, history)
                prior = past = reused if reused is not None else self._fit_sources(history)
                if cfg.learn_policy:
                    self._learn_policy(prior, members, labels)

                def training_rows(
                    lo: int, hi: int
                ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], IntArray]:
                    batch = members[lo:hi]
                    pos, item, scores, ranks, _ = self._candidates(prior, batch)
                    x = features(
                        history, batch, pos, item, scores, ranks, prior.stats, prior.repeat
                    )
                    truth = np.concatenate([labels[int(m)] for m in batch])
                    owner = np.repeat(np.arange(len(batch)), [len(labels[int(m)]) for m in batch])
                    y = np.isin(pos * data.n_items + item, owner * data.n_items + truth)
                    return x, y.astype(np.float32), pos + lo

                parts = self.map_batches(training_rows, len(members))
                trained = self.ranker.train(
                    np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]),
                )
                del parts
        if not trained:
            self.ranker.booster = None
        ranker_seconds = time.perf_counter() - began
        serving_sources = () if cfg.policy == "ranker" else OWN_SERVING_SOURCES
        self._fitted = self._fit_sources(data, start=past, only=serving_sources)
        self.info = {
            "policy": cfg.policy,
            "own_policy": {**self.own_policy.as_dict(), "name": self.own_policy.name},
            "ranker": self.ranker.kind,
            "ranker_training": self.ranker.train_info,
            "members": data.n_members,
            "items": data.n_items,
            "interactions": len(data.member),
            "unit": data.unit,
            "ranker_seconds": round(ranker_seconds, 3),
            "fit_seconds": round(time.perf_counter() - began, 3),
        }
        return self

    def _learn_policy(self, prior: Fitted, members: IntArray, labels: dict[int, IntArray]) -> None:
        """Choose the own-history policy's weights on the split (``prior`` fitted before it,
        ``labels`` what ``members`` bought after it)."""

        def rows(
            lo: int, hi: int
        ) -> tuple[IntArray, IntArray, PairHistory, FloatArray, FloatArray]:
            batch = members[lo:hi]
            pos, item, hist, rate, pop = self._own_inputs(prior, batch)
            return pos + lo, item, hist, rate, pop

        parts = self.map_batches(rows, len(members))
        if not parts:
            return
        pos = np.concatenate([p[0] for p in parts])
        hist = PairHistory(
            np.concatenate([p[2].baskets for p in parts]),
            np.concatenate([p[2].since for p in parts]),
            np.concatenate([p[2].member_max for p in parts]),
        )
        truth = {i: labels[int(m)] for i, m in enumerate(members.tolist())}
        self.own_policy, self.policy_trials = learn(
            pos,
            np.concatenate([p[1] for p in parts]),
            hist,
            np.concatenate([p[3] for p in parts]),
            np.concatenate([p[4] for p in parts]),
            truth,
            half_life=self._own_half_life(prior.data),
        )

    def _own_half_life(self, data: Interactions) -> float:
        """Recency half-life of the own-history policy, in the data's time unit."""
        return self.config.half_life if data.unit == "day" else 3.0

    def _own_inputs(
        self, fitted: Fitted, members: IntArray
    ) -> tuple[IntArray, IntArray, PairHistory, FloatArray, FloatArray]:
        """Candidates of the own-history policy (own purchases and popular items) with their
        purchase history, category re-buy rate and popular score."""
        pos, item, hist, rate, scores, _ = self._own_candidates(fitted, members)
        return pos, item, hist, rate, scores["popular"]

    def _own_candidates(
        self, fitted: Fitted, members: IntArray
    ) -> tuple[
        IntArray, IntArray, PairHistory, FloatArray, dict[str, FloatArray], dict[str, Candidates]
    ]:
        """:meth:`_own_inputs` plus every source's scores and reason arguments (for ranking)."""
        pos, item, scores, _, aligned = self._candidates(fitted, members, only=OWN_SOURCES)
        own = own_pairs(fitted.data, members, pos, item)
        now = np.where(members >= 0, fitted.data.now[np.maximum(members, 0)], 0.0)[pos]
        hist = PairHistory(own.baskets, now - own.last, own.member_max)
        rate = fitted.repeat.rebuy_rate(fitted.data, item)
        return pos, item, hist, rate, scores, aligned

    def map_batches(self, fn: Callable[[int, int], T], n_members: int) -> list[T]:
        """``fn(lo, hi)`` for consecutive batches ``lo:hi`` of ``n_members``, results in order.

        Batches hold at most ``batch_size`` members, fewer when that gives every one of the
        ``scoring_threads`` threads a batch; up to ``scoring_threads`` run at once, each with a
        single BLAS thread. Every member is scored on its own, so the results do not depend on
        the batching or the threads.
        """
        workers = max(self.config.scoring_threads, 1)
        size = max(min(self.config.batch_size, -(-n_members // workers)), 1)
        bounds = [(lo, min(lo + size, n_members)) for lo in range(0, n_members, size)]
        workers = min(workers, len(bounds))
        if workers <= 1:
            return [fn(lo, hi) for lo, hi in bounds]
        # The BLAS limit is process-wide: set once here, not in each thread.
        with (
            threadpool_limits(1, "blas"),
            ThreadPoolExecutor(workers, thread_name_prefix="recommend") as pool,
        ):
            return list(pool.map(lambda b: fn(*b), bounds))

    # -- candidates and ranking ----------------------------------------------------------------
    def _candidates(
        self, fitted: Fitted, members: IntArray, *, only: tuple[str, ...] = ()
    ) -> tuple[
        IntArray, IntArray, dict[str, FloatArray], dict[str, FloatArray], dict[str, Candidates]
    ]:
        cfg = self.config
        per = {"popular": cfg.popular_candidates, "new": cfg.new_candidates}
        by_source = {
            name: src.candidates(fitted.data, members, per.get(name, cfg.candidates))
            for name, src in fitted.sources.items()
            if not only or name in only
        }
        return source_tables(by_source, fitted.data.n_items)

    def source_candidates(self, members: IntArray, source: str, n: int) -> Candidates:
        """One source's own top ``n`` per member (row numbers), for per-source evaluation."""
        fitted = self.fitted
        if source not in fitted.sources:
            return Candidates.empty()
        return fitted.sources[source].candidates(fitted.data, members, n)

    def rank(
        self,
        members: IntArray,
        n: int,
        *,
        hidden: IntArray | None = None,
        rules: bool = True,
        predict_threads: int | None = None,
        own_history: bool | None = None,
    ) -> Ranked:
        """The final top ``n`` of the given members (row numbers; -1 = unknown, gets none).

        ``predict_threads`` overrides LightGBM's threads (1 when batches run concurrently).
        ``own_history`` orders by the own-history policy instead of the ranker (default: the
        configured ``policy``).
        """
        fitted = self.fitted
        data = fitted.data
        cfg = self.config
        if own_history is None:
            own_history = cfg.policy == "own_history"
        if own_history:
            pos, item, hist, rate, scores, aligned = self._own_candidates(fitted, members)
            score = policy_scores(
                self.own_policy,
                pos,
                hist,
                rate,
                scores["popular"],
                half_life=self._own_half_life(data),
            )
        else:
            pos, item, scores, ranks, aligned = self._candidates(fitted, members)
            x = (
                features(data, members, pos, item, scores, ranks, fitted.stats, fitted.repeat)
                if self.ranker.booster is not None
                else np.zeros((0, 0), np.float32)
            )
            score = self.ranker.score(x, pos, scores, len(members), threads=predict_threads)
        keep = np.ones(len(pos), bool)
        if hidden is not None:
            keep &= not_hidden(item, hidden)
        if rules:
            keep &= not_refunded(data, members, pos, item)
            keep &= not_durable_just_bought(
                data, members, pos, item, fitted.repeat, cooldown=self._cooldown()
            )
        # One sort by (member, score desc, item); the diversity rule only needs a prefix.
        sel = np.flatnonzero(keep)
        sel = sel[np.lexsort((item[sel], -score[sel], pos[sel]))]
        diversity = rules and data.n_categories > 0 and cfg.max_per_category > 0
        sel = sel[_rank_within(pos[sel]) < (3 * n if diversity else n)]
        if diversity:
            cat = data.item_category[item[sel]].astype(np.int64)
            sel = sel[diverse(pos[sel], cat, score[sel], max_per_category=cfg.max_per_category)]
            sel = sel[_rank_within(pos[sel]) < n]
        # Reason: the source with the largest weighted normalized score for the pair.
        weights = np.zeros((len(sel), len(SOURCES)))
        for j, s in enumerate(SOURCES):
            norm = _normalized_by_member(pos, scores[s], len(members))
            weights[:, j] = FALLBACK_WEIGHTS[s] * norm[sel] + 1e-9 * (aligned[s].arg[sel] != -2)
        src = np.argmax(weights, axis=1) if len(sel) else np.zeros(0, np.int64)
        arg = np.zeros(len(sel), np.int64)
        arg2 = np.zeros(len(sel))
        for j, s in enumerate(SOURCES):
            mine = src == j
            arg[mine] = aligned[s].arg[sel][mine]
            arg2[mine] = aligned[s].arg2[sel][mine]
        return Ranked(pos[sel], item[sel], score[sel], src.astype(np.int64), arg, arg2)

    def _cooldown(self) -> float:
        # In basket time, "just bought" is the last basket.
        return self.config.durable_cooldown if self.data.unit == "day" else 1.0

    # -- public batch outputs ---------------------------------------------------------------
    def recommend(
        self,
        member_ids: Sequence[str] | None = None,
        n: int = 20,
        *,
        exclude_items: Iterable[str] = (),
        early_access_items: Sequence[str] = (),
        early_access_members: Iterable[str] = (),
    ) -> pa.Table:
        """Every given member's top ``n`` items with score, reason and source (see module doc).

        ``member_ids`` defaults to every member the model knows. ``exclude_items`` are hidden
        or out-of-stock items, never shown. ``early_access_items`` (in the caller's priority
        order; they may be unknown to the model, e.g. not launched yet) are placed from
        position ``early_access_position`` for the members in ``early_access_members``
        (whose tier grants early access), at most ``early_access_slots`` of them.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        fitted = self.fitted
        data = fitted.data
        ids = data.member_ids if member_ids is None else np.asarray(list(member_ids), np.str_)
        rows = data.member_index(ids)
        hidden_ids = np.asarray(sorted(set(exclude_items)), np.str_)
        hidden = data.item_index(hidden_ids)
        hidden = hidden[hidden >= 0]
        hidden_set = set(hidden_ids.tolist())
        early = [i for i in dict.fromkeys(early_access_items) if i not in hidden_set]
        early = early[: max(self.config.early_access_slots, 0)]
        eligible = np.isin(ids, np.asarray(list(set(early_access_members)), np.str_))
        fallback = self._fallback_items(hidden, n)
        single = 1 if self.config.scoring_threads > 1 else None

        def batch(lo: int, hi: int) -> pa.Table:
            ranked = self.rank(rows[lo:hi], n, hidden=hidden, predict_threads=single)
            ranked = _fill(ranked, hi - lo, n, fallback)
            return self._table(ids[lo:hi], ranked, n, early, eligible[lo:hi])

        tables = self.map_batches(batch, len(ids))
        if not tables:
            return RESULT_SCHEMA.empty_table()
        return pa.concat_tables(tables)

    def _fallback_items(self, hidden: IntArray, n: int) -> IntArray:
        """The most popular items (not hidden): the list of members the model does not know."""
        pop = self.fitted.sources["popular"]
        assert isinstance(pop, PopularSource)
        order = np.lexsort((np.arange(len(pop.popularity)), -pop.popularity))
        order = order[pop.popularity[order] > 0]
        order = order[~np.isin(order, hidden)]
        return np.asarray(order[:n], np.int64)

    def _table(
        self,
        ids: StrArray,
        ranked: Ranked,
        n: int,
        early: list[str],
        eligible: np.ndarray[Any, np.dtype[np.bool_]],
    ) -> pa.Table:
        data = self.data
        sources = np.array([*SOURCES, "early_access"], np.str_)
        if not (early and eligible.any()):
            return self._table_fast(ids, ranked)
        reasons = self._reasons(ranked)
        item_ids = data.item_ids[ranked.item]
        pos, score, src = ranked.pos, ranked.score, sources[ranked.source]
        if early and eligible.any():
            pos, item_ids, score, src, reasons = _insert_early_access(
                pos,
                item_ids,
                score,
                src,
                reasons,
                early,
                eligible,
                n,
                self.config.early_access_position,
            )
        starts = np.searchsorted(pos, np.arange(len(ids) + 1))
        rank = np.arange(len(pos)) - np.repeat(starts[:-1], np.diff(starts)) + 1
        return pa.table(
            {
                "member_id": pa.array(ids[pos].tolist(), pa.string()),
                "rank": pa.array(rank.astype(np.int32), pa.int32()),
                "item_id": pa.array(item_ids.tolist(), pa.string()),
                "score": pa.array(np.nan_to_num(score).astype(np.float64), pa.float64()),
                "reason": pa.array(reasons.tolist(), pa.string()),
                "source": pa.array(src.tolist(), pa.string()),
            },
            schema=RESULT_SCHEMA,
        )

    def _table_fast(self, ids: StrArray, ranked: Ranked) -> pa.Table:
        """:meth:`_table` without early access: every string column is an Arrow ``take``
        from a small array of distinct values (no Python string per row, no GIL held)."""
        pos = ranked.pos
        starts = np.searchsorted(pos, np.arange(len(ids) + 1))
        rank = np.arange(len(pos)) - np.repeat(starts[:-1], np.diff(starts)) + 1
        texts, inverse = self._reason_codes(ranked)
        return pa.table(
            {
                "member_id": pa.array(ids, pa.string()).take(pa.array(pos)),
                "rank": pa.array(rank.astype(np.int32), pa.int32()),
                "item_id": self._item_id_array().take(pa.array(ranked.item)),
                "score": pa.array(np.nan_to_num(ranked.score).astype(np.float64), pa.float64()),
                "reason": pa.array(texts, pa.string()).take(pa.array(inverse)),
                "source": pa.array([*SOURCES, "early_access"], pa.string()).take(
                    pa.array(ranked.source)
                ),
            },
            schema=RESULT_SCHEMA,
        )

    def _item_id_array(self) -> pa.Array:
        """The model's item ids as an Arrow array (made once)."""
        cached = self._item_ids_arrow
        if cached is None or len(cached) != self.data.n_items:
            cached = pa.array(self.data.item_ids, pa.string())
            self._item_ids_arrow = cached
        return cached

    def _reason_codes(self, ranked: Ranked) -> tuple[list[str], IntArray]:
        """The distinct reason sentences and each row's index into them."""
        if len(ranked.pos) == 0:
            return [], np.zeros(0, np.int64)
        arg2 = np.where(np.isnan(ranked.arg2), -1.0, np.round(ranked.arg2, 1))
        # Distinct (source, arg, arg2) as one integer key: np.unique(axis=0) sorts a void
        # dtype holding the GIL, which would serialize the scoring threads.
        tenths = np.round(arg2 * 10).astype(np.int64)
        head, head_inv = np.unique(ranked.source * (1 << 40) + ranked.arg + 2, return_inverse=True)
        span = int(tenths.max() - tenths.min()) + 1
        if len(head) * span < (1 << 62):
            _, first, inverse = np.unique(
                head_inv.ravel() * span + (tenths - tenths.min()),
                return_index=True,
                return_inverse=True,
            )
            uniq = [
                (int(ranked.source[i]), int(ranked.arg[i]), float(arg2[i])) for i in first.tolist()
            ]
        else:  # pragma: no cover - arg2 spans beyond any time scale
            keys = np.stack(
                [ranked.source.astype(np.float64), ranked.arg.astype(np.float64), arg2], 1
            )
            rows, inverse = np.unique(keys, axis=0, return_inverse=True)
            uniq = [(int(s), int(a), float(b)) for s, a, b in rows.tolist()]
        texts = [self._reason(s, a, b) for s, a, b in uniq]
        return texts, np.asarray(inverse, np.int64).ravel()

    def _reasons(self, ranked: Ranked) -> StrArray:
        """A short sentence per row, formatted once per distinct (source, arguments)."""
        if len(ranked.pos) == 0:
            return np.zeros(0, np.str_)
        texts, inverse = self._reason_codes(ranked)
        return np.asarray(texts, np.str_)[inverse]

    def _reason(self, source: int, arg: int, arg2: float) -> str:
        data = self.data
        name = SOURCES[source] if source < len(SOURCES) else "early_access"
        if name == "repeat":
            if data.unit == "basket":
                return f"bought in {arg} of your baskets" if arg >= 2 else "you bought this before"
            if arg >= 2 and arg2 > 0:
                return f"bought every {_period(arg2)}"
            return f"bought {arg} times" if arg >= 2 else "you bought this before"
        if name == "cooc" and arg >= 0:
            title = str(data.item_titles[arg])
            if arg2 >= 1.0:
                return f"people who bought {title} also bought this"
            return f"people who viewed {title} also viewed this"
        if name == "popular":
            if arg >= 0:
                cat = str(data.category_names[arg])
                return f"popular in {cat} near you" if arg2 >= 1.0 else f"popular in {cat}"
            return "popular right now"
        if name == "new":
            return f"new in {data.category_names[arg]}" if arg >= 0 else "new arrival"
        if name == "als":
            return "members with tastes like yours like this"
        if name == "neighbours":
            return "members who shop like you buy this"
        if name == "early_access":
            return "early access for your tier"
        return "popular right now"

    def similar_items(self, n: int = 20, item_ids: Sequence[str] | None = None) -> pa.Table:
        """Each item's ``n`` most similar items by basket and session co-occurrence."""
        cooc = self.fitted.sources["cooc"]
        assert isinstance(cooc, CoocSource)
        item, similar, score = cooc.similar(n)
        if item_ids is not None:
            wanted = self.data.item_index(list(item_ids))
            keep = np.isin(item, wanted[wanted >= 0])
            item, similar, score = item[keep], similar[keep], score[keep]
        starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]]) if len(item) else item
        rank = np.arange(len(item)) - np.repeat(starts, np.diff(np.r_[starts, len(item)])) + 1
        ids = self.data.item_ids
        return pa.table(
            {
                "item_id": pa.array(ids[item].tolist(), pa.string()),
                "rank": pa.array(rank.astype(np.int32), pa.int32()),
                "similar_item_id": pa.array(ids[similar].tolist(), pa.string()),
                "score": pa.array(score.astype(np.float64), pa.float64()),
            },
            schema=SIMILAR_SCHEMA,
        )

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the model to ``directory``: ``config.json``, ``interactions.npz``, one
        ``source-NAME.npz`` per source, ``items.npz`` and ``ranker.txt`` (LightGBM text)."""
        fitted = self.fitted
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_VERSION,
            "config": self.config.to_json(),
            "info": self.info,
            "ranker": self.ranker.kind,
            "ranker_training": self.ranker.train_info,
            "own_policy": self.own_policy.as_dict(),
        }
        fitted.data.save(directory / "interactions.npz")
        for name, src in fitted.sources.items():
            _savez(directory / f"source-{name}.npz", src.state())
        _savez(directory / "items.npz", fitted.stats.arrays())
        text = self.ranker.model_text()
        ranker_path = directory / "ranker.txt"
        if text is not None:
            ranker_path.write_text(text)
        elif ranker_path.exists():
            ranker_path.unlink()
        (directory / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> Recommender:
        """Read a model written by :meth:`save` (no pickle anywhere)."""
        meta = json.loads((directory / "config.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {meta.get('format')!r} in {directory}")
        rec = cls(RecommenderConfig.from_json(meta["config"]))
        data = Interactions.load(directory / "interactions.npz")
        sources = {
            name: src
            for name, src in _make_sources(rec.config).items()
            if (directory / f"source-{name}.npz").exists()
        }
        for name, src in sources.items():
            with np.load(directory / f"source-{name}.npz", allow_pickle=False) as npz:
                src.load_state({k: npz[k] for k in npz.files})
        with np.load(directory / "items.npz", allow_pickle=False) as npz:
            stats = ItemStats(
                popularity=npz["popularity"],
                buyers=npz["buyers"],
                rebuy_share=npz["rebuy_share"],
                band=npz["band"],
            )
        ranker_path = directory / "ranker.txt"
        rec.ranker.load_text(ranker_path.read_text() if ranker_path.exists() else None)
        rec.ranker.train_info = meta.get("ranker_training", {})
        rec.own_policy = OwnHistory(**meta.get("own_policy", {}))
        rec._fitted = Fitted(data, sources, stats)
        rec.info = meta.get("info", {})
        return rec


def _fitted_on(model: Recommender | None, history: Interactions) -> Fitted | None:
    """``model``'s sources when it was fitted, with every source, on interactions of the same
    members, items and rows as ``history`` (else None: they must be fitted anew)."""
    fitted = model._fitted if model is not None else None
    if fitted is None or set(fitted.sources) != set(SOURCES):
        return None
    data = fitted.data
    same = (
        data.n_members == history.n_members
        and data.n_items == history.n_items
        and data.unit == history.unit
        and np.array_equal(data.member, history.member)
        and np.array_equal(data.item, history.item)
        and np.array_equal(data.kind, history.kind)
        and np.array_equal(data.group, history.group)
        and np.array_equal(data.ts, history.ts)
        and np.array_equal(data.now, history.now)
    )
    return fitted if same else None


def _savez(path: Path, arrays: dict[str, Any]) -> None:
    """``numpy.savez`` of named arrays (typed wrapper)."""
    np.savez(path, **arrays)


def _rank_within(pos: IntArray) -> IntArray:
    """0-based position of each row within its run of equal ``pos`` (rows sorted by pos)."""
    if len(pos) == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
    return np.arange(len(pos)) - np.repeat(starts, np.diff(np.r_[starts, len(pos)]))


def _normalized_by_member(pos: IntArray, score: FloatArray, n_pos: int) -> FloatArray:
    best = np.zeros(n_pos)
    if len(pos):
        np.maximum.at(best, pos, score)
    return np.divide(score, best[pos], out=np.zeros_like(score), where=best[pos] > 0)


def _period(days: float) -> str:
    """``3 days``, ``week``, ``2 weeks``, ``month``, ``3 months``: an interval in words."""
    if days < 1.5:
        return "day"
    if days < 6:
        return f"{round(days)} days"
    if days < 52.5:
        weeks = round(days / 7)
        return "week" if weeks == 1 else f"{weeks} weeks"
    months = round(days / 30)
    return "month" if months == 1 else f"{months} months"


def _fill(ranked: Ranked, n_members: int, n: int, fallback: IntArray) -> Ranked:
    """Top up every member's list to ``n`` with the popular fallback (unknown members get
    only that), below the member's last score."""
    counts = np.bincount(ranked.pos, minlength=n_members)
    short = np.flatnonzero(counts < n)
    if len(short) == 0 or len(fallback) == 0:
        return ranked
    pos = np.repeat(short, len(fallback))
    item = np.tile(fallback, len(short))
    have = np.isin(pos * (1 << 32) + item, ranked.pos * (1 << 32) + ranked.item)
    pos, item = pos[~have], item[~have]
    floor = np.full(n_members, 0.0)
    if len(ranked.pos):
        floor[:] = np.inf
        np.minimum.at(floor, ranked.pos, ranked.score)
        floor[np.isinf(floor)] = 0.0
    step = np.tile(np.arange(len(fallback), dtype=np.float64), len(short))[~have]
    score = floor[pos] - 1.0 - step * 1e-3
    pop = SOURCES.index("popular")
    extra = Ranked(
        pos,
        item,
        score,
        np.full(len(pos), pop, np.int64),
        np.full(len(pos), -1, np.int64),
        np.zeros(len(pos)),
    )
    both = Ranked(
        *(
            np.concatenate([getattr(ranked, f), getattr(extra, f)])
            for f in Ranked.__dataclass_fields__
        )
    )
    cand = Candidates(both.pos, both.item, both.score, np.arange(len(both.pos)), both.arg2)
    top = top_per_member(cand, n)
    idx = top.arg
    return Ranked(top.pos, top.item, top.score, both.source[idx], both.arg[idx], both.arg2[idx])


def _insert_early_access(
    pos: IntArray,
    item_ids: StrArray,
    score: FloatArray,
    src: StrArray,
    reasons: StrArray,
    early: list[str],
    eligible: np.ndarray[Any, np.dtype[np.bool_]],
    n: int,
    position: int,
) -> tuple[IntArray, StrArray, FloatArray, StrArray, StrArray]:
    """Insert the early-access items at ``position`` (1-based) of eligible members' lists."""
    early_arr = np.asarray(early, np.str_)
    # Drop early-access items already in an eligible member's list, then re-rank.
    drop = eligible[pos] & np.isin(item_ids, early_arr)
    keep = ~drop
    pos, item_ids, score = pos[keep], item_ids[keep], score[keep]
    src, reasons = src[keep], reasons[keep]
    starts = np.searchsorted(pos, np.arange(len(eligible) + 1))
    rank = np.arange(len(pos)) - np.repeat(starts[:-1], np.diff(starts))  # 0-based
    slot = max(position - 1, 0)
    members = np.flatnonzero(eligible)
    e_pos = np.repeat(members, len(early_arr))
    counts = np.diff(starts)
    at = np.minimum(slot, counts[e_pos])
    e_order = np.tile(np.arange(len(early_arr)), len(members)).astype(np.float64)
    # Sort key: existing rows at rank r (shifted past the slot), inserted rows at the slot.
    key = np.where(eligible[pos] & (rank >= slot), rank + len(early_arr), rank).astype(float)
    e_key = at + e_order
    # Score of an inserted row: the score of the row it displaces (lists stay non-increasing).
    disp = starts[e_pos] + np.minimum(at, np.maximum(counts[e_pos] - 1, 0))
    e_score = np.where(counts[e_pos] > 0, score[np.minimum(disp, max(len(score) - 1, 0))], 0.0)
    all_pos = np.concatenate([pos, e_pos])
    all_key = np.concatenate([key, e_key])
    order = np.lexsort((all_key, all_pos))
    out_pos = all_pos[order]
    out_item = np.concatenate([item_ids, np.tile(early_arr, len(members))])[order]
    out_score = np.concatenate([score, e_score if len(score) else np.zeros(len(e_pos))])[order]
    out_src = np.concatenate([src, np.full(len(e_pos), "early_access")]).astype(np.str_)[order]
    out_reason = np.concatenate(
        [reasons, np.full(len(e_pos), "early access for your tier")]
    ).astype(np.str_)[order]
    st = np.searchsorted(out_pos, np.arange(len(eligible) + 1))
    within = np.arange(len(out_pos)) - np.repeat(st[:-1], np.diff(st))
    keep = within < n
    return (
        out_pos[keep],
        out_item[keep],
        out_score[keep],
        out_src[keep],
        out_reason[keep],
    )
