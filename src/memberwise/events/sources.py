"""Event files read as a stream of Arrow batches with each row's number in the file.

Every source yields batches whose columns are contract fields (plus ``__row``, and for JSON
Lines ``__jtype``/``__line``) and collects the rows it could not parse at all (a CSV row with
the wrong number of cells, a line that is not a JSON object) as :class:`Malformed` with their
row number. Row numbers are what a person finds in the file: for CSV and JSON Lines the record's
line (a CSV header is row 1; blank lines are not counted), for Parquet the 1-based row index.
Memory is bounded by the batch size whatever the file size.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from memberwise.events.schemas import EVENT_FIELDS, REQUIRED_FIELDS, TAOBAO_BEHAVIOR
from memberwise.events.validation_sql import (
    INT_FIELDS,
    JSON_TYPE_ERROR,
    LINE,
    ROW,
    STRING_FIELDS,
)

Format = Literal["csv", "jsonl", "parquet", "taobao"]
#: Rows per batch handed to validation (and upper bound of rows held per in-flight batch).
BATCH_ROWS = 512 * 1024
_JSONL_CHUNK = 32 * 1024
_CSV_BLOCK = 8 << 20
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
EXTENSIONS: dict[str, Format] = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


class SourceError(ValueError):
    """The file cannot be ingested at all (unreadable, no header, a required column missing)."""


@dataclass(frozen=True)
class Malformed:
    """A row that could not be parsed: its number, why, and its text."""

    row: int
    message: str
    raw: str


@dataclass
class Source:
    """An open event file: its columns and a one-shot stream of batches."""

    path: Path
    fmt: Format
    schema: pa.Schema
    columns: list[str]
    extra_columns: list[str]
    total_rows: int | None
    raw_columns: list[str] | None = None
    malformed: list[Malformed] = field(default_factory=list)
    _batches: Iterator[Batch] | None = None
    position: float = 0.0

    def batches(self) -> Iterator[Batch]:
        """The file's rows in file order: Arrow batches with ``schema`` (a ``__row`` column
        included), or Parquet slices that DuckDB reads itself."""
        if self._batches is None:
            raise RuntimeError("a source is read once")
        batches, self._batches = self._batches, None
        return batches

    def take_malformed(self, before: int | None = None) -> list[Malformed]:
        """Malformed rows found so far with a row number below ``before`` (all if None)."""
        if before is None:
            taken, self.malformed = self.malformed, []
        else:
            taken = [m for m in self.malformed if m.row < before]
            self.malformed = [m for m in self.malformed if m.row >= before]
        return taken


def detect_format(path: Path) -> Format | None:
    """The format an extension implies, or None."""
    return EXTENSIONS.get(path.suffix.lower())


def open_source(path: Path, fmt: Format) -> Source:
    """Open ``path`` as ``fmt``.

    Raises SourceError when the file cannot be read as that format or lacks a required column.
    """
    if fmt == "parquet":
        return _parquet(path)
    if fmt == "csv":
        return _csv(path)
    if fmt == "jsonl":
        return _jsonl(path)
    return _taobao(path)


def _require(path: Path, columns: list[str]) -> None:
    missing = [c for c in REQUIRED_FIELDS if c not in columns]
    if missing:
        raise SourceError(
            f"{path.name} has no {', '.join(missing)} column"
            + ("s" if len(missing) > 1 else "")
            + f"; required: {', '.join(REQUIRED_FIELDS)}"
        )


def _strings(names: list[str]) -> pa.Schema:
    """A schema of text columns, with ``__row`` as the row number."""
    return pa.schema([(n, pa.int64() if n == ROW else pa.string()) for n in names])


def _with_rows(batch: pa.RecordBatch, first: int) -> pa.RecordBatch:
    rows = pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64))
    return batch.append_column(ROW, rows)


# -- Parquet ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetSlice:
    """Rows ``[start, stop)`` (0-based) of a Parquet file, whole row groups, for DuckDB to read
    and validate in one step (cheaper than decoding to Arrow first)."""

    path: Path
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start

    def relation(self) -> str:
        """A FROM item with the slice's rows and their 1-based row numbers."""
        path = "'" + str(self.path).replace("'", "''") + "'"
        return (
            f'(SELECT *, file_row_number + 1 AS "{ROW}" FROM read_parquet({path}, '
            f"file_row_number = true) WHERE file_row_number >= {self.start} "
            f"AND file_row_number < {self.stop})"
        )


Batch: TypeAlias = pa.RecordBatch | ParquetSlice


def _parquet(path: Path) -> Source:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path.name} is not a readable Parquet file: {exc}") from exc
    arrow = parquet.schema_arrow
    columns = [n for n in EVENT_FIELDS if n in arrow.names]
    _require(path, columns)
    source = Source(
        path=path,
        fmt="parquet",
        schema=pa.schema([*(arrow.field(n) for n in columns), pa.field(ROW, pa.int64())]),
        columns=columns,
        extra_columns=[n for n in arrow.names if n not in EVENT_FIELDS],
        total_rows=parquet.metadata.num_rows,
    )
    source._batches = _parquet_batches(parquet, path, columns, source)
    return source


