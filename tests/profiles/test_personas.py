"""Personas: k-means finds the clusters that are there, numbers them the same way every time,
describes them in words, and never crashes on a degenerate table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import silhouette_score  # type: ignore[import-untyped]

from memberwise.profiles.fields import FIELD_TYPES
from memberwise.profiles.personas import (
    DEFAULT_FEATURES,
    LOG_FIELDS,
    NULL_IS_MAX,
    NULL_IS_MEAN,
    fit_personas,
    silhouettes,
)
from memberwise.profiles.rules import FieldType

# Ratio fields: used as they are (no log), so the blobs below keep their shape.
BLOB_FIELDS = ("share_events_22_to_02", "share_events_weekend", "view_to_purchase_90d")
#: Blob centres (in BLOB_FIELDS order) and sizes; the sizes differ so the ids are by size.
CENTRES = ((0.8, 0.2, 0.1), (0.2, 0.8, 0.1), (0.2, 0.2, 0.6), (0.7, 0.7, 0.5))
SIZES = (400, 300, 200, 100)


def blobs(seed: int, *, sd: float = 0.03) -> tuple[pa.Table, list[int]]:
    """Members drawn around :data:`CENTRES`, shuffled; and each member's blob."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(SIZES)), SIZES)
    rng.shuffle(truth)
    values = np.array(CENTRES)[truth] + rng.normal(0.0, sd, (len(truth), len(BLOB_FIELDS)))
    data: dict[str, object] = {"member_id": [f"m{i:04d}" for i in range(len(truth))]}
    for j, name in enumerate(BLOB_FIELDS):
        data[name] = values[:, j]
    return pa.table(data), truth.tolist()


def persona_of(result_table: pa.Table) -> dict[str, int]:
    rows = result_table.to_pydict()
    return dict(zip(rows["member_id"], rows["persona"], strict=True))


def test_default_features_are_numeric_catalog_fields() -> None:
    assert len(DEFAULT_FEATURES) == 11
    assert len(set(DEFAULT_FEATURES)) == 11
    assert all(FIELD_TYPES[name] is FieldType.number for name in DEFAULT_FEATURES)
    assert "recency_days" not in DEFAULT_FEATURES  # lifecycle, not behaviour: see the docstring
    assert set(FIELD_TYPES) >= LOG_FIELDS
    assert set(FIELD_TYPES) >= NULL_IS_MAX
    assert set(FIELD_TYPES) >= NULL_IS_MEAN
    assert {"events_90d", "spend_365d", "lifetime_spend", "tenure_days"} <= LOG_FIELDS
    assert not LOG_FIELDS & {"share_events_weekend", "refund_rate_365d", "price_band"}


def test_finds_the_blobs_and_numbers_them_by_size() -> None:
    # given four well-separated blobs of 400, 300, 200 and 100 members
    table, truth = blobs(1)
    # when personas are fitted over k = 2..8
    result = fit_personas(table, fields=BLOB_FIELDS, k_min=2, k_max=8, names={1: "weekenders"})
    # then k is 4, the best silhouette, and persona i is blob i (the i-th largest)
    assert result.k == 4
    assert sorted(result.silhouette) == [2, 3, 4, 5, 6, 7, 8]
    assert max(result.silhouette, key=lambda k: result.silhouette[k]) == 4
    assert result.silhouette[4] > 0.8
    assert [c.size for c in result.clusters] == [400, 300, 200, 100]
    assert [c.id for c in result.clusters] == [0, 1, 2, 3]
    assert [c.name for c in result.clusters] == [None, "weekenders", None, None]
    got = persona_of(result.assignments)
    assert [got[f"m{i:04d}"] for i in range(len(truth))] == truth
    # the assignments keep the input's rows and are typed for the build's tables
    assert result.assignments.schema == pa.schema(
        [("member_id", pa.string()), ("persona", pa.int32())]
    )
    assert result.assignments["member_id"].equals(table["member_id"])


def test_descriptions_name_the_features_that_set_a_cluster_apart() -> None:
    table, _ = blobs(1)
    result = fit_personas(table, fields=BLOB_FIELDS, k_min=4, k_max=4)
    night = result.clusters[0]  # blob 0: night-heavy, weekend-light, low conversion
    assert [f for f, _ in night.top_features] == [
        "share_events_22_to_02",
        "share_events_weekend",
        "view_to_purchase_90d",
    ]
    signs = [np.sign(z) for _, z in night.top_features]
    assert signs == [1, -1, -1]
    assert night.description.startswith("share_events_22_to_02 +")
    assert "σ" in night.description
    assert set(night.profile) == set(BLOB_FIELDS)
    assert night.as_dict()["top_features"][0]["field"] == "share_events_22_to_02"


