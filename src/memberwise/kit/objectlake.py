"""The event lake on a store reached by URI (``s3://``, ``hdfs://``...): same layout, same
readers, commit records instead of renames.

An object store cannot rename atomically, so a day's file is written under its final name by one
PUT and then an append's commit record (``events/date=D/_commits/<uuid>.json``) lists it.
Readers trust only listed files: a crash between the PUT and the record leaves a file nobody
reads. The API's appends and a bulk ingest's publish both go this way; the local control
directory keeps what only one machine needs (a bulk ingest's staging and its markers).

Compaction, erasure's rewrite of day files and retention's day drops cannot replace a file in
place here: they write new files, commit a new manifest per day that lists them and unlists the
old ones, then delete what is unlisted (see the maintenance section below, and
docs/operations.md "Storage by URI").
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
    STALE_TEMP_SECONDS,
    CompactResult,
    EventLake,
    LakeStats,
    RemoveResult,
    deduplicated_sql,
    lake_days,
    partition_name,
    to_lake_table,
)
from memberwise.kit.lake_schema import LAKE_SCHEMA
from memberwise.kit.storage import COMMITS_DIR, MANIFEST, Storage, join

if TYPE_CHECKING:
    import duckdb
    import ibis


class LakeSettings(Protocol):
    """What :func:`lake_of` reads of :class:`memberwise.config.Settings` (a protocol, so the kit
    does not import the settings module, which imports the kit)."""

    @property
    def home(self) -> Path: ...
    @property
    def lake_dir(self) -> Path | None: ...
    @property
    def lake_root(self) -> Path: ...
    @property
    def storage_root(self) -> str: ...
    @property
    def storage_options(self) -> Mapping[str, Any]: ...


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
        written = []
        for day, part in lake_days(table):
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

    def data_files(self, partitions: Sequence[date] | None = None) -> list[str]:
        return self.uris(partitions)

    def signatures(self) -> list[str]:
        """The committed files' names relative to the lake: every write and rewrite here
        makes new names, so the names alone say whether the content may have changed."""
        return [u.removeprefix(self.uri + "/") for u in self.uris()]

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

        def source(files: Sequence[str]) -> str:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            return f"read_parquet([{listed}], hive_partitioning = false)"

        return deduplicated_sql(plain, groups, source)

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

    # -- maintenance: rewrite by manifest, then collect what is unlisted ----------------------
    #
    # An object store cannot rename, so compaction, erasure and retention never replace a file:
    # they write new files under new names, commit one new ``_manifest.json`` per day that
    # lists them and unlists the old ones (folding in the append records read), then delete
    # the unlisted objects. Readers trust only listed files, so they see the day before or
    # after the manifest's PUT, never a mix; a crash after the PUT leaves unlisted objects
    # that :meth:`collect_garbage` (or the same operation run again) deletes. The three are
    # serialized by the control directory's lock, like on a local lake.

    def compact(self, *, partitions: Sequence[date] | None = None) -> CompactResult:
        """Merge each day's committed files into one (the first-ingested copy of every
        ``event_id``), commit it by manifest, delete the files it replaces."""
        days = self.partitions() if partitions is None else sorted(partitions)
        totals = [0, 0, 0, 0, 0]
        with self._compact_lock(), self._duckdb() as con:
            for day in days:
                before, after, rows, removed = self._compact_day(con, day)
                totals[0] += 1 if before else 0
                totals[1] += before
                totals[2] += after
                totals[3] += rows
                totals[4] += removed
        return CompactResult(*totals)

    def _compact_day(self, con: duckdb.DuckDBPyConnection, day: date) -> tuple[int, int, int, int]:
        uri = self.day_uri(day)
        # A crashed writer's or rewrite's leftovers first (as a local lake's stale temp files).
        self.storage.collect_garbage(uri, older_than_seconds=STALE_TEMP_SECONDS)
        state = self.storage.commit_state(uri)
        names = state.files
        # A bulk ingest that has not finished keeps its files apart (as on a local lake).
        merge = [n for n in names if self.is_committed(Path(n))]
        uris = [str(join(uri, n)) for n in merge]
        stored = sum(self._rows(u) for u in uris)
        if len(merge) <= 1:
            return len(names), len(names), stored, 0
        name = f"compact-{uuid.uuid4().hex}.parquet"
        sql = (
            f"SELECT {_COLUMNS} FROM {_source(uris)} QUALIFY row_number() OVER "
            f"(PARTITION BY event_id ORDER BY {_WINNER_ORDER}) = 1 ORDER BY ts, event_id"
        )
        rows = self._write_query(con, sql, [], str(join(uri, name)))
        unlisted = self.storage.rewrite(uri, state, drop=merge, add=[name])
        self.storage.delete_unlisted(uri, unlisted)
        return len(names), len(names) - len(merge) + 1, rows, stored - rows

    def remove_where(self, where: str, params: Sequence[Any] = ()) -> RemoveResult:
        """Rewrite every committed file holding rows that match ``where`` without them (a
        file left empty is only unlisted), commit each touched day by manifest, then delete
        the replaced files: once this returns, no object under the lake holds those rows."""
        rewritten = removed = 0
        with self._compact_lock(), self._duckdb() as con:
            files = self.uris()
            if not files:
                return RemoveResult(0, 0)
            hits = con.execute(
                f"SELECT filename, count(*) FROM read_parquet({_listed(files)}, "
                f"hive_partitioning = false, filename = true) WHERE {where} GROUP BY filename",
                list(params),
            ).fetchall()
            by_day: dict[str, dict[str, int]] = {}
            for filename, count in hits:
                head, tail = posixpath.split(str(filename))
                by_day.setdefault(head, {})[tail] = int(count)
            for uri, counts in sorted(by_day.items()):
                state = self.storage.commit_state(uri)
                drop = [n for n in sorted(counts) if n in state.files]
                add = []
                for name in drop:
                    new = f"erase-{uuid.uuid4().hex}.parquet"
                    kept = self._write_query(
                        con,
                        f"SELECT {_COLUMNS} FROM {_source([str(join(uri, name))])} "
                        f"WHERE NOT ({where})",
                        list(params),
                        str(join(uri, new)),
                        skip_empty=True,
                    )
                    if kept:
                        add.append(new)
                    rewritten += 1
                    removed += counts[name]
                unlisted = self.storage.rewrite(uri, state, drop=drop, add=add)
                self.storage.delete_unlisted(uri, unlisted)
        return RemoveResult(rewritten, removed)

    def drop(self, days: Sequence[date]) -> RemoveResult:
        """Delete whole days (retention): an empty manifest unlists the day's files in one PUT,
        then its objects are deleted, the manifest last."""
        files = rows = 0
        with self._compact_lock():
            for day in days:
                uri = self.day_uri(day)
                state = self.storage.commit_state(uri)
                if not state.found and not self.storage.listdir(uri):
                    continue
                for name in state.files:
                    rows += self._rows(str(join(uri, name)))
                    files += 1
                unlisted = self.storage.rewrite(uri, state, drop=state.files, add=[])
                self.storage.delete_unlisted(uri, unlisted)
                leftovers = [
                    n for n in self.storage.listdir(uri) if n not in (MANIFEST, COMMITS_DIR)
                ]
                self.storage.delete_unlisted(uri, leftovers)
                self.storage.delete(uri)
        return RemoveResult(files, rows)

    def scrub_beside(self, member_ids: Sequence[str]) -> int:
        """Rewrite every Parquet object under the storage root but the lake (the builds and
        their models, scratch) without the rows of ``member_ids``."""
        root = posixpath.dirname(self.uri)
        return self.storage.scrub_parquet(root, member_ids, skip=[self.uri])

    def collect_garbage(self, *, older_than_seconds: float = STALE_TEMP_SECONDS) -> list[str]:
        """Delete every object of the lake's days that no commit record lists (a crashed
        writer's files older than ``older_than_seconds``, files a rewrite unlisted before a
        crash, folded-in append records). Idempotent; returns the URIs deleted."""
        deleted: list[str] = []
        with self._compact_lock():
            for day in self.partitions():
                uri = self.day_uri(day)
                found = self.storage.collect_garbage(uri, older_than_seconds=older_than_seconds)
                deleted.extend(str(join(uri, n)) for n in found)
        return deleted

    def _rows(self, uri: str) -> int:
        with self.storage.fs(uri).open(uri, "rb") as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    @contextmanager
    def _duckdb(self) -> Iterator[duckdb.DuckDBPyConnection]:
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            self.register(con)
            yield con
        finally:
            con.close()

    def _write_query(
        self,
        con: duckdb.DuckDBPyConnection,
        sql: str,
        params: list[Any],
        uri: str,
        *,
        skip_empty: bool = False,
    ) -> int:
        """Stream ``sql``'s rows into one new lake file at ``uri`` (one PUT); the rows. With
        ``skip_empty``, nothing is written for no rows."""
        reader = con.sql(sql, params=params).to_arrow_reader(ROW_GROUP_ROWS)
        first = next(iter(reader), None) if skip_empty else None
        if skip_empty and first is None:
            return 0
        rows = 0
        with (
            self.storage.fs(uri).open(uri, "wb") as handle,
            pq.ParquetWriter(handle, LAKE_SCHEMA, **PARQUET_OPTIONS) as writer,
        ):
            batches = reader if first is None else _chain(first, reader)
            for batch in batches:
                table = to_lake_table(pa.Table.from_batches([batch]))
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                rows += table.num_rows
        return rows

    def read_plan(self) -> tuple[list[Path], list[list[Path]]]:
        raise RemoteLakeError(f"the lake at {self.uri} has no local files: use uri_plan()")


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _listed(files: Sequence[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _source(files: Sequence[str]) -> str:
    return f"read_parquet({_listed(files)}, hive_partitioning = false)"


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


def lake_of(settings: LakeSettings) -> EventLake:
    """The event lake ``settings`` name: under the storage URI (a local directory by default,
    an :class:`ObjectLake` on an object store), or at ``MEMBERWISE_LAKE_DIR`` when that is set.

    It lives here rather than in :mod:`memberwise.runtime` so that ``memberwise ingest`` opens
    the lake without importing the API's stack (over a second of start-up)."""
    return open_lake(
        settings.lake_root,
        settings.home.as_uri() if settings.lake_dir else settings.storage_root,
        dict(settings.storage_options),
    )
