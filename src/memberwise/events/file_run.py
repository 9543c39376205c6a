"""One source file's passes of a bulk ingest: read it in batches, validate them in worker
threads with the contract's DuckDB query, stage the good rows per UTC day, write the bad rows to
the dead letter, and (only when ids repeat) a second pass that drops the later copies."""

from __future__ import annotations

import shutil
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from memberwise.events.member_feed import MemberFeed, MembersCallback
from memberwise.events.schemas import EVENT_FIELDS, LAKE_SCHEMA, RejectCode
from memberwise.events.sources import (
    PARSED_JSON_SCHEMA,
    Batch,
    Format,
    JsonLines,
    Malformed,
    ParquetSlice,
    Source,
    malformed_json_message,
    open_source,
)
from memberwise.events.staging import DeadLetter, IdHashes, PartitionWriter, split_by_day
from memberwise.events.timeline import busy, mark
from memberwise.events.validation_sql import (
    INT_FIELDS,
    JSON_KEY_COUNT,
    ROW,
    ValidationPlan,
    build_validation,
)
from memberwise.kit.lake import utc_days


@dataclass
class Checked:
    """One validated batch: good rows (LAKE_SCHEMA), their id hashes and UTC days, bad rows."""

    good: pa.Table
    hashes: pa.ChunkedArray
    days: pa.ChunkedArray
    bad: pa.Table | None
    rows: int
    last_row: int
    members: pa.Array
    sorted_hashes: np.ndarray[Any, Any]
    keys: frozenset[str] = frozenset()
    #: The plan whose check numbers the bad rows carry, when not the source's own.
    plan: ValidationPlan | None = None


