"""Personas: groups of members who shop alike, found by k-means on their behaviour fields.

Segments say *where* a member is in their lifecycle; personas say *how* they shop (night-time
browsers, frequent cheap buyers, big-basket spenders...). A build fits them with
:func:`fit_personas` on the profiles' numeric fields; operators name the clusters in the program
(``personas.names``) once they have read the descriptions.

The method, step by step (``docs/profiles.md`` says the same to operators):

1. **Fill nulls.** A null count, share or rate is 0 (no events, no purchases). Two kinds of field
   would be distorted by 0: ``recency_days`` / ``days_since_last_seen`` are null for "never",
   which is the *largest* value, not the smallest (:data:`NULL_IS_MAX`); ``price_band`` and the
   other 1-5 or clock-like fields are null for "does not apply", so they get the column's mean
   and say nothing either way (:data:`NULL_IS_MEAN`).
2. **log1p** the counts, money and day spans (:data:`LOG_FIELDS`): they are heavy-tailed, and
   without the log one whale would be a cluster and everyone else another. Negative values are
   clipped to 0 first. Shares, rates, bands and scores are used as they are.
3. **Standardize** every column to mean 0 and standard deviation 1 over all members (a constant
   column stays 0), so that each field weighs the same in the distance.
4. **Choose k** in ``[k_min, k_max]`` by the silhouette score of a k-means fit on a seeded sample
   of at most ``sample`` members (silhouette is O(n²), so never on all members). The largest
   score wins; a tie goes to the smaller k.
5. **Fit** k-means for that k on the sample (fixed seed, :data:`N_INIT` restarts, Lloyd), then
   **assign** every member to the nearest centre (one matrix product: ~0.1 s a million).
6. **Order** the clusters by size, largest first (ties by centre), so that the ids, and the names
   operators attach to them, stay put across rebuilds of similar data.

The sample is drawn from the members in ``member_id`` order, so the result does not depend on
the input's row order; the assignments keep the input's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.profiles.fields import WINDOW_COUNTS, WINDOWS

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The default behaviour features (catalog names). They describe *how* a member shops:
#: intensity (events, active days), buying (purchases, spend, conversion), breadth (categories),
#: focus (top category affinity), price level, refunds, and rhythm (night, weekend). Lifecycle
#: fields (``recency_days``, ``tenure_days``) are left out on purpose: the segments cover them,
#: and a member's recency changes every day, so with it personas would drift between rebuilds.
DEFAULT_FEATURES: tuple[str, ...] = (
    "events_90d",
    "active_days_90d",
    "purchases_90d",
    "spend_365d",
    "view_to_purchase_90d",
    "distinct_categories_90d",
    "top_category_affinity",
    "price_band",
    "refund_rate_365d",
    "share_events_22_to_02",
    "share_events_weekend",
)
#: Counts, money and day spans: heavy-tailed, so they are log1p-transformed.
LOG_FIELDS: frozenset[str] = frozenset(
    {f"{stem}_{days}d" for stem in WINDOW_COUNTS for days in WINDOWS}
    | {
        "lifetime_events",
        "lifetime_orders",
        "lifetime_spend",
        "refund_amount_365d",
        "aov_365d",
        "tenure_days",
        "recency_days",
        "days_since_last_seen",
        "views_per_category_30d",
        "views_per_category_90d",
    }
)
#: Fields whose null means "never": filled with the largest value of the column.
NULL_IS_MAX: frozenset[str] = frozenset({"recency_days", "days_since_last_seen"})
#: Fields whose null means "does not apply" and whose 0 would be an extreme: filled with the mean.
NULL_IS_MEAN: frozenset[str] = frozenset(
    {"price_band", "avg_rating_365d", "credit_stars", "peak_hour", "peak_weekday"}
)
#: Rows of the distance matrix computed at once by :func:`silhouettes` (memory: 4 B x block x n).
_SILHOUETTE_BLOCK = 1024
#: k-means restarts per fit (the best inertia is kept).
N_INIT = 4
#: How many features a cluster's description names.
DESCRIBE_TOP = 3
#: Standardized means smaller than this are "average" and left out of descriptions.
DESCRIBE_MIN = 0.1


@dataclass(frozen=True)
class Cluster:
    """One persona: its id, member count, description, operator's name and mean profile.

    ``profile`` is the cluster's mean of each standardized feature (in standard deviations from
    all members' mean); ``top_features`` are the :data:`DESCRIBE_TOP` largest of them by size
    (at least :data:`DESCRIBE_MIN`), which ``description`` puts in words.
    """

    id: int
    size: int
    description: str
    name: str | None
    top_features: tuple[tuple[str, float], ...]
    profile: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """The cluster as a build manifest lists it (JSON-ready)."""
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "description": self.description,
            "top_features": [{"field": f, "z": z} for f, z in self.top_features],
        }


@dataclass(frozen=True)
class Personas:
    """The result of :func:`fit_personas`, and the model to assign members not seen in the fit.

    ``assignments`` has one row per member (``member_id``, ``persona`` int32) in the input's
    row order; ``silhouette`` is the score of each k tried (empty when there was nothing to
    choose); ``clusters`` are ordered by id.
    """

    assignments: pa.Table
    k: int
    silhouette: dict[int, float]
    clusters: tuple[Cluster, ...]
    fields: tuple[str, ...]
    fill: FloatArray = field(repr=False)
    mean: FloatArray = field(repr=False)
    scale: FloatArray = field(repr=False)
    centers: FloatArray = field(repr=False)

    def transform(self, features: pa.Table) -> FloatArray:
        """Standardized feature matrix of ``features``, with the fit's fill values and scale."""
        x = _matrix(features, self.fields)
        _prepare(x, self.fields, self.fill)
        return _standardize(x, self.mean, self.scale)

    def assign(self, features: pa.Table) -> pa.Table:
        """``member_id``, ``persona`` for members (new ones too) by their nearest centre."""
        persona = _nearest(self.transform(features), self.centers)
        return pa.table(
            {
                "member_id": features.column("member_id"),
                "persona": pa.array(persona, type=pa.int32()),
            }
        )


