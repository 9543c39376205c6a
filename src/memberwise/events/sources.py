"""Event files read as a stream of Arrow batches with each row's number in the file.

Every source yields batches whose columns are contract fields plus ``__row`` (or, for Parquet
and JSON Lines, slices and blocks that DuckDB reads and checks itself) and collects the rows it
could not parse at all (a CSV row with the wrong number of cells or bytes that are not UTF-8, a
JSON line that is not UTF-8) as :class:`Malformed` with their row number; a JSON line that is
not a JSON object is found by DuckDB, in the same query that checks the others. A JSON Lines
block of plain events is parsed by Arrow's JSON reader instead (faster); any block it refuses
goes the DuckDB way, which finds each line's problem. Row numbers
are what a person finds in the file: for CSV the record's line (the header is row 1), for JSON
Lines the line (blank lines are skipped but counted), for Parquet the 1-based row index.
Memory is bounded by the batch size whatever the file size.
"""

from __future__ import annotations

import csv
import mmap
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from memberwise.events.schemas import EVENT_FIELDS, REQUIRED_FIELDS, TAOBAO_BEHAVIOR
from memberwise.events.validation_sql import (
    INT_FIELDS,
    JSON_KEY_COUNT,
    JSON_TYPE_ERROR,
    LINE,
    MALFORMED_JSON,
    MATCH_FIELDS,
    ROW,
    STRING_FIELDS,
    matches,
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


Batch: TypeAlias = "pa.RecordBatch | ParquetSlice | JsonLines"


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
                # Checked per batch instead (_without_bad_utf8), so one bad byte costs one row.
                check_utf8=False,
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
                yield _without_bad_utf8(_numbered(pending, numbers), source)
                pending, held = [], 0
        if pending:
            yield _without_bad_utf8(_numbered(pending, numbers), source)
        source.position = 1.0


def _numbered(batches: list[pa.RecordBatch], numbers: _RowNumbers) -> pa.RecordBatch:
    table = pa.Table.from_batches(batches).combine_chunks()
    batch = (
        table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], table.schema)
    )
    return batch.append_column(ROW, pa.array(numbers.assign(batch.num_rows)))


def _without_bad_utf8(batch: pa.RecordBatch, source: Source) -> pa.RecordBatch:
    """The batch without its rows holding bytes that are not UTF-8; those become malformed
    rows with their numbers. Only a column that fails Arrow's check is scanned in Python."""
    bad: dict[int, str] = {}
    for index, name in enumerate(batch.schema.names):
        column = batch.column(index)
        if name == ROW or not pa.types.is_string(column.type):
            continue
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            for i, value in enumerate(column.cast(pa.binary()).to_pylist()):
                if value is None or i in bad:
                    continue
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad[i] = f"{name}: {exc.reason} at byte {exc.start}"
    if not bad:
        return batch
    numbers = batch.column(ROW)
    cells = [c.cast(pa.binary()) for c in batch.columns if pa.types.is_string(c.type)]
    for i, reason in sorted(bad.items()):
        text = ",".join(
            "" if (v := c[i].as_py()) is None else v.decode("utf-8", errors="replace")
            for c in cells
        )
        source.malformed.append(Malformed(numbers[i].as_py(), f"not valid UTF-8 ({reason})", text))
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[list(bad)] = False
    return batch.filter(pa.array(keep))


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
#: Bytes of the file per JSON Lines batch (whole lines).
_JSONL_BLOCK = 48 << 20
_NEWLINE = ord("\n")
_OPEN_BRACE = ord("{")
#: ``":`` as one 16-bit word: what follows each key of a compact JSON object.
_KEY_END = np.frombuffer(b'":', dtype=np.uint16)[0]


#: What Arrow's JSON reader is told each line holds: ids, texts and ``ts`` as strings, the
#: integer fields as 64-bit integers; ``properties`` and keys outside the contract are inferred.
_ARROW_READ = pa.schema(
    [
        pa.field(n, pa.int64() if n in _INT_FIELDS else pa.string())
        for n in EVENT_FIELDS
        if n != "properties"
    ]
)
#: The columns of a block Arrow parsed, as validation reads them (see :meth:`JsonLines.parsed`).
PARSED_JSON_SCHEMA = pa.schema(
    [*_ARROW_READ, pa.field("properties", pa.string()), pa.field(ROW, pa.int64()), *MATCH_FIELDS]
).append(pa.field(LINE, pa.large_string()))


