"""Shared by the Spark build tests: a small demo home, a build on each engine, and the
comparison of their outputs (Arrow schemas, and values row by row)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from memberwise.builds import BuildResult
from memberwise.config import Engine, Settings
from memberwise.demo.generator import generate_platform
from memberwise.events.bulk import ingest_paths
from memberwise.jobs.build import STAGES, run_build
from memberwise.members.commands import import_file
from memberwise.program.schemas import Program
from memberwise.program.service import parse_program
from memberwise.runtime import Runtime

END = date(2026, 11, 20)
AS_OF = datetime(2026, 11, 19, 15, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
#: Every stage but publish: both builds see the same store (publishing tiers changes it).
BUILT = [s for s in STAGES if s != "publish"]


def demo_program() -> Program:
    """The demo program with a churn horizon its 60 days of behaviour can label."""
    text = (ROOT / "programs" / "demo.yaml").read_text()
    return parse_program(text + "\npredictions:\n  churn_horizon_days: 30\n")


@dataclass
class Home:
    runtime: Runtime
    program: Program
    root: Path


def make_home(root: Path, template: Path, *, members: int = 300, **settings: Any) -> Home:
    """A demo platform of ``members`` members over 60 days, ingested and registered
    (``settings``: more Settings fields, e.g. the Spark master)."""
    from tests.conftest import TEST_PII_KEY

    db = root / "store.sqlite"
    shutil.copy(template, db)
    runtime = Runtime.open(
        Settings(
            home=root / "home",
            database_url=f"sqlite:///{db}",
            pii_key=TEST_PII_KEY,
            **settings,
        )
    )
    generate_platform(
        root / "demo", members=members, days=60, end=END, events_per_member=50.0, workers=1
    )
    ingest_paths([root / "demo" / "events"], runtime.lake, deadletter_dir=root / "dead", now=AS_OF)
    import_file(runtime, root / "demo" / "members.parquet", quiet=True)
    return Home(runtime, demo_program(), root)


def build(home: Home, engine: Engine, stages: list[str] | None = None) -> BuildResult:
    return run_build(home.runtime, home.program, only=stages or BUILT, as_of=AS_OF, engine=engine)


def artifacts(directory: Path) -> list[str]:
    """The Parquet artifacts of a build (a file, or a Spark directory of part files)."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".parquet"))


def schema_of(path: Path) -> pa.Schema:
    return pq.read_table(path).schema


def plain(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """Names and types, in order (nullability is compared separately where it matters)."""
    return [(f.name, f.type) for f in schema]


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float):
        if math.isnan(left) or math.isnan(right):
            return math.isnan(left) and math.isnan(right)
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    return bool(left == right)


def differences(left: Path, right: Path, key: list[str]) -> list[tuple[Any, str, Any, Any]]:
    """(key, column, left, right) for every value that differs, rows matched by ``key``."""
    a = pq.read_table(left).sort_by([(k, "ascending") for k in key]).to_pylist()
    b = pq.read_table(right).sort_by([(k, "ascending") for k in key]).to_pylist()
    assert len(a) == len(b)
    out = []
    for x, y in zip(a, b, strict=True):
        for column in x:
            if not _same(x[column], y[column]):
                out.append((tuple(x[k] for k in key), column, x[column], y[column]))
    return out


@contextmanager
def no_collect() -> Iterator[None]:
    """Within the block, a Spark DataFrame cannot be brought to the driver (``toPandas``,
    ``toArrow``, ``collect``, ``toLocalIterator`` raise): what a stage that must keep
    member-sized data in the executors runs under in the tests."""
    from pyspark.sql import DataFrame

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a Spark result was collected into the driver")

    names = ("toPandas", "toArrow", "collect", "toLocalIterator")
    saved = {name: getattr(DataFrame, name) for name in names}
    for name in names:
        setattr(DataFrame, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(DataFrame, name, method)