def _parquet_batches(
    parquet: pq.ParquetFile, path: Path, columns: list[str], source: Source
) -> Iterator[Batch]:
    """Slices of whole row groups of about BATCH_ROWS rows; a file whose row groups are too big
    to hold at once is decoded in Arrow batches instead."""
    meta = parquet.metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    total = max(1, meta.num_rows)
    if sizes and max(sizes) > 4 * BATCH_ROWS:
        first = 1
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            yield _with_rows(batch, first)
            first += batch.num_rows
            source.position = (first - 1) / total
        return
    start = stop = 0
    for size in sizes:
        stop += size
        if stop - start >= BATCH_ROWS:
            yield ParquetSlice(path, start, stop)
            start = stop
            source.position = stop / total
    if stop > start:
        yield ParquetSlice(path, start, stop)
    source.position = 1.0


# -- CSV -------------------------------------------------------------------------------------


class _RowNumbers:
    """Numbers of a CSV's parsed rows, given the numbers of the rows the parser skipped.

    The parser reports a malformed row (with its number) before yielding the batch around it;
    good row k of the stream is then the k-th number not taken by a malformed row.
    """

    def __init__(self, first: int) -> None:
        self.next = first
        self.skipped: list[int] = []

    def assign(self, count: int) -> np.ndarray:
        skipped = np.array(sorted(s for s in self.skipped if s >= self.next), dtype=np.int64)
        # The k-th good row follows every skipped row whose "good rows before it" is <= k.
        before = skipped - self.next - np.arange(len(skipped), dtype=np.int64)
        k = np.arange(count, dtype=np.int64)
        numbers = self.next + k + np.searchsorted(before, k, side="right")
        if count:
            self.next = int(numbers[-1]) + 1
        self.skipped = [s for s in self.skipped if s >= self.next]
        return numbers


def _csv_reader(
    path: Path,
    names: list[str],
    source: Source,
    numbers: _RowNumbers,
    *,
    header: bool,
) -> Iterator[pa.RecordBatch]:
    expected = len(names)

    def invalid(row: Any) -> str:
        number = row.number if row.number is not None else -1
        numbers.skipped.append(number)
        source.malformed.append(
            Malformed(
                row=number,
                message=f"expected {expected} cells, found {row.actual_columns}",
                raw=row.text,
            )
        )
        return "skip"

    stream = pa.OSFile(str(path))
    try:
        reader = pcsv.open_csv(
            stream,
            # One thread keeps the parser's row numbers (a threaded parser does not know them).
            read_options=pcsv.ReadOptions(
                use_threads=False,
                block_size=_CSV_BLOCK,
                column_names=names,
                skip_rows=1 if header else 0,
            ),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except pa.ArrowInvalid as exc:
        stream.close()
        if "Empty CSV file" in str(exc):
            return
        raise SourceError(f"{path.name} is not a readable CSV file: {exc}") from exc
    size = max(1, path.stat().st_size)
    pending: list[pa.RecordBatch] = []
    held = 0
    with stream:
        for batch in reader:
            pending.append(batch)
            held += batch.num_rows
            if held >= BATCH_ROWS:
                source.position = min(1.0, stream.tell() / size)
                yield _numbered(pending, numbers)
                pending, held = [], 0
        if pending:
            yield _numbered(pending, numbers)
        source.position = 1.0


def _numbered(batches: list[pa.RecordBatch], numbers: _RowNumbers) -> pa.RecordBatch:
    table = pa.Table.from_batches(batches).combine_chunks()
    batch = (
        table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], table.schema)
    )
    return batch.append_column(ROW, pa.array(numbers.assign(batch.num_rows)))


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        try:
            header = next(csv.reader(f))
        except StopIteration:
            raise SourceError(f"{path.name} is empty: a CSV file needs a header row") from None
        except csv.Error as exc:
            raise SourceError(f"{path.name} has an unreadable header: {exc}") from exc
    names = [h.strip() for h in header]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SourceError(f"{path.name} repeats column(s) {', '.join(duplicated)} in its header")
    return names


def _csv(path: Path) -> Source:
    names = _csv_header(path)
    columns = [n for n in EVENT_FIELDS if n in names]
    _require(path, columns)
    source = Source(
        path=path,
        fmt="csv",
        schema=_strings([*names, ROW]),
        columns=columns,
        extra_columns=[n for n in names if n not in EVENT_FIELDS],
        total_rows=None,
        raw_columns=names,
    )
    source._batches = _csv_reader(path, names, source, _RowNumbers(2), header=True)
    return source


# -- Taobao UserBehavior -----------------------------------------------------------------------

#: The Taobao columns as contract fields; ``event_id`` is "tb-" and 24 hex digits of the MD5 of
#: the row's five values, so an identical row repeated in the data is one event (a duplicate).
_TAOBAO_SQL = (
    "SELECT 'tb-' || left(md5(concat_ws(',', coalesce(user_id, ''), coalesce(item_id, ''), "
    "coalesce(category_id, ''), coalesce(behavior_type, ''), coalesce(\"timestamp\", ''))), 24) "
    "AS event_id, user_id AS member_id, "
    "CASE behavior_type "
    + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in TAOBAO_BEHAVIOR.items())
    + " ELSE 'taobao:' || behavior_type END AS type, "
    '"timestamp" AS ts, item_id, category_id, user_id, behavior_type, "timestamp", '
    f'"{ROW}" FROM taobao_batch'
)