@dataclass(frozen=True)
class ParsedLines:
    """A JSON Lines block that Arrow's JSON reader parsed whole (see :meth:`JsonLines.parsed`):
    ``table`` has PARSED_JSON_SCHEMA's columns; ``keys`` are the top-level keys outside the
    contract."""

    table: pa.Table
    keys: frozenset[str]


@dataclass(frozen=True)
class JsonLines:
    """A block of a JSON Lines file for DuckDB to parse and validate in one query: the lines'
    text (``__line``) and numbers (``__row``); blank lines are left out. ``data`` is the
    block's bytes; ``complete`` is False when lines other than blank ones were left out;
    ``braced`` is True when every kept line starts with ``{``."""

    table: pa.Table
    data: np.ndarray[Any, Any]
    complete: bool = True
    braced: bool = False

    def parsed(self, con: duckdb.DuckDBPyConnection) -> ParsedLines | None:
        """The block parsed by Arrow's JSON reader, or None when it holds anything but plain
        event objects whose values all have their field's kind; then the DuckDB path
        (:meth:`relation`) finds each line's problem. Arrow parses a typical block in about
        two thirds of the time DuckDB's JSON functions take to give each field's kind and
        text, and it refuses exactly what must go the slow way: a number where a string
        belongs or the reverse, a fraction or a text for an integer field, a key given twice,
        two objects on one line, a line that is no object, invalid JSON. Lines not starting
        with ``{`` (e.g. after a byte-order mark, which Arrow skips but DuckDB refuses) are
        never given to it. ``properties`` must come out as an object (a struct) or not at
        all; its text is then DuckDB's (``con``), as on the slow path, taken from the few
        lines that have one."""
        if not (self.complete and self.braced):
            return None
        try:
            parsed = pjson.read_json(
                pa.BufferReader(pa.py_buffer(self.data)),
                read_options=pjson.ReadOptions(
                    use_threads=False, block_size=max(len(self.data) + 1, 1 << 20)
                ),
                parse_options=pjson.ParseOptions(
                    explicit_schema=_ARROW_READ, unexpected_field_behavior="infer"
                ),
            )
        except pa.ArrowInvalid:
            return None
        if parsed.num_rows != self.num_rows:
            return None
        keys = frozenset(parsed.schema.names).difference(EVENT_FIELDS)
        lines = self.table.column(LINE)
        properties = pa.nulls(parsed.num_rows, pa.string())
        if "properties" in parsed.schema.names:
            props = parsed.column("properties")
            if not (pa.types.is_struct(props.type) or pa.types.is_null(props.type)):
                return None
            has = props.is_valid().combine_chunks()
            if props.null_count < len(props):
                name = f"properties_{threading.get_ident()}"
                con.register(name, pa.table({"line": lines.filter(has)}))
                try:
                    found = con.sql(
                        f"SELECT json_extract_string(line, '$.properties') FROM {name}"
                    ).to_arrow_table()
                finally:
                    con.unregister(name)
                texts = found.column(0).combine_chunks().cast(pa.string())
                properties = pc.replace_with_mask(properties, has, texts)
        table = pa.Table.from_arrays(
            [
                *(parsed.column(f.name) for f in _ARROW_READ),
                properties,
                self.table.column(ROW),
                *matches(parsed.column("ts"), parsed.column("member_id")),
                lines,
            ],
            schema=PARSED_JSON_SCHEMA,
        )
        return ParsedLines(table, keys)

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    def relation(self, name: str) -> str:
        """A FROM item giving the contract fields as text (JSON values as pydantic's lax mode
        reads them), ``__row``, ``__jtype``, ``__line`` and ``__keycount``, from the registered
        ``name``."""
        return f"({_JSON_SQL.replace(_JSON_TABLE, name)})"

    def key_ends(self) -> int | None:
        """How many ``":`` the block holds (None when some line was left out): two 16-bit
        compares over the bytes, instead of a search per line."""
        if not self.complete:
            return None
        data, n = self.data, len(self.data)
        even = data[: n - n % 2].view(np.uint16)
        odd = data[1 : n - (n - 1) % 2].view(np.uint16) if n > 1 else even[:0]
        return int(np.count_nonzero(even == _KEY_END) + np.count_nonzero(odd == _KEY_END))

    def keys_sql(self, name: str) -> str:
        """The distinct keys of the lines of ``name`` (for a block that may have keys outside
        the contract)."""
        return f'SELECT DISTINCT unnest(try(json_keys("{LINE}"))) AS k FROM {name}'