def fit_personas(
    features: pa.Table,
    *,
    fields: Sequence[str],
    k_min: int,
    k_max: int,
    seed: int = 0,
    sample: int = 20_000,
    names: Mapping[int, str] | None = None,
) -> Personas:
    """Cluster members into personas by k-means on their standardized behaviour features.

    Parameters
    ----------
    features
        ``member_id`` and the numeric ``fields``, one row per member (nulls allowed).
    fields
        The feature columns, e.g. :data:`DEFAULT_FEATURES`.
    k_min, k_max
        The range of cluster counts tried (``2 <= k_min <= k_max``).
    seed
        Seeds the sample and k-means: the same data and seed give the same personas.
    sample
        Members the silhouette score and the k-means fit use (at most).
    names
        Operator's names by cluster id (the program's ``personas.names``); ids not found get None.

    Returns
    -------
    Personas
        Assignments for every member, k, silhouette per k, and the clusters described.
        With fewer than ``k_min + 1`` members, or too few distinct rows for ``k_min`` clusters,
        everyone gets one persona (id 0) and ``silhouette`` is empty.
    """
    fields = tuple(fields)
    _check_arguments(features, fields, k_min, k_max, sample)
    ids = features.column("member_id")
    z = _matrix(features, fields)  # transformed in place below: one n x d matrix in memory
    fill = _fill_values(z, fields)
    _prepare(z, fields, fill)
    mean = z.mean(axis=0) if len(z) else np.zeros(len(fields))
    std = z.std(axis=0) if len(z) else np.ones(len(fields))
    # A constant column has no spread to standardize by: it stays 0 and plays no part.
    scale = np.where(std > 1e-12, std, 1.0)
    _standardize(z, mean, scale)

    n = len(z)
    # The sample is drawn from the members in member_id order, so the result does not depend
    # on the input's row order.
    by_member = pc.sort_indices(ids).to_numpy() if n else np.arange(0)
    rng = np.random.default_rng(seed)
    rows = by_member[np.sort(rng.choice(n, size=min(sample, n), replace=False))]
    fitted, scores = fit_centers(z[rows], n, k_min=k_min, k_max=k_max, seed=seed)
    centers = fitted
    if centers is None:
        centers = z.mean(axis=0, keepdims=True) if n else np.zeros((1, len(fields)))
    nearest = _nearest(z, centers)
    order = _cluster_order(nearest, centers)
    centers = centers[order]
    labels = np.argsort(order)[nearest].astype(np.int32)

    k = len(centers) if n else 0
    clusters = _describe(z, labels, k, fields, names or {})
    assignments = pa.table({"member_id": ids, "persona": pa.array(labels, type=pa.int32())})
    return Personas(
        assignments=assignments,
        k=k,
        silhouette=scores,
        clusters=clusters,
        fields=fields,
        fill=fill,
        mean=mean,
        scale=scale,
        centers=centers,
    )


