"""The event lake on a store reached by URI (``s3://``, ``hdfs://``...): same layout, same
readers, commit records instead of renames.

An object store cannot rename atomically, so a day's file is written under its final name by one
PUT and then an append's commit record (``events/date=D/_commits/<uuid>.json``) lists it.
Readers trust only listed files: a crash between the PUT and the record leaves a file nobody
reads. The API's appends and a bulk ingest's publish both go this way; the local control
directory keeps what only one machine needs (a bulk ingest's staging and its markers).

What stays on a local (or mounted) lake for now: compaction, erasure's rewrite of day files and
retention's day drops, which replace files in place (they raise :class:`RemoteLakeError`).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memberwise.kit.lake import (
    _COLUMNS,
    _WINNER_ORDER,
    EVENTS_DIR,
    PARQUET_OPTIONS,
    PARTITION_PREFIX,
    ROW_GROUP_ROWS,
    CompactResult,
    EventLake,
    LakeStats,
    _empty_sql,
    day_of,
    partition_name,
    to_lake_table,
    utc_days,
)
from memberwise.kit.lake_schema import LAKE_SCHEMA
from memberwise.kit.storage import Storage, join

if TYPE_CHECKING:
    import duckdb
    import ibis


class RemoteLakeError(RuntimeError):
    """An operation that rewrites lake files in place, asked of a lake on an object store."""


class ObjectLake(EventLake):
    """An event lake rooted at ``uri``; ``control`` is a local directory for what a bulk ingest
    stages and marks before publishing."""

    def __init__(self, uri: str, storage: Storage, control: Path) -> None:
        super().__init__(control)
        self.uri = uri.rstrip("/")
        self.storage = storage

    def day_uri(self, day: date) -> str:
        return str(join(self.uri, EVENTS_DIR, partition_name(day)))

    # -- writing -----------------------------------------------------------------------------

    def append(self, table: pa.Table, *, prefix: str) -> list[Path]:
        """Store ``table``: per UTC day one file PUT, then the append's commit record.

        Returns the files' paths relative to the lake root (they have no local path)."""
        if table.num_rows == 0:
            return []
        table = to_lake_table(table)
        days = utc_days(table.column("ts"))
        written = []
        for day_number in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day_number))
            day = day_of(day_number)
            name = f"{prefix}-{uuid.uuid4().hex}.parquet"
            self._put(part, str(join(self.day_uri(day), name)))
            self.storage.commit_append(self.day_uri(day), [name])
            written.append(Path(EVENTS_DIR) / partition_name(day) / name)
        return written

    def publish(self, staged: Path, final: Path) -> None:
        """Upload a bulk ingest's staged file to its day and commit it (a re-run of the same
        bulk file writes the same name again, which the commit records list once)."""
        relative = final.relative_to(self.root)
        day_dir = str(join(self.uri, *relative.parent.parts))
        self.storage.fs(self.uri).put_file(str(staged), str(join(day_dir, relative.name)))
        self.storage.commit_append(day_dir, [relative.name])
        staged.unlink(missing_ok=True)

    def _put(self, table: pa.Table, uri: str) -> None:
        with (
            self.storage.fs(uri).open(uri, "wb") as handle,
            pq.ParquetWriter(handle, LAKE_SCHEMA, **PARQUET_OPTIONS) as writer,
        ):
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    # -- listing -----------------------------------------------------------------------------

    def partitions(self) -> list[date]:
        days = []
        for name in self.storage.listdir(join(self.uri, EVENTS_DIR)):
            if name.startswith(PARTITION_PREFIX):
                try:
                    days.append(date.fromisoformat(name[len(PARTITION_PREFIX) :]))
                except ValueError:
                    continue
        return sorted(days)

    def files(self, partitions: Sequence[date] | None = None) -> list[Path]:
        raise RemoteLakeError(
            f"the lake at {self.uri} has no local files: use uris() (or a local lake)"
        )

    def uris(self, partitions: Sequence[date] | None = None) -> list[str]:
        """The committed data files of the given days (all by default), sorted."""
        days = self.partitions() if partitions is None else partitions
        found: list[str] = []
        for day in days:
            found.extend(self.storage.committed(self.day_uri(day)) or [])
        return sorted(found)

    def uri_plan(self) -> tuple[list[str], list[list[str]]]:
        """(files read as they are, groups to deduplicate together): a day of one file is
        read plainly, a day of several files is deduplicated (no overlap record is kept on
        the store yet, so every multi-file day pays the ``row_number()``)."""
        plain: list[str] = []
        groups: list[list[str]] = []
        for day in self.partitions():
            files = self.uris([day])
            if len(files) == 1:
                plain.extend(files)
            elif files:
                groups.append(files)
        return plain, groups

    # -- reading -----------------------------------------------------------------------------

    def events_sql(self) -> str:
        """DuckDB SQL of the deduplicated events; run it on a connection that
        :meth:`register` was called with."""
        plain, groups = self.uri_plan()
        if not plain and not groups:
            return _empty_sql()

        def source(files: Sequence[str]) -> str:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            return f"read_parquet([{listed}], hive_partitioning = false)"

        parts = [f"SELECT {_COLUMNS} FROM {source(plain)}"] if plain else []
        parts += [
            f"SELECT {_COLUMNS} FROM {source(group)} QUALIFY row_number() OVER "
            f"(PARTITION BY event_id ORDER BY {_WINNER_ORDER}) = 1"
            for group in groups
        ]
        return "\nUNION ALL\n".join(f"({part})" for part in parts)

    def register(self, con: duckdb.DuckDBPyConnection) -> None:
        """Let ``con`` read this lake's URIs (fsspec, no DuckDB extension download)."""
        self.storage.register(con, [self.uri])

    def events_relation(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
        self.register(con)
        return con.sql(self.events_sql())

    def events_table(self, con: ibis.BaseBackend) -> ibis.Table:
        import ibis

        from memberwise.kit.warehouse import read_parquet

        plain, groups = self.uri_plan()
        if not plain and not groups:
            return ibis.memtable(LAKE_SCHEMA.empty_table())

        def read(files: list[str]) -> ibis.Table:
            table = read_parquet(con, files, storage=self.storage, expand=False)
            return table.select(*LAKE_SCHEMA.names)

        parts = [read(plain)] if plain else []
        for group in groups:
            raw = read(group)
            order = [raw.ingested_at] + [
                raw[name].asc(nulls_first=True)
                for name in LAKE_SCHEMA.names
                if name != "ingested_at"
            ]
            ranked = raw.mutate(_rank=ibis.row_number().over(group_by="event_id", order_by=order))
            parts.append(ranked.filter(ranked._rank == 0).select(*LAKE_SCHEMA.names))
        return parts[0] if len(parts) == 1 else ibis.union(*parts)

    def latest_ts(self) -> datetime | None:
        """The newest event time, from the newest day's footers (``ts`` statistics)."""
        for day in reversed(self.partitions()):
            latest: datetime | None = None
            for uri in self.uris([day]):
                found = _max_ts(self.storage, uri)
                if found is not None:
                    latest = found if latest is None else max(latest, found)
            if latest is not None:
                return latest
        return None

    def stats(self) -> LakeStats:
        files = self.uris()
        fs = self.storage.fs(self.uri)
        rows = 0
        for uri in files:
            with fs.open(uri, "rb") as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
        return LakeStats(
            partitions=len({posixpath.dirname(u) for u in files}),
            files=len(files),
            rows=rows,
            bytes=sum(int(fs.size(u)) for u in files),
            uncommitted_files=0,
        )

    # -- what rewrites files in place --------------------------------------------------------

    def compact(self, *, partitions: Sequence[date] | None = None) -> CompactResult:
        raise RemoteLakeError(
            f"compaction of the lake at {self.uri} is not supported yet: compact a local copy"
        )

    def read_plan(self) -> tuple[list[Path], list[list[Path]]]:
        raise RemoteLakeError(f"the lake at {self.uri} has no local files: use uri_plan()")


def _max_ts(storage: Storage, uri: str) -> datetime | None:
    with storage.fs(uri).open(uri, "rb") as handle:
        reader = pq.ParquetFile(handle)
        metadata = reader.metadata
        column = metadata.schema.names.index("ts")
        latest: Any = None
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                found = pc.max(reader.read_row_group(group, columns=["ts"]).column("ts")).as_py()
            else:
                found = stats.max
            if found is not None:
                latest = found if latest is None else max(latest, found)
    if latest is None:
        return None
    found_at: datetime = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
    return found_at


def open_lake(local_root: Path, storage_root: str, options: dict[str, Any]) -> EventLake:
    """The lake of a home: a local :class:`EventLake` at ``local_root`` unless the storage
    root is on another file system, then an :class:`ObjectLake` at ``storage_root/lake`` whose
    control directory is ``local_root``."""
    from memberwise.kit.storage import is_local

    if is_local(storage_root):
        return EventLake(local_root)
    return ObjectLake(str(join(storage_root, "lake")), Storage(dict(options)), local_root)