_WHITESPACE = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"


def _json_text(name: str, kind: str, text: str) -> str:
    """One field as the text the validation reads, from its JSON ``kind`` (json_type: NULL
    when absent) and ``text`` (json_extract_string: a string unquoted, a number or object as
    JSON): a bool is 1/0 for an integer, an integer given as text is stripped (as pydantic
    does); DuckDB writes integral floats as ``12.0``, which the integer rule accepts."""
    if name == "properties":
        return f"CASE WHEN {kind} = 'OBJECT' THEN {text} END"
    if name in _STRING_FIELDS:
        return f"CASE WHEN {kind} = 'VARCHAR' THEN {text} END"
    if name in _INT_FIELDS:
        return (
            f"CASE {kind} WHEN 'VARCHAR' THEN trim({text}, {_WHITESPACE}) "
            f"WHEN 'BOOLEAN' THEN (CASE {text} WHEN 'true' THEN '1' ELSE '0' END) "
            f"ELSE {text} END"
        )
    return text


def _json_wrong(name: str, kind: str) -> str | None:
    """When the JSON kind cannot be the field's (no number is a string), else None."""
    if name == "properties":
        return f"{kind} NOT IN ('OBJECT', 'NULL')"
    if name in _STRING_FIELDS:
        return f"{kind} NOT IN ('VARCHAR', 'NULL')"
    return None


def _json_sql() -> str:
    paths = "[" + ", ".join(f"'$.\"{n}\"'" for n in EVENT_FIELDS) + "]"
    line = f'"{LINE}"'
    fields = list(enumerate(EVENT_FIELDS, start=1))
    texts = ", ".join(f'{_json_text(n, f"__t[{i}]", f"__s[{i}]")} AS "{n}"' for i, n in fields)
    wrong = " ".join(
        f"WHEN {cond} THEN '{n}'" for i, n in fields if (cond := _json_wrong(n, f"__t[{i}]"))
    )
    # try(): a line that is not JSON gives NULL instead of failing the query; a valid line that
    # is not an object has no field, so only those lines are asked their type.
    malformed = f"__t IS NULL OR (list_count(__t) = 0 AND json_type({line}) <> 'OBJECT')"
    # Keys outside the contract, without a search per line: in a compact line each key is
    # followed by '":', so a line holds as many of those as contract keys present (plus the
    # pairs inside properties, counted in its text, 1 line in 100 in a typical file); the block's
    # total is compared with the bytes' (JsonLines.key_ends) and only a block that holds more
    # has its keys listed.
    i = EVENT_FIELDS.index("properties") + 1
    props = f"CASE WHEN __t[{i}] = 'OBJECT' THEN __s[{i}] END"
    nested = f"coalesce((strlen({props}) - strlen(replace({props}, '\":', ''))) // 2, 0)"
    return (
        f"SELECT {texts}, \"{ROW}\", CASE WHEN {malformed} THEN '{MALFORMED_JSON}' "
        f'{wrong} END AS "{JSON_TYPE_ERROR}", {line}, list_count(__t) + {nested} '
        f'AS "{JSON_KEY_COUNT}" FROM ('
        f"SELECT try(json_type({line}, {paths})) AS __t, "
        f'try(json_extract_string({line}, {paths})) AS __s, "{ROW}", {line} '
        f"FROM {_JSON_TABLE})"
    )


