"""Storage by URI: the lake, the builds and their scratch under one base URI (``file://``,
``s3://``, ``hdfs://``), through fsspec file systems.

Crash-safe writes are kept where the store allows, the way table formats do it:

- on file systems with an atomic rename (local disks, HDFS) a file or a directory of files is
  written under a dot name and renamed into place, so readers see the old one or the whole new
  one;
- on object stores (S3 and its kin) nothing can be renamed atomically, so data files are
  written first under names no reader trusts yet, then a **commit record** is written in one
  PUT (an object appears whole or not at all). Readers trust only files a commit record lists:
  a crash between the two leaves unlisted files, invisible and cleaned up later.

Two commit-record shapes exist: a directory written in one go (a Spark output) gets
``_manifest.json`` naming its files; a directory appended to by many writers (a lake day) gets
one ``_commits/<uuid>.json`` per append, so concurrent writers never overwrite each other's
record.

**Pointers.** A local directory holding only :data:`POINTER` (``{"uri": ...}``) stands for an
artifact stored elsewhere: a Spark build on an object store leaves one in the driver's working
copy for each artifact its executors wrote straight to the build's committed location. Every
reader here (:meth:`Storage.parquet_files`, :meth:`Storage.read_table`, the batches, row
counts and schema, and the module's functions) follows it to the remote artifact, reached with
the storage :func:`configure` named for its scheme, so a caller holding the working copy's path
(``build_dir / "tiers.parquet"``) reads the remote files without knowing.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

#: The commit record of a directory written in one go (Spark output, a rewritten artifact).
MANIFEST = "_manifest.json"
#: The commit records of a directory appended to by many writers (one per append).
COMMITS_DIR = "_commits"
#: Schemes whose rename is atomic (a reader never sees half a rename).
ATOMIC_RENAME = frozenset({"file", "local", "hdfs", "viewfs"})
#: The file that makes a local directory a pointer to an artifact stored elsewhere (a dot
#: name: no reader takes it for data, and a build's upload skips it).
POINTER = ".location.json"


@dataclass(frozen=True)
class CommitState:
    """The commit records of a directory as read at one moment: the manifest's files (if it
    has one), the append records it folded in, the live append records (name -> files), every
    append record present (folded in or not) and the files the manifest unlisted."""

    has_manifest: bool
    manifest_files: list[str]
    superseded: frozenset[str]
    records: dict[str, list[str]]
    present_records: list[str]
    #: Files the manifest stopped listing (deletable at once, unlike a file never listed).
    unlisted: frozenset[str] = frozenset()

    @property
    def found(self) -> bool:
        """True when the directory has any commit record (then only listed files count)."""
        return self.has_manifest or bool(self.records)

    @property
    def files(self) -> list[str]:
        """The names the directory holds now: the manifest's plus every live append's."""
        names = set(self.manifest_files)
        for listed in self.records.values():
            names.update(listed)
        return sorted(names)


def scheme_of(uri: str | Path) -> str:
    """``s3``, ``hdfs``, ``file``...; a plain path is ``file``."""
    text = str(uri)
    parsed = urlparse(text)
    # A Windows drive letter or a bare path has no scheme worth the name.
    return parsed.scheme if len(parsed.scheme) > 1 else "file"


def is_local(uri: str | Path) -> bool:
    """True for a plain path or a ``file://`` URI."""
    return scheme_of(uri) in ("file", "local")


def local_path(uri: str | Path) -> Path:
    """The local path of a ``file://`` URI or plain path. Raises ValueError for another
    scheme."""
    if isinstance(uri, Path):
        return uri
    if not is_local(uri):
        raise ValueError(f"{uri} is not on the local file system")
    return Path(urlparse(uri).path) if uri.startswith("file:") else Path(uri)


def join(base: str | Path, *parts: str) -> str | Path:
    """``base`` with ``parts`` appended: a Path stays a Path, a URI stays a URI."""
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return posixpath.join(base.rstrip("/"), *parts)