def test_exact_small_example() -> None:
    # given 4 members at night (1, 0) and 2 at weekends (0, 1): p = 2/3, sd = sqrt(2)/3,
    # so the z-scores are ±sqrt(1/2) = ±0.71 for the four and ∓sqrt(2) = ∓1.41 for the two
    fields = ("share_events_22_to_02", "share_events_weekend")
    table = pa.table(
        {
            "member_id": ["a", "b", "c", "d", "e", "f"],
            "share_events_22_to_02": [1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
            "share_events_weekend": [0.0, 1.0, 0.0, 0.0, 1.0, 0.0],
        }
    )
    result = fit_personas(table, fields=fields, k_min=2, k_max=3, names={0: "night owls"})
    # then only k = 2 can be tried (two distinct rows), and it separates them perfectly
    assert result.k == 2
    assert result.silhouette == {2: 1.0}
    assert persona_of(result.assignments) == {"a": 0, "b": 1, "c": 0, "d": 0, "e": 1, "f": 0}
    assert [c.as_dict() for c in result.clusters] == [
        {
            "id": 0,
            "name": "night owls",
            "size": 4,
            "description": "share_events_22_to_02 +0.7σ, share_events_weekend -0.7σ",
            "top_features": [
                {"field": "share_events_22_to_02", "z": 0.71},
                {"field": "share_events_weekend", "z": -0.71},
            ],
        },
        {
            "id": 1,
            "name": None,
            "size": 2,
            "description": "share_events_22_to_02 -1.4σ, share_events_weekend +1.4σ",
            "top_features": [
                {"field": "share_events_22_to_02", "z": -1.41},
                {"field": "share_events_weekend", "z": 1.41},
            ],
        },
    ]


def test_ids_do_not_depend_on_row_order_or_on_a_rebuild_of_similar_data() -> None:
    table, truth = blobs(1)
    first = persona_of(fit_personas(table, fields=BLOB_FIELDS, k_min=2, k_max=6).assignments)
    # the same members in another order
    shuffled = table.take(pa.array(np.random.default_rng(5).permutation(table.num_rows)))
    again = persona_of(fit_personas(shuffled, fields=BLOB_FIELDS, k_min=2, k_max=6).assignments)
    assert again == first
    # a rebuild on fresh data from the same behaviour keeps each blob's id
    fresh, fresh_truth = blobs(2)
    rebuilt = persona_of(fit_personas(fresh, fields=BLOB_FIELDS, k_min=2, k_max=6).assignments)
    assert [rebuilt[f"m{i:04d}"] for i in range(len(fresh_truth))] == fresh_truth
    assert [first[f"m{i:04d}"] for i in range(len(truth))] == truth


def test_same_seed_same_result_and_sample_bounds_the_fit() -> None:
    table, truth = blobs(3)
    one = fit_personas(table, fields=BLOB_FIELDS, k_min=2, k_max=6, seed=7, sample=300)
    two = fit_personas(table, fields=BLOB_FIELDS, k_min=2, k_max=6, seed=7, sample=300)
    assert one.silhouette == two.silhouette
    assert one.assignments.equals(two.assignments)
    # a 300-member sample still finds the four blobs, and every member is assigned
    assert one.k == 4
    assert one.assignments.num_rows == len(truth)


def test_assign_puts_members_where_the_fit_did() -> None:
    table, _ = blobs(4)
    result = fit_personas(table, fields=BLOB_FIELDS, k_min=2, k_max=6)
    reordered = table.take(pa.array(np.arange(table.num_rows)[::-1]))
    assert persona_of(result.assign(reordered)) == persona_of(result.assignments)
    newcomer = pa.table(
        {
            "member_id": ["new"],
            "share_events_22_to_02": [0.75],
            "share_events_weekend": [None],  # null -> 0, as in the fit
            "view_to_purchase_90d": [0.1],
        }
    )
    assert persona_of(result.assign(newcomer)) == {"new": 0}


def test_nulls_counts_and_never_values_are_filled_and_scaled() -> None:
    table = pa.table(
        {
            "member_id": ["a", "b", "c", "d"],
            "events_90d": pa.array([None, 0, 9, 99], pa.int64()),
            "recency_days": pa.array([1, 10, None, 3], pa.int64()),
            "price_band": pa.array([1, 3, None, 5], pa.int64()),
            "refund_rate_365d": pa.array([None, None, None, None], pa.float64()),
        }
    )
    fields = ("events_90d", "recency_days", "price_band", "refund_rate_365d")
    result = fit_personas(table, fields=fields, k_min=2, k_max=2)
    # null events -> 0; null recency (never bought) -> the largest, 10; null band -> mean, 3;
    # an all-null rate -> 0 everywhere (a constant column, scale 1)
    assert result.fill.tolist() == [0.0, 10.0, 3.0, 0.0]
    z = result.transform(table)
    logged = np.log1p([0.0, 0.0, 9.0, 99.0])  # counts and day spans are log1p'd
    expected_events = (logged - logged.mean()) / logged.std()
    assert z[:, 0] == pytest.approx(expected_events)
    days = np.log1p([1.0, 10.0, 10.0, 3.0])
    assert z[:, 1] == pytest.approx((days - days.mean()) / days.std())
    band = np.array([1.0, 3.0, 3.0, 5.0])
    assert z[:, 2] == pytest.approx((band - 3.0) / band.std())
    assert z[:, 3].tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_fewer_members_than_k_min_plus_one_is_one_persona(n: int) -> None:
    table = pa.table(
        {
            "member_id": pa.array([f"m{i}" for i in range(n)], pa.string()),
            "events_90d": pa.array(list(range(n)), pa.int64()),
        }
    )
    result = fit_personas(table, fields=["events_90d"], k_min=3, k_max=5)
    assert result.silhouette == {}
    assert result.assignments.num_rows == n
    assert set(result.assignments["persona"].to_pylist()) <= {0}
    if n == 0:
        assert (result.k, result.clusters) == (0, ())
    else:
        assert result.k == 1
        assert [(c.id, c.size) for c in result.clusters] == [(0, n)]


def test_identical_rows_are_one_persona() -> None:
    table = pa.table(
        {
            "member_id": [f"m{i}" for i in range(50)],
            "events_90d": [7] * 50,
            "share_events_weekend": [0.5] * 50,
        }
    )
    result = fit_personas(table, fields=["events_90d", "share_events_weekend"], k_min=2, k_max=8)
    assert (result.k, result.silhouette) == (1, {})
    assert result.clusters[0].size == 50
    assert result.clusters[0].description == "close to the average on every feature"
    assert result.clusters[0].top_features == ()
    assert set(result.assignments["persona"].to_pylist()) == {0}


def test_too_few_distinct_rows_for_k_min_is_one_persona() -> None:
    table = pa.table({"member_id": [f"m{i}" for i in range(20)], "events_90d": [1, 50] * 10})
    result = fit_personas(table, fields=["events_90d"], k_min=3, k_max=8)
    assert result.k == 1
    # ... but two distinct rows and k_min = 2 is two personas of 10
    two = fit_personas(table, fields=["events_90d"], k_min=2, k_max=8)
    assert (two.k, [c.size for c in two.clusters], two.silhouette) == (2, [10, 10], {2: 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": [], "k_min": 2, "k_max": 3}, "at least one feature"),
        ({"fields": ["events_90d", "events_90d"], "k_min": 2, "k_max": 3}, "listed twice"),
        ({"fields": ["events_90d"], "k_min": 1, "k_max": 3}, "2 <= k_min <= k_max"),
        ({"fields": ["events_90d"], "k_min": 4, "k_max": 3}, "2 <= k_min <= k_max"),
        ({"fields": ["events_90d"], "k_min": 2, "k_max": 3, "sample": 1}, "sample"),
        ({"fields": ["views_90d"], "k_min": 2, "k_max": 3}, r"lacks columns \['views_90d'\]"),
        ({"fields": ["region"], "k_min": 2, "k_max": 3}, "'region' is not numeric"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    table = pa.table({"member_id": ["a"], "events_90d": [1], "region": ["浙江"]})
    with pytest.raises(ValueError, match=message):
        fit_personas(table, **kwargs)  # type: ignore[arg-type]


def test_silhouettes_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 4)) + rng.integers(0, 3, 700)[:, None] * 2.0
    labelings = {
        2: (x[:, 0] > 2).astype(np.int64),
        3: rng.integers(0, 3, 700),
        4: np.r_[np.zeros(699, dtype=np.int64), 1],  # a singleton cluster scores 0
    }
    labelings[4][:5] = [2, 2, 3, 3, 3]
    got = silhouettes(x, labelings)
    for key, labels in labelings.items():
        assert got[key] == pytest.approx(silhouette_score(x, labels), abs=1e-5)


def test_silhouettes_of_one_cluster_or_all_singletons_score_minus_one() -> None:
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    ones = np.zeros(4, dtype=np.int64)
    alone = np.arange(4, dtype=np.int64)
    assert silhouettes(x, {1: ones, 4: alone}) == {1: -1.0, 4: -1.0}


_value = st.one_of(st.none(), st.integers(0, 5).map(float))


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(st.tuples(_value, _value, _value), min_size=0, max_size=40),
    k_min=st.integers(2, 4),
)
def test_any_table_gives_every_member_exactly_one_persona(
    rows: Sequence[tuple[float | None, ...]], k_min: int
) -> None:
    fields = ("events_90d", "price_band", "share_events_weekend")
    table = pa.table(
        {
            "member_id": pa.array([f"m{i:03d}" for i in range(len(rows))], pa.string()),
            **{name: pa.array([r[j] for r in rows], pa.float64()) for j, name in enumerate(fields)},
        }
    )
    result = fit_personas(table, fields=fields, k_min=k_min, k_max=k_min + 2)
    personas = result.assignments["persona"].to_pylist()
    assert result.assignments["member_id"].to_pylist() == [f"m{i:03d}" for i in range(len(rows))]
    assert all(0 <= p < result.k for p in personas)
    sizes = [c.size for c in result.clusters]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes == [personas.count(i) for i in range(result.k)]
    assert result.k in ({0} if not rows else {1, *range(k_min, k_min + 3)})