_JSON_TABLE = "__JSON_LINES__"
_JSON_SQL = _json_sql()


def malformed_json_message(line: str) -> str:
    """Why a line is not an event object, found by parsing it again (failing lines only)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    if isinstance(value, dict):
        return "not valid JSON: a value out of range"  # e.g. an integer beyond 64 bits
    return f"a line must be a JSON object, not {type(value).__name__}"


def _jsonl(path: Path) -> Source:
    source = Source(
        path=path,
        fmt="jsonl",
        schema=_strings([*EVENT_FIELDS, ROW, JSON_TYPE_ERROR, LINE]).append(
            pa.field(JSON_KEY_COUNT, pa.int64())
        ),
        columns=list(EVENT_FIELDS),
        extra_columns=[],
        total_rows=None,
    )
    source._batches = _jsonl_batches(path, source)
    return source


def _jsonl_batches(path: Path, source: Source) -> Iterator[Batch]:
    """Blocks of whole lines, each mapped from the file on its own and split with NumPy into
    an Arrow string array over the mapped bytes (no copy, no Python object per line); parsing
    and checking happen in DuckDB (:class:`JsonLines`). A block's mapping goes when its batch
    does, so memory stays bounded by the blocks in flight. Only lines that are blank or not
    UTF-8 are looked at in Python."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        first = 1  # the number of the block's first line
        start = 0
        while start < size:
            block, stop = _map_lines(f.fileno(), start, size)
            batch, lines = _json_block(block, first, source)
            first += lines
            start = stop
            source.position = start / size
            if batch is not None:
                yield batch


def _map_lines(fileno: int, start: int, size: int) -> tuple[memoryview, int]:
    """The file's bytes from ``start`` to the end of the last whole line within about
    _JSONL_BLOCK bytes (more if one line is longer), mapped read-only, and where they end."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    length = _JSONL_BLOCK
    while True:
        stop = min(size, start + length)
        mapped = mmap.mmap(fileno, stop - base, access=mmap.ACCESS_READ, offset=base)
        if stop < size:
            cut = mapped.rfind(b"\n", start - base)
            if cut < 0:  # a line longer than the block: map more
                mapped.close()
                length *= 2
                continue
            stop = base + cut + 1
        return memoryview(mapped)[start - base : stop - base], stop


def _json_block(data: memoryview, first: int, source: Source) -> tuple[JsonLines | None, int]:
    """One block of complete lines (each with its newline, but maybe the file's last) as a
    :class:`JsonLines`, and its number of lines; lines that are not UTF-8 become malformed rows
    here, blank lines are dropped."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == _NEWLINE) + 1
    if buf[-1] != _NEWLINE:  # the file's last line, without a newline
        ends = np.append(ends, len(buf))
    count = len(ends)
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), ends.astype(np.int64)])
    lines = pa.LargeStringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))
    numbers = np.arange(first, first + count, dtype=np.int64)
    keep = np.ones(count, dtype=bool)
    # Only a line that does not start with "{" can be blank; only those are looked at.
    unbraced = np.flatnonzero(buf[offsets[:-1]] != _OPEN_BRACE)
    braced = True
    for i in unbraced:
        if not bytes(data[offsets[i] : offsets[i + 1]]).strip():
            keep[i] = False
        else:
            braced = False
    blank = int(count - np.count_nonzero(keep))
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:  # some line is not UTF-8: find it (this block only)
        for line in range(count):
            raw = bytes(data[offsets[line] : offsets[line + 1]])
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                keep[line] = False
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                source.malformed.append(
                    Malformed(int(numbers[line]), f"not valid JSON: not UTF-8 ({exc.reason})", text)
                )
    table = pa.table({LINE: lines, ROW: numbers})
    kept = int(np.count_nonzero(keep))
    if kept < count:
        table = table.filter(pa.array(keep))
    # Blank lines hold no '":', so the block's bytes still count the kept lines' keys.
    complete = kept + blank == count
    return (JsonLines(table, buf, complete, braced) if kept else None), count