def fit_centers(
    picked: FloatArray, n: int, *, k_min: int, k_max: int, seed: int
) -> tuple[FloatArray | None, dict[int, float]]:
    """k-means centres of the standardized sample ``picked`` (of ``n`` members in all) for
    the k in ``[k_min, k_max]`` with the best silhouette, and the score of each k tried;
    None when there are too few members or distinct rows for ``k_min`` clusters."""
    distinct = len(np.unique(picked, axis=0)) if n else 0
    ks = range(k_min, min(k_max, distinct, len(picked) - 1) + 1)
    if n < k_min + 1 or len(ks) == 0:
        return None, {}
    fits = {k: _kmeans(picked, k, seed) for k in ks}
    scores = silhouettes(picked, {k: labels for k, (_, labels) in fits.items()})
    best = max(ks, key=lambda k: (scores[k], -k))
    return fits[best][0], scores


def _check_arguments(
    features: pa.Table, fields: tuple[str, ...], k_min: int, k_max: int, sample: int
) -> None:
    if not fields:
        raise ValueError("fit_personas needs at least one feature")
    if len(set(fields)) != len(fields):
        raise ValueError(f"features are listed twice: {fields}")
    if not 2 <= k_min <= k_max:
        raise ValueError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if sample < 2:
        raise ValueError(f"sample must be at least 2, got {sample}")
    missing = [c for c in ("member_id", *fields) if c not in features.column_names]
    if missing:
        raise ValueError(f"features table lacks columns {missing}")
    for name in fields:
        kind = features.schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_decimal(kind) or pa.types.is_boolean(kind)
                or pa.types.is_null(kind)):  # fmt: skip
            raise ValueError(f"feature {name!r} is not numeric ({kind})")


def _matrix(table: pa.Table, fields: Sequence[str]) -> FloatArray:
    """The fields as an n x d float64 matrix, column-major (every step works a column at a
    time); null is NaN."""
    matrix = np.empty((table.num_rows, len(fields)), dtype=np.float64, order="F")
    for j, name in enumerate(fields):
        column = pc.cast(table.column(name), pa.float64())
        matrix[:, j] = column.to_numpy(zero_copy_only=False)
    return matrix


def _fill_values(raw: FloatArray, fields: Sequence[str]) -> FloatArray:
    """What a null (or NaN) becomes, per field (see :data:`NULL_IS_MAX`, :data:`NULL_IS_MEAN`)."""
    fill = np.zeros(len(fields))
    for j, name in enumerate(fields):
        if name not in NULL_IS_MAX | NULL_IS_MEAN:
            continue
        known = raw[:, j][np.isfinite(raw[:, j])]
        if len(known):
            fill[j] = known.max() if name in NULL_IS_MAX else known.mean()
    return fill


def _prepare(x: FloatArray, fields: Sequence[str], fill: FloatArray) -> None:
    """Fill nulls and log1p the counts, in place (before standardizing)."""
    for j, name in enumerate(fields):
        column = x[:, j]
        column[~np.isfinite(column)] = fill[j]
        if name in LOG_FIELDS:
            np.maximum(column, 0.0, out=column)
            np.log1p(column, out=column)


def _standardize(x: FloatArray, mean: FloatArray, scale: FloatArray) -> FloatArray:
    """``(x - mean) / scale``, in place; returns ``x``."""
    x -= mean
    x /= scale
    return x


def _kmeans(x: FloatArray, k: int, seed: int) -> tuple[FloatArray, IntArray]:
    # Imported here: scikit-learn takes ~1 s to import, and the API imports this module's
    # neighbours (programs, segments) without ever fitting.
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    # One thread: on a sample this size OpenMP's start-up and spinning cost 10-20x the work
    # (measured: 3.6 s with 2 threads, 0.16 s with 1 for 20,000 x 11, k=8), and one thread
    # also makes the result independent of the machine's core count.
    with threadpool_limits(limits=1):
        model = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed, algorithm="lloyd").fit(x)
    return np.asarray(model.cluster_centers_, dtype=np.float64), np.asarray(model.labels_)