@dataclass(frozen=True)
class Storage:
    """A file system reached by URI, with the options its fsspec implementation takes
    (``endpoint_url``, ``key``, ``secret``... for s3fs)."""

    options: dict[str, Any] = field(default_factory=dict)

    def fs(self, uri: str | Path) -> fsspec.AbstractFileSystem:
        """The fsspec file system of ``uri``'s scheme (cached per scheme)."""
        return self._fs_for(scheme_of(uri))

    def _fs_for(self, scheme: str) -> fsspec.AbstractFileSystem:
        cache = self._cache
        if scheme not in cache:
            options = {} if scheme in ("file", "local") else dict(self.options)
            cache[scheme] = fsspec.filesystem(scheme, **options)
        return cache[scheme]

    @cached_property
    def _cache(self) -> dict[str, fsspec.AbstractFileSystem]:
        return {}

    # -- plain operations --------------------------------------------------------------------

    def exists(self, uri: str | Path) -> bool:
        return bool(self.fs(uri).exists(str(uri)))

    def is_dir(self, uri: str | Path) -> bool:
        return bool(self.fs(uri).isdir(str(uri)))

    def read_bytes(self, uri: str | Path) -> bytes:
        with self.fs(uri).open(str(uri), "rb") as handle:
            data: bytes = handle.read()
        return data

    def write_bytes(self, uri: str | Path, data: bytes) -> None:
        """Write ``data`` so that readers see the old object or the whole new one (temp name,
        fsync, rename locally; one PUT on an object store)."""
        if is_local(uri):
            from memberwise.kit.lake import atomic_write_bytes

            atomic_write_bytes(local_path(uri), data)
            return
        fs = self.fs(uri)
        if scheme_of(uri) in ATOMIC_RENAME:
            tmp = _dot_name(str(uri))
            with fs.open(tmp, "wb") as handle:
                handle.write(data)
            fs.mv(tmp, str(uri))
        else:
            with fs.open(str(uri), "wb") as handle:
                handle.write(data)

    def delete(self, uri: str | Path) -> None:
        """Remove a file or a directory tree; nothing when it does not exist."""
        fs = self.fs(uri)
        if fs.exists(str(uri)):
            fs.rm(str(uri), recursive=True)

    def makedirs(self, uri: str | Path) -> None:
        """Create a directory (a no-op on object stores, which have none)."""
        self.fs(uri).makedirs(str(uri), exist_ok=True)

    def listdir(self, uri: str | Path) -> list[str]:
        """Names (not paths) directly under ``uri``; empty when it does not exist."""
        fs = self.fs(uri)
        fs.invalidate_cache()
        try:
            entries = fs.ls(str(uri), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    # -- committed files -----------------------------------------------------------------------

    def commit_directory(
        self,
        uri: str | Path,
        files: Sequence[str],
        *,
        supersedes: Sequence[str] = (),
        unlisted: Sequence[str] = (),
    ) -> None:
        """Record ``files`` (names relative to ``uri``) as the directory's whole content: the
        ``_manifest.json`` readers of an object store trust. ``supersedes`` names append
        records (``_commits/<name>``) the manifest folds in: readers ignore them from now on,
        whether or not they are deleted yet; ``unlisted`` names files it stops listing, which
        garbage collection may delete at once (see :meth:`rewrite`)."""
        body = {
            "files": sorted(files),
            "supersedes": sorted(supersedes),
            "unlisted": sorted(unlisted),
            "committed": uuid.uuid4().hex,
        }
        self.write_bytes(join(uri, MANIFEST), json.dumps(body).encode())

    def commit_append(self, uri: str | Path, files: Sequence[str]) -> None:
        """Record an append of ``files`` (names relative to ``uri``) with a commit record of
        its own, so concurrent appenders never overwrite each other."""
        body = {"files": sorted(files)}
        self.write_bytes(
            join(uri, COMMITS_DIR, f"{uuid.uuid4().hex}.json"), json.dumps(body).encode()
        )

    def commit_state(self, uri: str | Path) -> CommitState:
        """What the commit records of ``uri`` say now (see :class:`CommitState`)."""
        fs = self.fs(uri)
        fs.invalidate_cache()  # another process may have committed since the last listing
        manifest_files: list[str] = []
        superseded: frozenset[str] = frozenset()
        unlisted: frozenset[str] = frozenset()
        has_manifest = False
        manifest = join(uri, MANIFEST)
        if fs.exists(str(manifest)):
            has_manifest = True
            body = json.loads(self.read_bytes(manifest))
            manifest_files = list(body["files"])
            superseded = frozenset(body.get("supersedes", ()))
            unlisted = frozenset(body.get("unlisted", ()))
        records: dict[str, list[str]] = {}
        present: list[str] = []
        commits = join(uri, COMMITS_DIR)
        for name in self.listdir(commits):
            if not name.endswith(".json") or name.startswith("."):
                continue
            present.append(name)
            if name not in superseded:
                try:
                    records[name] = list(json.loads(self.read_bytes(join(commits, name)))["files"])
                except FileNotFoundError:  # folded in and deleted since the listing
                    continue
        return CommitState(has_manifest, manifest_files, superseded, records, present, unlisted)

    def committed(self, uri: str | Path) -> list[str] | None:
        """The files (full URIs/paths) the commit records of ``uri`` list, or None when it has
        no commit record (then its visible files are its content, as on a local disk)."""
        state = self.commit_state(uri)
        if not state.found:
            return None
        return [str(join(uri, name)) for name in state.files]

    def rewrite(
        self, uri: str | Path, state: CommitState, *, drop: Sequence[str], add: Sequence[str]
    ) -> list[str]:
        """Replace files of the committed directory ``uri`` without renaming anything, the way
        table formats do: ``add`` (names already written under ``uri``) are listed and ``drop``
        unlisted by one new ``_manifest.json`` that folds in every append record ``state``
        saw; appends committed after ``state`` was read keep their own records and stay
        listed. Returns the names to delete afterwards (:meth:`delete_unlisted`): the dropped
        files and the folded-in records. Readers trust the manifest from its PUT on, so a crash
        before the deletes leaves only unlisted objects, which a later collection removes."""
        kept = sorted((set(state.files) - set(drop)) | set(add))
        gone = sorted(set(drop) - set(kept))
        self.commit_directory(uri, kept, supersedes=state.present_records, unlisted=gone)
        return gone + [f"{COMMITS_DIR}/{name}" for name in state.present_records]

    def delete_unlisted(self, uri: str | Path, names: Sequence[str]) -> int:
        """Delete ``names`` under ``uri`` (what :meth:`rewrite` unlisted); idempotent: an
        object already gone counts nothing. Returns the objects deleted."""
        fs = self.fs(uri)
        deleted = 0
        for name in names:
            target = str(join(uri, name))
            try:
                fs.rm_file(target)
                deleted += 1
            except FileNotFoundError:
                continue
        fs.invalidate_cache()
        return deleted

    def collect_garbage(self, uri: str | Path, *, older_than_seconds: float) -> list[str]:
        """Delete what no commit record of the committed directory ``uri`` lists: data files
        (a crashed writer's, or ones a rewrite unlisted before a crash) and append records a
        manifest folded in. Data files younger than ``older_than_seconds`` are spared (an
        append in flight writes its file before its record). Safe to run again at any time;
        files the manifest itself unlisted go at once, whatever their age; a directory without
        commit records is left alone. Returns the names deleted."""
        state = self.commit_state(uri)
        if not state.found:
            return []
        listed = set(state.files)
        cutoff = time.time() - older_than_seconds
        fs = self.fs(uri)
        doomed = [
            f"{COMMITS_DIR}/{name}" for name in state.present_records if name in state.superseded
        ]
        for name in self.listdir(uri):
            if name in listed or name in (MANIFEST, COMMITS_DIR):
                continue
            target = str(join(uri, name))
            if fs.isdir(target):
                continue
            young = older_than_seconds > 0 and _modified(fs, target) > cutoff
            if young and name not in state.unlisted:
                continue
            doomed.append(name)
        self.delete_unlisted(uri, doomed)
        return sorted(doomed)

    def resolve(self, uri: str | Path) -> tuple[Storage, str | Path]:
        """Where ``uri``'s data is and the storage that reaches it: the target of a pointer
        directory (see :data:`POINTER`), else ``uri`` itself with this storage."""
        target = pointed(uri)
        if target is None:
            return self, uri
        return (self if self.options else storage_for(target)), target

    def parquet_files(self, uri: str | Path) -> list[str]:
        """The Parquet files that make up ``uri``: itself when it is a file; else the files its
        commit records list; else (a local or HDFS directory renamed into place) its visible
        ``*.parquet`` files; a pointer's target's files. Dot and underscore names are never
        data."""
        storage, target = self.resolve(uri)
        if storage is not self or target is not uri:
            return storage.parquet_files(target)
        fs = self.fs(uri)
        text = str(uri)
        if not fs.isdir(text):
            return [text]
        listed = self.committed(uri)
        if listed is not None:
            return listed
        return [
            str(join(uri, name))
            for name in self.listdir(uri)
            if name.endswith(".parquet") and not name.startswith((".", "_"))
        ]

    def read_table(self, uri: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
        """A Parquet file or committed directory as one Arrow table."""
        storage, uri = self.resolve(uri)
        if storage is not self:
            return storage.read_table(uri, columns)
        files = self.parquet_files(uri)
        fs = None if is_local(uri) else self.fs(uri)
        paths = [_fs_path(f) for f in files]
        cols = list(columns) if columns is not None else None
        if not paths:
            raise FileNotFoundError(f"{uri} holds no committed Parquet file")
        dataset = pq.ParquetDataset(paths, filesystem=fs)
        return dataset.read(columns=cols)

    def iter_batches(
        self, uri: str | Path, batch_size: int, columns: Sequence[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of a Parquet file or committed directory, file by file (bounded
        memory)."""
        storage, uri = self.resolve(uri)
        if storage is not self:
            yield from storage.iter_batches(uri, batch_size, columns)
            return
        for name in self.parquet_files(uri):
            with self.fs(uri).open(name, "rb") as handle:
                reader = pq.ParquetFile(handle)
                yield from reader.iter_batches(
                    batch_size=batch_size, columns=list(columns) if columns else None
                )

    def num_rows(self, uri: str | Path) -> int:
        """Rows of a Parquet file or committed directory, from the footers only."""
        storage, uri = self.resolve(uri)
        if storage is not self:
            return storage.num_rows(uri)
        total = 0
        for name in self.parquet_files(uri):
            with self.fs(uri).open(name, "rb") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total

    def schema(self, uri: str | Path) -> pa.Schema:
        """The Arrow schema of a Parquet file or committed directory (its first file)."""
        storage, uri = self.resolve(uri)
        if storage is not self:
            return storage.schema(uri)
        files = self.parquet_files(uri)
        with self.fs(uri).open(files[0], "rb") as handle:
            return pq.ParquetFile(handle).schema_arrow

    def scrub_parquet(
        self, root: str, member_ids: Sequence[str], *, skip: Sequence[str] = ()
    ) -> int:
        """Rewrite every Parquet object under ``root`` (but not under ``skip``) that holds rows
        of ``member_ids`` in a ``member_id`` or ``*_member_id`` column, without those rows,
        each by one PUT under its own name (build artifacts: listed by name in their manifest,
        so they stay committed). Returns the objects rewritten. Erasure's counterpart of a
        walk of the home directory, for what lives on an object store."""
        import pyarrow.compute as pc

        fs = self.fs(root)
        fs.invalidate_cache()
        base = root.split("://", 1)[-1].rstrip("/")
        scheme = scheme_of(root)
        skipped = [s.split("://", 1)[-1].rstrip("/") + "/" for s in skip]
        values = pa.array(sorted(set(member_ids)), pa.string())
        changed = 0
        try:
            found = sorted(fs.find(base))
        except FileNotFoundError:
            return 0
        for path in found:
            if not path.endswith(".parquet") or any(path.startswith(s) for s in skipped):
                continue
            uri = f"{scheme}://{path}"
            with fs.open(uri, "rb") as handle:
                table = pq.read_table(handle)
            keep = None
            for name in table.column_names:
                column = table.column(name)
                wanted = name == "member_id" or name.endswith("_member_id")
                if not wanted or not pa.types.is_string(column.type):
                    continue
                hit = pc.fill_null(pc.is_in(column, value_set=values), False)
                keep = pc.invert(hit) if keep is None else pc.and_(keep, pc.invert(hit))
            if keep is None or pc.all(keep).as_py():
                continue
            with fs.open(uri, "wb") as handle:
                pq.write_table(table.filter(keep), handle, compression="zstd")
            changed += 1
        return changed

    def register(self, duckdb_con: Any, uris: Sequence[str | Path]) -> None:
        """Let a DuckDB connection read ``uris`` of remote schemes through fsspec (DuckDB's own
        S3 reader is an extension fetched from the internet, which these machines lack)."""
        registered = set(duckdb_con.list_filesystems())
        for scheme in sorted({scheme_of(u) for u in uris} - {"file", "local"}):
            fs = self._fs_for(scheme)
            protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
            if not protocols & registered:
                duckdb_con.register_filesystem(fs)
                registered |= protocols


#: Storage without options (local paths and anything configured by the environment).
DEFAULT = Storage()

#: The storage reaching each remote scheme in this process (see :func:`configure`).
_CONFIGURED: dict[str, Storage] = {}


def configure(storage: Storage, uri: str | Path) -> None:
    """Name ``storage`` (the settings' file system options) as the one reaching ``uri``'s
    scheme in this process: pointers to that scheme are read with it, and
    :func:`register_configured` lets DuckDB connections read it. Called where builds meet the
    settings (:class:`memberwise.builds.BuildStore`); local paths need none."""
    if not is_local(uri):
        _CONFIGURED[scheme_of(uri)] = storage


def storage_for(uri: str | Path) -> Storage:
    """The storage :func:`configure` named for ``uri``'s scheme, else the default one."""
    return _CONFIGURED.get(scheme_of(uri), DEFAULT)


def register_configured(duckdb_con: Any) -> None:
    """Let a DuckDB connection read every scheme :func:`configure` named (artifacts a pointer
    sends to an object store), through fsspec."""
    for scheme, storage in sorted(_CONFIGURED.items()):
        storage.register(duckdb_con, [f"{scheme}://"])


def pointed(path: str | Path) -> str | None:
    """The URI a pointer directory at ``path`` names, or None when ``path`` is no pointer
    (not local, not a directory, or a directory of data)."""
    if not is_local(path):
        return None
    record = local_path(path) / POINTER
    try:
        body = json.loads(record.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    target = body.get("uri")
    return str(target) if isinstance(target, str) else None


def write_pointer(path: Path, uri: str) -> None:
    """Make ``path`` (replacing a file, a directory or an older pointer there) a pointer to
    the artifact at ``uri``: a directory holding only :data:`POINTER`, renamed into place."""
    tmp = Path(temp_sibling(path))
    tmp.mkdir(parents=True)
    from memberwise.kit.lake import atomic_write_bytes

    atomic_write_bytes(tmp / POINTER, json.dumps({"uri": uri}).encode())
    replace_directory(tmp, path)


def _modified(fs: fsspec.AbstractFileSystem, path: str) -> float:
    """Seconds since the epoch of ``path``'s last write (0 when the store does not say)."""
    try:
        return float(fs.modified(path).timestamp())
    except (NotImplementedError, OSError, AttributeError):
        return 0.0


def _dot_name(uri: str) -> str:
    head, tail = posixpath.split(uri)
    return posixpath.join(head, f".tmp-{uuid.uuid4().hex}-{tail}")


def _fs_path(uri: str) -> str:
    """The path fsspec/pyarrow wants for ``uri`` (scheme kept off for local files)."""
    return str(local_path(uri)) if is_local(uri) else uri


def temp_sibling(uri: str | Path) -> str | Path:
    """A dot-named sibling of ``uri`` for writing before a rename."""
    if isinstance(uri, Path):
        return uri.with_name(f".tmp-{uuid.uuid4().hex}-{uri.name}")
    return _dot_name(uri)


def replace_directory(tmp: Path, final: Path) -> None:
    """Move a finished local directory ``tmp`` to ``final`` (replacing an older one): the new
    directory is renamed in whole, then the old one, set aside first, is deleted."""
    import shutil

    from memberwise.kit.lake import fsync_dir

    old: Path | None = None
    if final.exists():
        old = final.with_name(f".old-{uuid.uuid4().hex}-{final.name}")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# -- readers of one artifact, whichever engine wrote it (one file, or a Spark directory) --------


def parquet_files(path: str | Path) -> list[str]:
    """The Parquet files of an artifact: :meth:`Storage.parquet_files` on the default storage."""
    return DEFAULT.parquet_files(path)


def parquet_sql(path: str | Path) -> str:
    """A DuckDB list literal of an artifact's files, for ``read_parquet(...)`` (DuckDB does not
    read a directory by its name)."""
    quoted = (
        "'" + str(local_path(f) if is_local(f) else f).replace("'", "''") + "'"
        for f in parquet_files(path)
    )
    # (A pointer's remote files are read through the file system register_configured adds.)
    return "[" + ", ".join(quoted) + "]"


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """An artifact as one Arrow table (:meth:`Storage.read_table` on the default storage)."""
    return DEFAULT.read_table(path, columns)


def parquet_batches(
    path: str | Path, batch_size: int, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """An artifact's record batches, file by file (:meth:`Storage.iter_batches`)."""
    return DEFAULT.iter_batches(path, batch_size, columns)


def artifact_exists(path: str | Path) -> bool:
    """True for an artifact file or a committed/renamed artifact directory."""
    return DEFAULT.exists(path)
