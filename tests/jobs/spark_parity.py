"""Shared by the Spark build tests: a small demo home, a build on each engine, and the
comparison of their outputs (Arrow schemas, and values row by row)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from memberwise.builds import BuildResult
from memberwise.config import Engine, Settings
from memberwise.demo.generator import generate_platform
from memberwise.events.bulk import ingest_paths
from memberwise.jobs.build import STAGES, run_build
from memberwise.kit.storage import read_table
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
    return read_table(path).schema


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
    # (kit.storage's reader: a file, a Spark directory, or a pointer to an object store.)
    a = read_table(left).sort_by([(k, "ascending") for k in key]).to_pylist()
    b = read_table(right).sort_by([(k, "ascending") for k in key]).to_pylist()
    assert len(a) == len(b)
    out = []
    for x, y in zip(a, b, strict=True):
        for column in x:
            if not _same(x[column], y[column]):
                out.append((tuple(x[k] for k in key), column, x[column], y[column]))
    return out


def tier_program(program: Program) -> Program:
    """``program`` with a black card that has free slots on a small demo (criteria a few
    members meet, a quota by count), so invitations are ranked on both engines."""
    card = program.black_card
    assert card is not None
    quota = card.quota.model_copy(update={"count": 4, "per_active_members": None})
    changed = card.model_copy(update={"criteria": "spend_365d >= 100000", "quota": quota})
    return program.model_copy(update={"black_card": changed})


def seed_tiers(home: Home) -> list[str]:
    """Stored tiers for the first members of the demo, one per rule the evaluation applies
    (a period past its grace, one within it, protection, a lapsed and a lasting manual
    grant, an invitation tier, a tier the program no longer has, a floor tier); the seeded
    member ids."""
    from sqlalchemy import select

    from memberwise.kit.db import transaction
    from memberwise.members.tables import members
    from memberwise.membership.tables import member_tiers

    day = timedelta(days=1)
    states = [
        ("gold", "auto", AS_OF - 400 * day, AS_OF - 35 * day),
        ("gold", "auto", AS_OF - 380 * day, AS_OF - 15 * day),
        ("platinum", "auto", AS_OF - 30 * day, AS_OF + 40 * day),
        ("platinum", "manual", AS_OF - 60 * day, AS_OF - day),
        ("gold", "manual", AS_OF - 60 * day, None),
        ("apass", "invitation", AS_OF - 10 * day, None),
        ("diamond", "auto", AS_OF - 10 * day, None),
        ("member", "auto", AS_OF - 100 * day, None),
        ("gold", "auto", AS_OF - 366 * day, AS_OF - day),
    ]
    with transaction(home.runtime.engine) as conn:
        ids = list(
            conn.execute(
                select(members.c.member_id).order_by(members.c.member_id).limit(len(states))
            ).scalars()
        )
        conn.execute(
            member_tiers.insert(),
            [
                {
                    "member_id": m,
                    "tier": tier,
                    "source": source,
                    "since": since,
                    "until": until,
                    "score": 0,
                    "details": "{}",
                    "build_id": "seed",
                    "updated_at": AS_OF - 5 * day,
                }
                for m, (tier, source, since, until) in zip(ids, states, strict=True)
            ],
        )
    return ids


def points_program(program: Program) -> Program:
    """``program`` with tiers that also qualify by points earned: gold by 1,500 points in a
    year, platinum by 3,000 points since the member's last tier change."""
    from memberwise.program.membership import Qualification

    extra = {
        "gold": Qualification(points_earned=1500, window_days=365),
        "platinum": Qualification(points_earned=3000, since_tier_change=True),
    }
    tiers = tuple(
        t.model_copy(update={"qualify": (*t.qualify, extra[t.name])}) if t.name in extra else t
        for t in program.tiers
    )
    return program.model_copy(update={"tiers": tiers})


def seed_points(home: Home, seeded: list[str]) -> None:
    """Ledger orders (so points lots) for some members: six members past the seeded ones
    earn 1,600 to 2,100 points in the last month (gold by points), and two seeded members
    earn 3,200 after or before their stored tier's start (platinum by points since the change
    for the first only)."""
    from sqlalchemy import select

    from memberwise.kit.db import transaction
    from memberwise.ledger import orders
    from memberwise.members.tables import members
    from tests.ledger.factories import order

    day = timedelta(days=1)
    with transaction(home.runtime.engine) as conn:
        ids = list(
            conn.execute(
                select(members.c.member_id).order_by(members.c.member_id).limit(len(seeded) + 6)
            ).scalars()
        )[len(seeded) :]
        placed = [(m, 160_000 + 10_000 * i, AS_OF - 30 * day) for i, m in enumerate(ids)]
        placed += [(seeded[7], 320_000, AS_OF - 20 * day), (seeded[8], 320_000, AS_OF - 370 * day)]
        for n, (member, price, at) in enumerate(placed):
            orders.place(conn, home.program, order(f"seed-{n}", member, price=price, at=at))


def campaign_program(program: Program) -> Program:
    """``program`` with coupon campaigns over the demo's templates (a count, a tier-limited
    percent coupon within a budget, a threshold coupon within a budget, an uplift floor)."""
    from memberwise.program.recommendations import CouponCampaign

    campaigns = (
        CouponCampaign(name="vip", template="vip_10_percent", budget=40_000),
        CouponCampaign(name="welcome", template="welcome_10", max_coupons=20),
        CouponCampaign(name="big", template="save_30_over_300", budget=30_000, min_uplift=0.01),
    )
    settings = program.recommendations.model_copy(update={"campaigns": campaigns})
    return program.model_copy(update={"recommendations": settings})


@contextmanager
def no_collect() -> Iterator[None]:
    """Within the block, a Spark DataFrame cannot be brought to the driver (``toPandas``,
    ``toArrow``, ``collect``, ``toLocalIterator`` raise): what a stage that must keep
    member-sized data in the executors runs under in the tests."""
    # Spark 4 sessions hand out the classic DataFrame, which overrides these methods:
    # patching only the public base class would stop nothing.
    from pyspark.sql.classic.dataframe import DataFrame

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a Spark result was collected into the driver")

    names = ("toPandas", "toArrow", "collect", "toLocalIterator", "_collect_as_arrow")
    saved = {name: DataFrame.__dict__[name] for name in names if name in DataFrame.__dict__}
    for name in names:
        setattr(DataFrame, name, refuse)
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                setattr(DataFrame, name, saved[name])
            else:
                delattr(DataFrame, name)