def _taobao(path: Path) -> Source:
    columns = ["event_id", "member_id", "type", "ts", "item_id", "category_id"]
    source = Source(
        path=path,
        fmt="taobao",
        schema=_strings([*columns, "user_id", "behavior_type", "timestamp", ROW]),
        columns=columns,
        extra_columns=[],
        total_rows=None,
        raw_columns=list(TAOBAO_COLUMNS),
    )
    names = list(TAOBAO_COLUMNS)
    rows = _csv_reader(path, names, source, _RowNumbers(1), header=False)
    source._batches = _taobao_batches(rows)
    return source


def _taobao_batches(rows: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    con = duckdb.connect()
    try:
        for batch in rows:
            con.register("taobao_batch", pa.Table.from_batches([batch]))
            mapped = con.sql(_TAOBAO_SQL).to_arrow_table()
            con.unregister("taobao_batch")
            yield from mapped.combine_chunks().to_batches(max_chunksize=max(1, mapped.num_rows))
    finally:
        con.close()


# -- JSON Lines ------------------------------------------------------------------------------

_STRING_FIELDS = frozenset(STRING_FIELDS)
_INT_FIELDS = frozenset(INT_FIELDS)


def _jsonl(path: Path) -> Source:
    source = Source(
        path=path,
        fmt="jsonl",
        schema=_strings([*EVENT_FIELDS, ROW, JSON_TYPE_ERROR, LINE]),
        columns=list(EVENT_FIELDS),
        extra_columns=[],
        total_rows=None,
    )
    source._batches = _jsonl_batches(path, source)
    return source


def _as_text(name: str, value: Any) -> tuple[str | None, bool]:
    """A JSON value as the text the SQL validates, and whether its JSON kind is wrong for
    ``name`` (checked like pydantic's lax mode: no number is a string, a bool is an integer)."""
    if value is None:
        return None, False
    if name == "properties":
        if isinstance(value, dict):
            return orjson.dumps(value).decode(), False
        return None, True
    if isinstance(value, str):
        return value, False
    if name in _STRING_FIELDS:
        return None, True
    if isinstance(value, bool):
        if name in _INT_FIELDS:
            return ("1" if value else "0"), False
        return ("true" if value else "false"), False
    if isinstance(value, float) and name in _INT_FIELDS and value.is_integer():
        return str(int(value)), False  # 1e16 is an integer to pydantic, "1e+16" is not
    if isinstance(value, int | float):
        return repr(value), False
    return orjson.dumps(value).decode(), False


def _jsonl_batches(path: Path, source: Source) -> Iterator[pa.RecordBatch]:
    """Lines parsed with orjson, a chunk at a time, into text columns (only the keys a line
    has are touched; a string is taken as it is, anything else goes through ``_as_text``)."""
    size = max(1, path.stat().st_size)
    done = 0
    number = 0
    order = {name: i for i, name in enumerate(EVENT_FIELDS)}
    extras: set[str] = set()
    with open(path, "rb") as f:
        while chunk := f.readlines(_JSONL_CHUNK * 256):
            n = len(chunk)
            values: dict[str, list[str | None]] = {name: [None] * n for name in EVENT_FIELDS}
            jtypes: list[str | None] = [None] * n
            lines: list[str] = [""] * n
            rows: list[int] = [0] * n
            kept = 0
            for raw in chunk:
                number += 1
                done += len(raw)
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if text.strip():  # a blank line is no row
                        source.malformed.append(Malformed(number, f"not valid JSON: {exc}", text))
                    continue
                if not isinstance(obj, dict):
                    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    kind = type(obj).__name__
                    source.malformed.append(
                        Malformed(number, f"a line must be a JSON object, not {kind}", text)
                    )
                    continue
                first_wrong = len(order)
                for key, value in obj.items():
                    position = order.get(key)
                    if position is None:
                        extras.add(key)
                    elif type(value) is str and key != "properties":
                        values[key][kept] = value
                    else:
                        text_value, wrong = _as_text(key, value)
                        values[key][kept] = text_value
                        if wrong and position < first_wrong:
                            first_wrong = position
                if first_wrong < len(order):
                    jtypes[kept] = EVENT_FIELDS[first_wrong]
                lines[kept] = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                rows[kept] = number
                kept += 1
            source.position = min(1.0, done / size)
            source.extra_columns = sorted(extras)
            if kept:
                arrays = [pa.array(values[name][:kept], pa.string()) for name in EVENT_FIELDS]
                arrays += [
                    pa.array(rows[:kept], pa.int64()),
                    pa.array(jtypes[:kept], pa.string()),
                    pa.array(lines[:kept], pa.string()),
                ]
                yield pa.RecordBatch.from_arrays(
                    arrays, names=[*EVENT_FIELDS, ROW, JSON_TYPE_ERROR, LINE]
                )
