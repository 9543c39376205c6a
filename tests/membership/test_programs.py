"""Every program in programs/ runs on the demo platform: it loads, its tiers are evaluated and
published for every member, its plans can be joined at the member's fee, and the membership
view answers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from memberwise.config import Settings
from memberwise.demo.generator import generate_platform
from memberwise.events.bulk import ingest_paths
from memberwise.events.bulk_hooks import member_registrar
from memberwise.jobs.build import run_build
from memberwise.kit.db import transaction
from memberwise.kit.time import utcnow
from memberwise.members.commands import import_file
from memberwise.membership import member_view as membership_view
from memberwise.membership import subscriptions
from memberwise.membership.tables import member_tiers, subscription_invoices
from memberwise.membership.tables import subscriptions as subscriptions_table
from memberwise.privacy.schemas import SYSTEM
from memberwise.program.service import default_program, load_program
from memberwise.runtime import Runtime
from memberwise.store import migrate
from tests.conftest import TEST_PII_KEY
from tests.membership.test_stage import apply

PROGRAMS = sorted((Path(__file__).resolve().parents[2] / "programs").glob("*.yaml"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, Path]]:
    """A small demo platform, ingested and profiled once for every program."""
    root = tmp_path_factory.mktemp("programs")
    generate_platform(root / "demo", members=1_500, days=120, seed=11, workers=1)
    settings = Settings(
        home=root / "home",
        database_url=f"sqlite:///{root / 'store.sqlite'}",
        pii_key=TEST_PII_KEY,  # type: ignore[arg-type]
    )
    runtime = Runtime.open(settings)
    migrate(runtime.engine)
    ingest_paths(
        [root / "demo" / "events"],
        runtime.lake,
        deadletter_dir=root / "deadletter",
        on_members=member_registrar(settings),
        workers=1,
    )
    import_file(runtime, root / "demo" / "members.parquet", quiet=True)
    build = run_build(runtime, default_program(), only=["profiles"])
    yield runtime, build.directory
    runtime.close()


def test_every_real_program_has_a_file() -> None:
    assert [p.stem for p in PROGRAMS] == [
        "88vip",
        "amazon_prime",
        "apass",
        "demo",
        "jd_plus",
        "kaola_black_card",
        "tmall_plus",
        "tmall_super_member",
        "vipshop_super_vip",
    ]


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.stem)
def test_the_demo_platform_runs_through_the_program(
    demo: tuple[Runtime, Path], path: Path, tmp_path: Path
) -> None:
    runtime, build_dir = demo
    program = load_program(path)
    work = tmp_path / "build"
    work.mkdir()
    for name in ("profiles.parquet", "build.json"):
        shutil.copy(build_dir / name, work / name)
    with transaction(runtime.engine) as conn:
        for table in (member_tiers, subscriptions_table, subscription_invoices):
            conn.execute(table.delete())
    section = apply(runtime, program, work)
    with runtime.engine.connect() as conn:
        query = select(member_tiers.c.tier, func.count()).group_by(member_tiers.c.tier)
        by_tier = {str(tier): int(n) for tier, n in conn.execute(query).all()}
        member_id = conn.execute(select(func.min(member_tiers.c.member_id))).scalar_one()
    assert sum(by_tier.values()) == sum(section["changes"].values()) > 1_000
    assert set(by_tier) <= {t.name for t in program.tiers}
    with transaction(runtime.engine) as conn:
        view = membership_view.membership(conn, program, member_id)
        assert view.tier is not None
        for plan in program.plans:
            sub = subscriptions.join(conn, program, member_id, plan, at=utcnow(), actor=SYSTEM)
            assert sub.fee in {
                program.plans[plan].fee,
                *(p.fee for p in program.plans[plan].prices),
            }
