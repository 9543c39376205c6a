"""The item catalog in the operational store: items put one at a time or imported from a
file (with their category tree), and read back as Arrow for the build's recommender."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection, RowMapping

from memberwise.kit.errors import InvalidRequest, NotFound
from memberwise.kit.time import utcnow
from memberwise.recommend import repository
from memberwise.recommend.schemas import ItemIn, ItemOut, ItemsImportResult

#: Rows read from or written to the store in one round trip (catalog import, publish, export).
BATCH = 10_000


class ItemNotFound(NotFound):
    code = "item_not_found"


class InvalidItems(InvalidRequest):
    code = "invalid_items"


ITEM_COLUMNS: tuple[str, ...] = tuple(ItemIn.model_fields)


def _item_out(row: RowMapping) -> ItemOut:
    return ItemOut.model_validate(dict(row))


def put_item(conn: Connection, item_id: str, item: ItemIn) -> ItemOut:
    """Store the item's full state (creating it if new); a replay changes nothing.

    Raises InvalidItems when ``item_id`` is empty or longer than 128 characters.
    """
    if not 0 < len(item_id) <= 128:
        raise InvalidItems("an item_id has 1 to 128 characters")
    row = {"item_id": item_id, **item.model_dump(), "updated_at": utcnow()}
    current = repository.existing_items(conn, [item_id]).get(item_id)
    if current is None or any(current[k] != row[k] for k in ITEM_COLUMNS):
        repository.upsert_items(conn, [row])
    stored = repository.get_item(conn, item_id)
    assert stored is not None
    return _item_out(stored)


def get_item(conn: Connection, item_id: str) -> ItemOut:
    """The stored item. Raises ItemNotFound."""
    row = repository.get_item(conn, item_id)
    if row is None:
        raise ItemNotFound(f"no item {item_id!r} in the catalog")
    return _item_out(row)


def _column(table: pa.Table, name: str, type_: pa.DataType) -> list[Any]:
    if name not in table.column_names:
        return [None] * table.num_rows
    values: list[Any] = pc.cast(table.column(name), type_).to_pylist()
    return values


def import_items(
    conn: Connection, table: pa.Table, *, categories: pa.Table | None = None
) -> ItemsImportResult:
    """Create or replace the items of ``table`` (column ``item_id`` and any of
    :data:`ITEM_COLUMNS`; ``consumable`` is true when ``rebuy_days`` is set and the column is
    absent). ``categories`` (``category_id``, ``parent_id``, ``name``) fills
    ``parent_category_id`` and the category names that reasons show.

    Raises InvalidItems when ``item_id`` is missing, empty or repeated, or a value does not
    convert (nothing is written then).
    """
    if "item_id" not in table.column_names:
        raise InvalidItems("the items file has no item_id column")
    try:
        ids = _column(table, "item_id", pa.string())
        parents = _column(table, "parent_category_id", pa.string())
        leaves = _column(table, "category_id", pa.string())
        if categories is not None and "parent_id" in categories.column_names:
            parent_of = dict(
                zip(
                    _column(categories, "category_id", pa.string()),
                    _column(categories, "parent_id", pa.string()),
                    strict=True,
                )
            )
            parents = [p or parent_of.get(c or "") for p, c in zip(parents, leaves, strict=True)]
        rebuy = _column(table, "rebuy_days", pa.int64())
        consumable = (
            _column(table, "consumable", pa.bool_())
            if "consumable" in table.column_names
            else [r is not None for r in rebuy]
        )
        launched = _column(table, "launched_at", pa.timestamp("us", tz="UTC"))
        columns = {
            "title": _column(table, "title", pa.string()),
            "category_id": leaves,
            "parent_category_id": parents,
            "brand": _column(table, "brand", pa.string()),
            "merchant_id": _column(table, "merchant_id", pa.string()),
            "price": _column(table, "price", pa.int64()),
            "launched_at": launched,
            "consumable": consumable,
            "rebuy_days": rebuy,
            "in_stock": _column(table, "in_stock", pa.bool_()),
            "hidden": _column(table, "hidden", pa.bool_()),
        }
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidItems(f"the items file has a value that does not convert: {exc}") from exc
    if categories is not None and {"category_id", "name"} <= set(categories.column_names):
        repository.upsert_categories(
            conn,
            [
                {"category_id": c, "parent_id": p, "name": n}
                for c, p, n in zip(
                    _column(categories, "category_id", pa.string()),
                    _column(categories, "parent_id", pa.string()),
                    _column(categories, "name", pa.string()),
                    strict=True,
                )
                if c and n
            ],
        )
    bad = [i for i, v in enumerate(ids) if not v or len(v) > 128]
    if bad:
        raise InvalidItems(f"row {bad[0] + 1}: item_id must have 1 to 128 characters")
    if len(set(ids)) != len(ids):
        raise InvalidItems("the items file lists an item_id more than once")
    now = utcnow()
    created = updated = unchanged = 0
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        current = repository.existing_items(conn, chunk)
        rows = []
        for offset, item_id in enumerate(chunk):
            i = start + offset
            values = {name: values[i] for name, values in columns.items()}
            values["consumable"] = bool(values["consumable"])
            values["in_stock"] = True if values["in_stock"] is None else values["in_stock"]
            values["hidden"] = bool(values["hidden"])
            try:
                item = ItemIn.model_validate(values)
            except ValueError as exc:
                raise InvalidItems(f"row {i + 1} ({item_id}): {exc}") from exc
            row = {"item_id": item_id, **item.model_dump(), "updated_at": now}
            old = current.get(item_id)
            if old is None:
                created += 1
            elif any(old[k] != row[k] for k in ITEM_COLUMNS):
                updated += 1
            else:
                unchanged += 1
                continue
            rows.append(row)
        repository.upsert_items(conn, rows)
    return ItemsImportResult(created=created, updated=updated, unchanged=unchanged)


def read_table_file(path: Path) -> pa.Table:
    """A Parquet, CSV or JSON-lines file as an Arrow table. Raises InvalidItems."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix == ".csv":
            return pacsv.read_csv(path)
        if path.suffix in (".jsonl", ".ndjson", ".json"):
            return pajson.read_json(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InvalidItems(f"cannot read {path}: {exc}") from exc
    raise InvalidItems(f"{path}: use a .parquet, .csv or .jsonl file")


def catalog_table(conn: Connection) -> pa.Table:
    """The whole catalog as Arrow (what the build's recommender reads)."""
    from memberwise.recommend.tables import items

    names = [c.name for c in items.c]
    rows = list(repository.catalog_rows(conn))
    data = {n: [r[n] for r in rows] for n in names}
    types = {
        "price": pa.int64(),
        "rebuy_days": pa.int32(),
        "launched_at": pa.timestamp("us", tz="UTC"),
        "updated_at": pa.timestamp("us", tz="UTC"),
        "consumable": pa.bool_(),
        "in_stock": pa.bool_(),
        "hidden": pa.bool_(),
    }
    return pa.table({n: pa.array(data[n], types.get(n, pa.string())) for n in names})


def categories_table(conn: Connection) -> pa.Table:
    """The category tree (category_id, parent_id, name) as Arrow."""
    rows = repository.categories(conn)
    return pa.table(
        {
            "category_id": pa.array([r["category_id"] for r in rows], pa.string()),
            "parent_id": pa.array([r["parent_id"] for r in rows], pa.string()),
            "name": pa.array([r["name"] for r in rows], pa.string()),
        }
    )
