"""What a build stage is handed: the build's context, its result record and where builds live.

It sits below every domain that contributes a stage (profiles, predict, membership, recommend,
...) and below ``jobs``, which runs the stages in order: a stage imports this module, never
``memberwise.jobs``, so the pipeline and its stages depend on each other in one direction.

Where builds live (:class:`BuildStore`): under the storage URI's ``builds/`` folder. On a local
disk (the default, ``file://``) that is ``HOME/warehouse/builds/<build_id>/`` as it always was:
stages write their artifacts in place (each file by temp name and rename) and ``build.json``,
written last by an atomic rename, is what makes a directory a build. On an object store
(``s3://``) the driver keeps a working copy in that same local folder and
:meth:`BuildStore.commit` uploads its files to ``<storage>/builds/<build_id>/``, then PUTs
``_manifest.json`` last, listing them: readers trust only a build with a manifest, so a build
killed before it (or during the upload) is invisible, and pruning deletes its objects later.
The models a build fits (``models/``, ``recommender/``) are files of the build, so they live
and go with it. ``_published.json`` at the builds root names the build published last.

A **Spark build on an object store** writes no member-sized artifact to the driver's disk:
the executors may run on machines that do not share it. The build's backend is told where the
build is committed (:func:`memberwise.kit.warehouse.redirect_outputs`), so every Spark write
of an artifact named in the working copy (``write_parquet(con, expr, ctx.path(name))``, from
any stage) goes straight to ``<storage>/builds/<build_id>/<name>/`` -- one object per task,
committed by that artifact's own ``_manifest.json`` -- and leaves in the working copy only a
pointer (a directory holding :data:`~memberwise.kit.storage.POINTER`). Why there and not a new
``ctx.output(name)`` for stages to call: stages of every domain already name their outputs
with :meth:`BuildContext.path`, so one rule in the backend covers all of them, now and later,
and DuckDB or local builds (which never get the rule) keep their exact layout. Readers follow
the pointer in one place, :mod:`memberwise.kit.storage` (``ctx.table``, ``read_parquet``,
``read_table``, ``parquet_batches``, ``parquet_sql``), so the later stages and every domain's
publisher, handed the working copy's path, read the remote artifact in batches, not a
download. :meth:`BuildStore.commit` lists a pointer's files (the artifact's manifest and the
objects it names) in the build's manifest and uploads nothing for them; the small files the
driver makes (``build.json``, ``predictions.json``, models, invitations) are uploaded as
before. ``--only`` inputs of such a build are copied server-side into the new build's folder
(no download, and the new build does not depend on the old one surviving pruning), and a
failed build's remote folder is deleted (a killed one's is pruned after
:data:`STALE_BUILD_SECONDS`). Readers of a committed build (``latest_build``, ``checkout``)
see the same manifest whichever engine made it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from memberwise.config import Engine
from memberwise.kit.storage import (
    MANIFEST,
    POINTER,
    Storage,
    configure,
    is_local,
    join,
    pointed,
    replace_directory,
)
from memberwise.kit.warehouse import read_parquet, storage_of
from memberwise.program.schemas import Program
from memberwise.runtime import Runtime


@dataclass
class StageResult:
    name: str
    seconds: float
    rows: int


@dataclass
class BuildResult:
    """What a build did: its id, directory, clock, counts and time per stage."""

    build_id: str
    directory: Path
    as_of: datetime
    engine: Engine
    stages: list[StageResult] = field(default_factory=list)
    members: int = 0
    events_read: int = 0

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


#: Called as ``progress(stage, step, total)`` while a stage runs (the CLI draws bars with it).
ProgressFn = Callable[[str, int, int], None]


@dataclass
class BuildContext:
    """One build's shared state, handed to each stage in turn."""

    runtime: Runtime
    program: Program
    con: ibis.BaseBackend
    directory: Path
    result: BuildResult
    progress: ProgressFn
    meta: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.directory / name

    def table(self, name: str) -> ir.Table:
        """The artifact ``name`` as a table of the build's backend (wherever it is stored)."""
        return read_parquet(self.con, [self.path(name)])

    def location(self, name: str) -> Path | str:
        """Where the artifact ``name`` is: the URI its pointer in the working copy names (a
        Spark build on an object store writes there), else its local path."""
        path = self.path(name)
        return pointed(path) or path

    def scratch(self, folder: str) -> Path | str:
        """Where a stage's intermediates go, deleted by :meth:`drop_scratch` when it ends:
        ``folder`` inside the build directory when the storage is local, else under the
        storage URI (``BASE/warehouse/work/<build_id>/folder``), where a cluster's executors
        can all write and read."""
        if is_local(self.runtime.settings.storage_root):
            local = self.path(folder)
            local.mkdir(exist_ok=True)
            return local
        return work_folder(self.runtime, self.result.build_id, folder)

    def drop_scratch(self, location: Path | str) -> None:
        """Delete what :meth:`scratch` gave (nothing when it is gone already)."""
        with contextlib.suppress(OSError):
            storage_of(self.con).delete(location)


