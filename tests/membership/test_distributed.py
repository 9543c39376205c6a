"""The Spark path's pieces on the embedded engine: the store's tiers streamed to Parquet and the
per-batch evaluation give exactly the embedded evaluation's rows, on SQLite and PostgreSQL.

Every rule is exercised (new, upgrade, renewal, downgrade past grace, a notice within grace,
protection days, a lapsed manual grant, a lasting one, an invitation tier, a tier the program
dropped, join-date anniversaries, points from the ledger in a window and since the last
change), and the batches are small so a period or a notice computed per batch must agree with
the whole.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memberwise.kit.db import transaction
from memberwise.kit.warehouse import open_backend
from memberwise.ledger import orders
from memberwise.membership import distributed, stage, store_export
from memberwise.membership.tables import member_tiers
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime
from tests.ledger.factories import add_members, order

AS_OF = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
PROGRAM = """name: d
points: {unit: 100, per_unit: 1, pending_days: 7}
score:
  parts: [{name: spend, field: spend_365d, weight: 0.01, max: 100000}]
tiers:
  - {name: member}
  - name: silver
    qualify: [{points_earned: 150, window_days: 365}]
    validity: {anchor: join_date}
  - name: gold
    qualify: [{score: 1000}, {points_earned: 300, since_tier_change: true}]
    validity: {days: 365, anchor: tier_start}
    downgrade: one_step
    grace_days: 30
    notice_days: 30
  - name: platinum
    qualify: [{score: 5000}]
    validity: {anchor: yearly, cycle_start: "01-01"}
    downgrade: to_qualifying
    protection_days: 90
  - {name: black, invitation: true}
black_card:
  tier: black
  criteria: "spend_365d >= 500000"
  ranking: [{field: spend_365d, weight: 1}]
  quota: {count: 2}
