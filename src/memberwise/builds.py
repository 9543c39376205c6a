"""What a build stage is handed: the build's context, its result record and where builds live.

It sits below every domain that contributes a stage (profiles, predict, membership, recommend,
...) and below ``jobs``, which runs the stages in order: a stage imports this module, never
``memberwise.jobs``, so the pipeline and its stages depend on each other in one direction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from memberwise.config import Engine
from memberwise.kit.warehouse import read_parquet
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


def builds_root(runtime: Runtime) -> Path:
    return runtime.settings.home / "warehouse" / "builds"


def previous_builds(root: Path) -> list[Path]:
    """Earlier build directories with a ``build.json``, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "build.json").exists()]
    return sorted(found, key=lambda p: p.name, reverse=True)