def silhouettes(x: FloatArray, labelings: Mapping[int, IntArray]) -> dict[int, float]:
    """Mean silhouette coefficient of each labelling of the same rows (Rousseeuw 1987).

    The pairwise distances are the O(n²) part and do not depend on the labels, so they are
    computed once, a block of rows at a time, and every labelling's per-cluster distance sums
    come from one matrix product with the stacked one-hot label matrices. For 20,000 rows and
    six labellings this takes 1.5-3 s on two (shared) cores where calling scikit-learn's
    ``silhouette_score`` six times takes about 25. Conventions follow scikit-learn: a
    point alone in its cluster scores 0; fewer than 2 or more than n - 1 clusters score -1 here
    (scikit-learn raises) so that such a k is never chosen.
    """
    n = len(x)
    keys = list(labelings)
    valid = {key: 2 <= len(np.unique(labelings[key])) <= n - 1 for key in keys}
    use = [key for key in keys if valid[key]]
    scores = dict.fromkeys(keys, -1.0)
    if not use:
        return scores
    offsets = np.cumsum([0] + [int(labelings[key].max()) + 1 for key in use])
    onehot = np.zeros((n, int(offsets[-1])), dtype=np.float32)
    for key, start in zip(use, offsets[:-1], strict=False):
        onehot[np.arange(n), start + labelings[key]] = 1.0
    sizes = onehot.sum(axis=0, dtype=np.float64)
    # The n² distances are memory-bound, so: float32 (its error, ~1e-3 on a distance between
    # standardized rows, is far below what moves a mean silhouette), and |a|² - 2a·b + |b|² as
    # one matrix product of rows extended with their squared norms and ones, then in place.
    x32 = x.astype(np.float32)
    norms = (x32 * x32).sum(axis=1)[:, None]
    ones = np.ones((n, 1), dtype=np.float32)
    left = np.hstack([-2.0 * x32, norms, ones])
    right = np.ascontiguousarray(np.hstack([x32, ones, norms]).T)
    totals = dict.fromkeys(use, 0.0)
    for lo in range(0, n, _SILHOUETTE_BLOCK):
        distance = left[lo : lo + _SILHOUETTE_BLOCK] @ right
        np.maximum(distance, 0.0, out=distance)
        np.sqrt(distance, out=distance)
        sums = (distance @ onehot).astype(np.float64)  # rows x all clusters of all labellings
        rows = np.arange(len(distance))
        for key, start, stop in zip(use, offsets[:-1], offsets[1:], strict=False):
            own = labelings[key][lo : lo + len(distance)]
            own_size = sizes[start + own]
            # a: mean distance to the rest of the own cluster; b: to the nearest other cluster
            a = sums[rows, start + own] / np.maximum(own_size - 1.0, 1.0)
            mean = sums[:, start:stop] / sizes[start:stop]
            mean[rows, own] = np.inf
            b = mean.min(axis=1)
            s = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
            totals[key] += float(s.sum())
    for key in use:
        scores[key] = totals[key] / n
    return scores


def _nearest(z: FloatArray, centers: FloatArray) -> IntArray:
    """Index of the nearest centre of each row (squared Euclidean distance)."""
    if not len(z):
        return np.zeros(0, dtype=np.int64)
    # |z - c|² = |z|² - 2 z·c + |c|²; |z|² is the same for every centre of a row.
    distance = (centers * centers).sum(axis=1) - 2.0 * (z @ centers.T)
    return np.asarray(distance.argmin(axis=1), dtype=np.int64)


def _cluster_order(labels: IntArray, centers: FloatArray) -> IntArray:
    """Old cluster indices in their new order: by size descending, ties by centre."""
    sizes = np.bincount(labels, minlength=len(centers))
    keys = [(-int(sizes[i]), tuple(np.round(centers[i], 9))) for i in range(len(centers))]
    return np.array(sorted(range(len(centers)), key=lambda i: keys[i]), dtype=np.int64)


def _describe(
    z: FloatArray,
    labels: npt.NDArray[np.int32],
    k: int,
    fields: Sequence[str],
    names: Mapping[int, str],
) -> tuple[Cluster, ...]:
    sizes = np.bincount(labels, minlength=k)
    # Sum of each cluster's rows, a bincount per column (far faster than np.add.at).
    sums = np.array(
        [np.bincount(labels, weights=z[:, j], minlength=k) for j in range(len(fields))]
    ).T.reshape(k, len(fields))
    return describe_sums(sums, sizes, fields, names)


def describe_sums(
    sums: FloatArray, sizes: IntArray, fields: Sequence[str], names: Mapping[int, str]
) -> tuple[Cluster, ...]:
    """The clusters described from each one's member count and sum of standardized features
    (k x d): what :func:`fit_personas` reports, from aggregates a cluster engine can make."""
    k = len(sizes)
    clusters = []
    for i in range(k):
        means = sums[i] / max(int(sizes[i]), 1)
        profile = {name: round(float(means[j]), 4) for j, name in enumerate(fields)}
        # |z| rounded, so float noise does not reorder equal scores: ties keep field order.
        ranked = sorted(range(len(fields)), key=lambda j: (-round(abs(means[j]), 6), j))
        ranked = ranked[:DESCRIBE_TOP]
        top = tuple(
            (fields[j], round(float(means[j]), 2)) for j in ranked if abs(means[j]) >= DESCRIBE_MIN
        )
        words = ", ".join(f"{name} {z:+.1f}σ" for name, z in top)
        clusters.append(
            Cluster(
                id=i,
                size=int(sizes[i]),
                description=words or "close to the average on every feature",
                name=names.get(i),
                top_features=top,
                profile=profile,
            )
        )
    return tuple(clusters)