"""
DAY = timedelta(days=1)
# (member, spend_365d, stored tier, source, since, until)
STORED: list[tuple[str, int, str | None, str, datetime | None, datetime | None]] = [
    ("m00", 0, None, "auto", None, None),  # new: enters member
    ("m01", 0, "gold", "auto", AS_OF - 400 * DAY, AS_OF - 35 * DAY),  # past grace: down
    ("m02", 0, "gold", "auto", AS_OF - 380 * DAY, AS_OF - 15 * DAY),  # in grace: notice
    ("m03", 0, "platinum", "auto", AS_OF - 30 * DAY, AS_OF - DAY),  # protected: kept
    ("m04", 0, "platinum", "manual", AS_OF - 60 * DAY, AS_OF - DAY),  # lapsed grant
    ("m05", 0, "gold", "manual", AS_OF - 60 * DAY, None),  # lasting grant
    ("m06", 0, "black", "invitation", AS_OF - 10 * DAY, None),  # invitation
    ("m07", 600_000, "diamond", "auto", AS_OF - 10 * DAY, None),  # dropped tier: afresh
    ("m08", 200_000, "gold", "auto", AS_OF - 366 * DAY, AS_OF - DAY),  # renewed
    ("m09", 600_000, "member", "auto", AS_OF - 100 * DAY, None),  # upgrade to platinum
    ("m10", 0, "member", "auto", AS_OF - 100 * DAY, None),  # points: up to silver
    ("m11", 150_000, "silver", "auto", AS_OF - 500 * DAY, AS_OF - 2 * DAY),  # up to gold
    ("m12", 0, "member", "auto", AS_OF - 5 * DAY, None),  # kept
    ("m13", 0, "member", "auto", AS_OF - 50 * DAY, None),  # points since the change: gold
    ("m14", 0, "member", "auto", AS_OF - 2 * DAY, None),  # earned before the change: silver
]


def seed(runtime: Runtime, program: Program) -> None:
    with transaction(runtime.engine) as conn:
        add_members(conn, *[m for m, *_ in STORED])
        conn.execute(
            member_tiers.insert(),
            [
                {
                    "member_id": m,
                    "tier": tier,
                    "source": source,
                    "since": since,
                    "until": until,
                    "score": 0,
                    "details": "{}",
                    "build_id": "old",
                    "updated_at": AS_OF - 5 * DAY,
                }
                for m, _, tier, source, since, until in STORED
                if tier is not None
            ],
        )
        placed = AS_OF - 3 * DAY
        orders.place(conn, program, order("o-10", "m10", price=20_000, at=placed))
        for member in ("m13", "m14"):  # 400 points each, 10 days ago
            earlier = AS_OF - 10 * DAY
            orders.place(conn, program, order(f"o-{member}", member, price=40_000, at=earlier))


@pytest.mark.parametrize("batch", [1, 4])
def test_batches_from_the_exported_store_give_the_embedded_rows(
    runtime: Runtime, tmp_path: Path, batch: int
) -> None:
    program = parse_program(PROGRAM)
    seed(runtime, program)
    profiles = pa.table(
        {
            "member_id": [m for m, *_ in STORED],
            "spend_365d": pa.array([s for _, s, *_ in STORED], pa.int64()),
            "orders_365d": pa.array([s // 50_000 for _, s, *_ in STORED], pa.int64()),
        }
    )
    pq.write_table(profiles, tmp_path / "profiles.parquet")
    with open_backend("duckdb", temp_dir=tmp_path / "tmp") as con:
        table = con.read_parquet(str(tmp_path / "profiles.parquet"))
        embedded, _, _ = stage.evaluate_members(
            con, runtime.engine, table, None, program, as_of=AS_OF
        )
        files = store_export.export_state(runtime.engine, program, tmp_path / "work")
        exported = store_export.export_points(runtime.engine, program, tmp_path / "work", AS_OF)
        points = distributed.points_tables(con, program, files["state"], exported)
        inputs = stage.member_inputs_expr(table, None, program, as_of=AS_OF, since=None)
        joined = con.to_pyarrow(distributed.with_state(con, inputs, files, points))
    assert set(files) == {"state", "joined"}  # a tier is anchored on the join date
    assert set(exported) == {"points_365d", "points_since_change"}
    assert pq.read_table(files["state"]).num_rows == len(STORED) - 1
    parts = [
        distributed.evaluate_batch(program, joined.slice(i, batch), AS_OF)
        for i in range(0, joined.num_rows, batch)
    ]
    batched = pa.concat_tables(parts).sort_by("member_id")
    expected = embedded.sort_by("member_id")

    assert batched.schema == expected.schema == stage.TIERS_SCHEMA
    assert batched.to_pylist() == expected.to_pylist()
    # The cases are what the comments above say (the rules were exercised, not skipped).
    got = {r["member_id"]: (r["tier"], r["change"]) for r in expected.to_pylist()}
    assert got == {
        "m00": ("member", "initial"),
        "m01": ("silver", "downgrade"),
        "m02": ("gold", "kept"),
        "m03": ("platinum", "kept"),
        "m04": ("member", "downgrade"),
        "m05": ("gold", "kept"),
        "m06": ("black", "kept"),
        "m07": ("platinum", "initial"),
        "m08": ("gold", "renewed"),
        "m09": ("platinum", "upgrade"),
        "m10": ("silver", "upgrade"),
        "m11": ("gold", "upgrade"),
        "m12": ("member", "kept"),
        "m13": ("gold", "upgrade"),
        "m14": ("silver", "upgrade"),
    }
    noticed = {r["member_id"] for r in expected.to_pylist() if '"notice":{' in r["details"]}
    assert noticed == {"m02"}


def test_the_export_streams_in_chunks(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of EXPORT_ROWS rows: the file holds every stored tier, written chunk by chunk."""
    program = parse_program(PROGRAM)
    seed(runtime, program)
    monkeypatch.setattr(store_export, "EXPORT_ROWS", 5)
    files = store_export.export_state(runtime.engine, program, tmp_path)
    metadata = pq.ParquetFile(files["state"]).metadata

    assert metadata.num_rows == len(STORED) - 1
    assert metadata.num_row_groups == 3  # 14 rows in chunks of 5
    rows = {r["member_id"]: r for r in pq.read_table(files["state"]).to_pylist()}
    assert rows["m04"]["stored_source"] == "manual"
    assert rows["m04"]["stored_until"] == int((AS_OF - DAY).timestamp()) * 1_000_000
    assert rows["m05"]["stored_until"] is None
    # The ledger's points stream the same way: one earned lot per order, in chunks of 2.
    monkeypatch.setattr(store_export, "EXPORT_ROWS", 2)
    points = store_export.export_points(runtime.engine, program, tmp_path, AS_OF)
    lots = pq.ParquetFile(points["points_since_change"])
    assert (lots.metadata.num_rows, lots.metadata.num_row_groups) == (3, 2)
    earned = {r["member_id"]: r for r in lots.read().to_pylist()}
    assert earned["m13"]["points"] == 400
    assert earned["m13"]["earned_us"] == int((AS_OF - 10 * DAY).timestamp()) * 1_000_000
    window = pq.read_table(points["points_365d"]).sort_by("member_id").to_pylist()
    assert window == [
        {"member_id": "m10", "points": 200},
        {"member_id": "m13", "points": 400},
        {"member_id": "m14", "points": 400},
    ]