class FileRun:
    """One source file's passes: read, validate, stage; then member registration."""

    def __init__(
        self,
        *,
        path: Path,
        fmt: Format,
        fp: str,
        staging: Path,
        ingested_at: datetime,
        now: datetime,
        deadletter: DeadLetter,
        report: Callable[[int, float], None],
        workers: int,
        on_members: MembersCallback | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.fp = fp
        self.staging = staging
        self.ingested_at = pa.scalar(ingested_at, pa.timestamp("us", tz="UTC"))
        self.now = now
        self.deadletter = deadletter
        self.report = report
        self.workers = workers
        self.con: duckdb.DuckDBPyConnection | None = None
        self.rows_read = self.accepted = self.duplicates = self.rejected = 0
        self.warnings: list[str] = []
        self._local = threading.local()
        self._candidates: pa.Array | None = None
        self._seen: set[str] = set()
        self.on_members = on_members
        self._feed: MemberFeed | None = None

    def execute(self) -> dict[int, list[Path]]:
        """Stage the file's good rows per UTC day, registering their members meanwhile; a
        second pass only if ids repeat."""
        feed = self._feed = MemberFeed(self.on_members) if self.on_members is not None else None
        try:
            staged = self._pass(candidates=None)
        except BaseException:
            if feed is not None:
                feed.stop()
            raise
        finally:
            self._feed = None
        mark(f"first pass done: {self.rows_read:,} rows, {self.accepted:,} accepted")
        if feed is not None:
            feed.finish()  # the store's error, if any, fails the file here
            mark(f"members registered: {feed.registered:,}")
        repeated = self._hashes.repeated()
        if len(repeated):
            staged = self._pass(candidates=repeated)
            mark("second pass done")
        if self.con is not None:
            self.con.close()
            self.con = None
        return staged

    # -- one pass ------------------------------------------------------------------------

    def _open_db(self) -> duckdb.DuckDBPyConnection:
        if self.con is not None:
            self.con.close()
        # One DuckDB thread per query: batches are validated in parallel by our workers, and a
        # single-threaded scan returns rows in input order (a parallel Arrow scan does not).
        config: dict[str, str | bool | int | float | list[str]] = {
            "temp_directory": str(self.staging / "duckdb.tmp"),
            "threads": 1,
        }
        con = duckdb.connect(config=config)
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE TABLE ids (h UBIGINT)")
        self.con = con
        self._hashes = IdHashes(con)
        self._local = threading.local()
        return con

    def _pass(self, candidates: pa.Array | None) -> dict[int, list[Path]]:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        self.deadletter.reset()
        self.rows_read = self.accepted = self.duplicates = self.rejected = 0
        con = self._open_db()
        source = open_source(self.path, self.fmt)
        plan = build_validation(source.schema, now=self.now, raw_columns=source.raw_columns)
        # Parquet slices are read by DuckDB itself, which then exports every field.
        self._sliced_plan = build_validation(source.schema, now=self.now, export_all=True)
        # JSON Lines blocks that Arrow parsed whole arrive typed (JsonLines.parsed).
        self._parsed_plan = build_validation(PARSED_JSON_SCHEMA, now=self.now)
        self._candidates = candidates
        self._seen = set()
        self._keys: set[str] = set()
        writer = PartitionWriter(self.staging, self.workers)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="validate") as pool:
                inflight: deque[Future[Checked]] = deque()
                for batch in source.batches():
                    inflight.append(pool.submit(self._check, plan, batch))
                    while len(inflight) > self.workers:
                        self._consume(inflight.popleft().result(), plan, source, writer, con)
                while inflight:
                    self._consume(inflight.popleft().result(), plan, source, writer, con)
                mark("batches read and validated")
            staged = writer.close()
        finally:
            writer.abort()
        self._write_bad([], source.take_malformed(), plan)
        if self._keys:
            source.extra_columns = sorted(self._keys.difference(EVENT_FIELDS))
        if source.extra_columns:
            self.warnings = [
                "ignored column(s) not in the event contract: " + ", ".join(source.extra_columns)
            ]
        self.report(self.rows_read, 1.0)
        return staged

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            assert self.con is not None
            cursor = self.con.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cursor
        return cursor

    def _check(self, plan: ValidationPlan, batch: Batch) -> Checked:
        """Validate one batch (in a worker thread): good rows in lake shape, bad rows apart."""
        with busy("validate"):
            return self._check_batch(plan, batch)

    def _check_batch(self, plan: ValidationPlan, batch: Batch) -> Checked:
        cursor = self._cursor()
        if isinstance(batch, ParquetSlice):
            out = cursor.sql(self._sliced_plan.sql(batch.relation())).to_arrow_table()
            return self._assemble(out, out, self._sliced_plan)
        if isinstance(batch, JsonLines):
            name = f"lines_{threading.get_ident()}"
            parsed = batch.parsed(cursor)
            if parsed is not None:
                cursor.register(name, parsed.table)
                try:
                    out = cursor.sql(self._parsed_plan.sql(f'"{name}"')).to_arrow_table()
                finally:
                    cursor.unregister(name)
                if not out.column(ROW).equals(parsed.table.column(ROW)):
                    raise RuntimeError("validation changed the row order")  # never expected
                # The ids and texts come straight from Arrow's parse (already lake-typed).
                checked = self._assemble(out, parsed.table, self._parsed_plan)
                checked.keys = parsed.keys
                checked.plan = self._parsed_plan
                return checked
            cursor.register(name, batch.table)
            try:
                out = cursor.sql(self._sliced_plan.sql(batch.relation(name))).to_arrow_table()
                # A block whose bytes hold more '":' than its lines' contract keys may have
                # keys outside the contract: only then are its keys listed (for the warning).
                expected = pc.sum(out.column(JSON_KEY_COUNT)).as_py() or 0
                keys: frozenset[str] = frozenset()
                if batch.key_ends() != expected:
                    found = cursor.sql(batch.keys_sql(name)).to_arrow_table().column(0)
                    keys = frozenset(k for k in found.to_pylist() if k is not None)
            finally:
                cursor.unregister(name)
            checked = self._assemble(out, out, self._sliced_plan)
            checked.keys = keys
            return checked
        table = strip_numbers(pa.Table.from_batches([batch]))
        name = f"batch_{threading.get_ident()}"
        cursor.register(name, table)
        try:
            out = cursor.sql(plan.sql(f'"{name}"')).to_arrow_table()
        finally:
            cursor.unregister(name)
        if not out.column(ROW).equals(table.column(ROW)):
            raise RuntimeError("validation changed the row order")  # never expected
        return self._assemble(out, table, plan)

    def _assemble(self, out: pa.Table, table: pa.Table, plan: ValidationPlan) -> Checked:
        """Good rows in lake shape (exported or passed-through columns), bad rows apart."""
        n = table.num_rows
        columns = []
        for f in LAKE_SCHEMA:
            if f.name == "ingested_at":
                column: Any = pa.repeat(self.ingested_at, n)
            elif f.name in plan.exported:
                column = out.column(f.name)
            elif f.name in plan.passthrough:
                column = table.column(f.name)
            else:
                column = pa.nulls(n, f.type)
            if column.type != f.type:
                column = pc.cast(column, f.type)
            columns.append(column)
        good = pa.Table.from_arrays(columns, schema=LAKE_SCHEMA)
        hashes = out.column("__hash")
        check = out.column("__check")
        bad = None
        if check.null_count != n:
            ok = pc.is_null(check)
            good = good.filter(ok)
            hashes = hashes.filter(ok)
            bad = out.filter(pc.invert(ok)).select([ROW, "__check", "__message", "__raw"])
        last_row = table.column(ROW)[-1].as_py() if n else 0
        # Per-batch work that can run here, in parallel, rather than in the ordered main loop.
        members = pc.unique(good.column("member_id")) if good.num_rows else None
        sorted_hashes = np.sort(hashes.to_numpy()) if good.num_rows else None
        return Checked(
            good,
            hashes,
            utc_days(good.column("ts")),
            bad,
            n,
            last_row,
            members if members is not None else pa.array([], pa.string()),
            sorted_hashes if sorted_hashes is not None else np.empty(0, np.uint64),
        )

    def _consume(
        self,
        checked: Checked,
        plan: ValidationPlan,
        source: Source,
        writer: PartitionWriter,
        con: duckdb.DuckDBPyConnection,
    ) -> None:
        """Fold one validated batch into the pass, in file order (main thread)."""
        good, hashes, days = checked.good, checked.hashes, checked.days
        if self._candidates is not None and good.num_rows:
            good, hashes, days = self._drop_repeats(good, hashes, days)
        elif good.num_rows:
            self._hashes.add(checked.sorted_hashes)
        if self._feed is not None:
            self._feed.put(checked.members)
        if good.num_rows:
            writer.add_batch(split_by_day(good, days))
        self.rows_read += checked.rows
        self.accepted += good.num_rows
        self._keys |= checked.keys
        self._write_bad(
            checked.bad.to_pylist() if checked.bad is not None else [],
            source.take_malformed(before=checked.last_row),
            checked.plan or plan,
        )
        self.report(self.rows_read, source.position)

    def _drop_repeats(
        self,
        good: pa.Table,
        hashes: pa.ChunkedArray,
        days: pa.ChunkedArray,
    ) -> tuple[pa.Table, pa.ChunkedArray, pa.ChunkedArray]:
        """Second pass only: drop rows whose id was accepted earlier in the file."""
        seen = self._seen
        suspect = pc.is_in(hashes, value_set=self._candidates)
        if not pc.any(suspect).as_py():
            return good, hashes, days
        keep = pc.invert(suspect).to_pylist()
        ids = good.column("event_id")
        for i in pc.indices_nonzero(suspect).to_pylist():
            event_id = ids[i].as_py()
            if event_id not in seen:
                seen.add(event_id)
                keep[i] = True
        mask = pa.array(keep)
        dropped = len(keep) - sum(keep)
        self.duplicates += dropped
        return good.filter(mask), hashes.filter(mask), days.filter(mask)

    def _write_bad(
        self,
        rejected: list[dict[str, Any]],
        malformed: list[Malformed],
        plan: ValidationPlan | None,
    ) -> None:
        rows: list[tuple[int, str, str, str, str]] = []
        for r in rejected:
            assert plan is not None
            check = plan.checks[r["__check"] - 1]
            raw = r["__raw"].rstrip("\r\n")  # a JSON line comes with its newline
            if check.code is RejectCode.malformed_row:  # the second pass: failing lines only
                message = malformed_json_message(raw)
                raw = orjson.dumps(raw).decode()
                rows.append((r[ROW], check.code.value, check.field, message, raw))
            else:
                rows.append((r[ROW], check.code.value, check.field, r["__message"], raw))
        for m in malformed:
            rows.append((m.row, "malformed_row", "", m.message, orjson.dumps(m.raw).decode()))
        self.rows_read += len(malformed)
        self.rejected += len(rows)
        rows.sort(key=lambda r: r[0])
        self.deadletter.write(rows)


def strip_numbers(table: pa.Table) -> pa.Table:
    """Strip surrounding whitespace from integers given as text (pydantic accepts ``" 12 "``)."""
    for name in INT_FIELDS:
        if name in table.column_names:
            column = table.column(name)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                index = table.column_names.index(name)
                table = table.set_column(index, name, pc.utf8_trim_whitespace(column))
    return table