def work_folder(runtime: Runtime, *parts: str) -> Path | str:
    """A folder for intermediates a cluster's executors read and write: under the storage URI
    (``BASE/warehouse/work/<parts>``) when it is remote, else ``HOME/warehouse/work/<parts>``
    (created)."""
    root = runtime.settings.storage_root
    if is_local(root):
        local = runtime.settings.home.joinpath("warehouse", "work", *parts)
        local.mkdir(parents=True, exist_ok=True)
        return local
    return join(root, "warehouse", "work", *parts)


def builds_root(runtime: Runtime) -> Path:
    """The local builds folder: the builds themselves on a local disk, their working copies
    (and a cache of downloaded ones) when builds live on an object store."""
    return runtime.settings.home / "warehouse" / "builds"


def previous_builds(root: Path) -> list[Path]:
    """Earlier build directories with a ``build.json``, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "build.json").exists()]
    return sorted(found, key=lambda p: p.name, reverse=True)


#: What makes a local build directory a build (written last, by rename).
BUILD_JSON = "build.json"
#: The builds root's record of the build published last (``{"build_id": ..., "at": ...}``).
PUBLISHED = "_published.json"
#: A working copy's record of what was uploaded (relative path -> [size, mtime_ns]).
UPLOADED = ".uploaded.json"
#: An uncommitted build older than this is a killed build's leftover, which pruning deletes.
STALE_BUILD_SECONDS = 24 * 3600


@dataclass(frozen=True)
class BuildStore:
    """The builds of a home: ``local`` is the local builds folder; ``uri`` the builds root on
    an object store, or None when builds live on the local disk (then ``local`` is it)."""

    local: Path
    uri: str | None
    storage: Storage

    @classmethod
    def of(cls, runtime: Runtime) -> BuildStore:
        """The builds under ``runtime``'s storage URI."""
        settings = runtime.settings
        root = settings.storage_root
        uri = None if is_local(root) else str(join(root, "builds"))
        storage = Storage(dict(settings.storage_options))
        if uri is not None:
            configure(storage, uri)  # pointers to the builds' objects are read with it
        return cls(builds_root(runtime), uri, storage)

    @property
    def remote(self) -> bool:
        return self.uri is not None

    def location(self, build_id: str) -> Path | str:
        """Where the committed build lives (a local path, or a URI)."""
        return self.local / build_id if self.uri is None else str(join(self.uri, build_id))

    # -- listing -------------------------------------------------------------------------------

    def committed(self) -> list[str]:
        """Ids of the committed builds, newest first."""
        if self.uri is None:
            return [p.name for p in previous_builds(self.local)]
        found = [
            name
            for name in self.storage.listdir(self.uri)
            if not name.startswith(("_", ".")) and self.storage.exists(self._manifest_uri(name))
        ]
        return sorted(found, reverse=True)

    def is_committed(self, build_id: str) -> bool:
        if self.uri is None:
            return (self.local / build_id / BUILD_JSON).exists()
        return self.storage.exists(self._manifest_uri(build_id))

    def files(self, build_id: str) -> list[str]:
        """The committed build's files, relative to it (``a.parquet``, ``models/churn.txt``)."""
        if self.uri is None:
            directory = self.local / build_id
            return sorted(
                str(p.relative_to(directory))
                for p in directory.rglob("*")
                if p.is_file() and not _hidden(p.relative_to(directory).parts)
            )
        body = json.loads(self.storage.read_bytes(self._manifest_uri(build_id)))
        return list(body["files"])

    def has(self, build_id: str, name: str) -> bool:
        """True when the committed build holds the artifact ``name`` (a file or a folder)."""
        if self.uri is None:
            return not _hidden(Path(name).parts) and (self.local / build_id / name).exists()
        return any(f == name or f.startswith(f"{name}/") for f in self.files(build_id))

    def manifest(self, build_id: str) -> dict[str, Any]:
        """The committed build's ``build.json``."""
        if self.uri is None:
            loaded: dict[str, Any] = json.loads((self.local / build_id / BUILD_JSON).read_text())
            return loaded
        remote: dict[str, Any] = json.loads(
            self.storage.read_bytes(join(self.uri, build_id, BUILD_JSON))
        )
        return remote

    def latest(self, needs: Sequence[str] = ()) -> str | None:
        """The newest committed build holding every artifact of ``needs``."""
        return next(
            (b for b in self.committed() if all(self.has(b, n) for n in needs)),
            None,
        )

    # -- reading into a local directory ----------------------------------------------------------

    def copy_artifact(self, build_id: str, name: str, target: Path) -> None:
        """Put the committed build's artifact ``name`` (a file or a folder) at ``target``:
        hard links on a local disk (builds share unchanged files), downloads otherwise (to a
        temp name, renamed into place)."""
        if self.uri is None:
            source = self.local / build_id / name
            if source.is_dir():  # a Spark-written artifact: link its files one by one
                shutil.copytree(source, target, copy_function=link_or_copy)
            else:
                link_or_copy(source, target)
            return
        files = [f for f in self.files(build_id) if f == name or f.startswith(f"{name}/")]
        if not files:
            raise FileNotFoundError(f"build {build_id} has no {name}")
        tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
        fs = self.storage.fs(self.uri)
        for relative in files:
            inner = relative[len(name) :].lstrip("/")
            local = tmp / inner if inner else tmp
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(str(join(self.uri, build_id, relative)), str(local))
        replace_directory(tmp, target)

    def checkout(self, build_id: str, needs: Sequence[str] | None = None) -> Path:
        """A local directory holding the committed build (only ``needs`` and ``build.json``
        when given): the build itself on a local disk, a cached download otherwise (fetched
        again when the build was committed anew since). On the machine that ran a Spark build
        its working copy's pointers to the build's own artifacts are kept, not downloaded
        (every :mod:`memberwise.kit.storage` reader follows them)."""
        directory = self.local / build_id
        if self.uri is None:
            return directory
        stamp = self.storage.read_bytes(self._manifest_uri(build_id))
        marker = directory / ".checkout.json"
        fetched: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            fetched = json.loads(marker.read_text())
        if fetched.get("manifest") != stamp.decode():
            fetched = {"manifest": stamp.decode(), "names": []}
        names = [BUILD_JSON, *(needs if needs is not None else self._top_names(build_id))]
        directory.mkdir(parents=True, exist_ok=True)
        own = str(self.location(build_id))
        for name in dict.fromkeys(names):
            if name in fetched["names"] and (directory / name).exists():
                continue
            if pointed(directory / name) == f"{own}/{name}":  # the committed objects themselves
                fetched["names"].append(name)
                continue
            self.copy_artifact(build_id, name, directory / name)
            fetched["names"].append(name)
        from memberwise.kit.lake import atomic_write_bytes

        atomic_write_bytes(marker, json.dumps(fetched).encode())
        return directory

    def _top_names(self, build_id: str) -> list[str]:
        return sorted({f.split("/", 1)[0] for f in self.files(build_id)})

    # -- committing ------------------------------------------------------------------------------

    def commit(self, directory: Path) -> None:
        """Make the working copy ``directory`` (with its ``build.json``) the committed build of
        its name. Local disk: nothing to do (``build.json`` was renamed in last). Object store:
        upload the files changed since the last commit, then PUT ``_manifest.json`` listing
        every file: the build is visible from that PUT on, whole."""
        if self.uri is None:
            return
        build_id = directory.name
        from memberwise.kit.lake import atomic_write_bytes

        record = directory / UPLOADED
        uploaded: dict[str, list[int]] = {}
        with contextlib.suppress(OSError, ValueError):
            uploaded = json.loads(record.read_text())
        fs = self.storage.fs(self.uri)
        files = []
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if not path.is_file() or _hidden(relative.parts):
                continue
            name = relative.as_posix()
            files.append(name)
            stat = path.stat()
            signature = [stat.st_size, stat.st_mtime_ns]
            if uploaded.get(name) != signature:
                fs.put_file(str(path), str(join(self.uri, build_id, name)))
                uploaded[name] = signature
        atomic_write_bytes(record, json.dumps(uploaded).encode())
        files += self._pointed_files(directory)
        self.storage.commit_directory(join(self.uri, build_id), files)

    def _pointed_files(self, directory: Path) -> list[str]:
        """The files of the artifacts the working copy ``directory`` only points at (written
        by Spark's executors straight to the build's location), relative to the build: each
        artifact's ``_manifest.json`` and the objects it lists, or the object itself."""
        assert self.uri is not None
        build_uri = str(join(self.uri, directory.name))
        found: list[str] = []
        for record in sorted(directory.rglob(POINTER)):
            relative = record.parent.relative_to(directory).as_posix()
            target = pointed(record.parent)
            if target != f"{build_uri}/{relative}":
                raise ValueError(f"{record.parent} points outside its build: {target}")
            state = self.storage.commit_state(target)
            if state.has_manifest:
                found += [f"{relative}/{MANIFEST}", *(f"{relative}/{n}" for n in state.files)]
            elif self.storage.fs(target).isfile(target):
                found.append(relative)
            elif self.storage.is_dir(target):  # renamed into place (HDFS): its part files
                found += [
                    f"{relative}/{f[len(target) + 1 :]}" for f in self.storage.parquet_files(target)
                ]
            else:
                raise FileNotFoundError(f"{target} holds no committed artifact")
        return found

    def copy_within(self, source: str, name: str, build_id: str) -> str:
        """Copy the committed build ``source``'s artifact ``name`` into build ``build_id``'s
        folder on the object store, object by object on the server (nothing passes through
        this machine), committed by its own manifest; returns its URI. The copies sit in an
        ``attempt-`` folder, so a Spark write of the same name later replaces them."""
        assert self.uri is not None
        origin = str(join(self.uri, source, name))
        target = str(join(self.uri, build_id, name))
        listed = [f for f in self.files(source) if f == name or f.startswith(f"{name}/")]
        if not listed:
            raise FileNotFoundError(f"build {source} has no {name}")
        if listed == [name]:  # one object (a DuckDB build's file)
            data = [origin]
        elif f"{name}/{MANIFEST}" in listed:
            data = [str(join(origin, f)) for f in self.storage.commit_state(origin).files]
        else:  # a directory uploaded from a working copy: its visible part files
            data = [
                str(join(self.uri, source, f))
                for f in listed
                if f.endswith(".parquet") and not f.rsplit("/", 1)[-1].startswith((".", "_"))
            ]
        attempt = f"attempt-linked-{uuid.uuid4().hex}"
        fs = self.storage.fs(self.uri)
        names = []
        for number, uri in enumerate(data):
            names.append(f"{attempt}/part-{number:05d}.parquet")
            fs.copy(uri, str(join(target, names[-1])))
        self.storage.commit_directory(target, names)
        return target

    def discard(self, build_id: str) -> None:
        """Delete an uncommitted build's objects on the object store (a failed build's: what
        its executors wrote). A committed build is left alone."""
        if self.uri is None or self.is_committed(build_id):
            return
        self.storage.delete(join(self.uri, build_id))

    def mark_published(self, build_id: str) -> None:
        """Record ``build_id`` as the build published last (the builds root's pointer)."""
        body = json.dumps({"build_id": build_id, "at": datetime.now(UTC).isoformat()})
        if self.uri is None:
            from memberwise.kit.lake import atomic_write_bytes

            self.local.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.local / PUBLISHED, body.encode())
        else:
            self.storage.write_bytes(join(self.uri, PUBLISHED), body.encode())

    def published(self) -> str | None:
        """The build published last, by the builds root's pointer (None before any)."""
        try:
            if self.uri is None:
                raw = (self.local / PUBLISHED).read_bytes()
            else:
                raw = self.storage.read_bytes(join(self.uri, PUBLISHED))
        except (FileNotFoundError, OSError):
            return None
        found = json.loads(raw).get("build_id")
        return found if isinstance(found, str) else None

    # -- pruning ---------------------------------------------------------------------------------

    def prune(self, keep: int, *, now: float | None = None) -> list[str]:
        """Keep the newest ``keep`` committed builds (and the published one); delete the others
        and killed builds' leftovers (uncommitted, older than :data:`STALE_BUILD_SECONDS` by
        their id's clock, so a build still running is never touched). Returns the ids gone."""
        clock = time.time() if now is None else now
        committed = self.committed()
        kept = set(committed[:keep])
        published = self.published()
        if published is not None:
            kept.add(published)
        gone = [b for b in committed if b not in kept]
        known = set(committed)
        names = [p.name for p in self.local.iterdir() if p.is_dir()] if self.local.is_dir() else []
        remote = self.storage.listdir(self.uri) if self.uri is not None else []
        for name in sorted(set(names) | set(remote)):
            if name in known or name.startswith(("_", ".")):
                continue
            started = _started(name)
            if started is not None and clock - started > STALE_BUILD_SECONDS:
                gone.append(name)
        for build_id in gone:
            if self.uri is not None:
                # The manifest first: the build stops being one before its files go.
                with contextlib.suppress(FileNotFoundError):
                    self.storage.fs(self.uri).rm_file(self._manifest_uri(build_id))
                self.storage.delete(join(self.uri, build_id))
            shutil.rmtree(self.local / build_id, ignore_errors=True)
        if self.uri is not None:
            # Working copies of builds that are kept stay as a cache up to ``keep`` of them.
            for name in names:
                if name in known and name not in kept:
                    shutil.rmtree(self.local / name, ignore_errors=True)
        return sorted(gone)

    def _manifest_uri(self, build_id: str) -> str:
        assert self.uri is not None
        return str(join(self.uri, build_id, MANIFEST))


def latest_build(runtime: Runtime, needs: Sequence[str] = ("profiles.parquet",)) -> Path | None:
    """A local directory of the newest committed build holding ``needs`` (downloaded when
    builds live on an object store), or None before any such build."""
    store = BuildStore.of(runtime)
    build_id = store.latest(needs)
    return None if build_id is None else store.checkout(build_id, needs)


def link_or_copy(source: str | Path, target: str | Path) -> None:
    """Hard-link ``source`` to ``target`` (builds share unchanged files), else copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _hidden(parts: Sequence[str]) -> bool:
    """Dot names (temp files, records of this module) and scratch are no part of a build."""
    return any(p.startswith(".") for p in parts) or (bool(parts) and parts[0] == "_work")


def _started(build_id: str) -> float | None:
    """The start time a build id carries (``%Y%m%dT%H%M%SZ-xxxxxx``), None for another name."""
    try:
        moment = datetime.strptime(build_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC).timestamp()
