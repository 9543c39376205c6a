"""What a build stage is handed: the build's context, its result record and where builds live.

It sits below every domain that contributes a stage (profiles, predict, membership, recommend,
...) and below ``jobs``, which runs the stages in order: a stage imports this module, never
``memberwise.jobs``, so the pipeline and its stages depend on each other in one direction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from memberwise.config import Engine
from memberwise.kit.storage import is_local, join
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
        return read_parquet(self.con, [self.path(name)])

    def scratch(self, folder: str) -> Path | str:
        """Where a stage's intermediates go, deleted by :meth:`drop_scratch` when it ends:
        ``folder`` inside the build directory when the storage is local, else under the
        storage URI (``BASE/warehouse/work/<build_id>/folder``), where a cluster's executors
        can all write and read."""
        root = self.runtime.settings.storage_root
        if is_local(root):
            local = self.path(folder)
            local.mkdir(exist_ok=True)
            return local
        return join(root, "warehouse", "work", self.result.build_id, folder)

    def drop_scratch(self, location: Path | str) -> None:
        """Delete what :meth:`scratch` gave (nothing when it is gone already)."""
        with contextlib.suppress(OSError):
            storage_of(self.con).delete(location)


def builds_root(runtime: Runtime) -> Path:
    return runtime.settings.home / "warehouse" / "builds"


def previous_builds(root: Path) -> list[Path]:
    """Earlier build directories with a ``build.json``, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "build.json").exists()]
    return sorted(found, key=lambda p: p.name, reverse=True)
