"""The build: from the event lake to published profiles, tags and segments, stage by stage.

Each build gets a directory ``HOME/warehouse/builds/<build_id>/`` holding one artifact per
stage (Parquet) and ``build.json`` (as-of time, engine, timings, the definitions used). A stage
reads its inputs from the same directory; when a build runs only some stages (``--only``), the
inputs it does not make are hard-linked (or, from an object store, downloaded) from the latest
committed build that has them, so every build is complete and a published build can always be
traced to its data. When the storage URI is an object store, that directory is the build's
working copy: it is committed to ``<storage>/builds/<build_id>/`` before publishing and at the
end (:class:`~memberwise.builds.BuildStore`). On Spark the executors write every artifact
straight to ``<storage>/builds/<build_id>/<name>/`` and the working copy holds only pointers to
them (see :mod:`memberwise.builds`): ``--only`` inputs are then copied on the object store's
side rather than downloaded, and a failed build's objects are deleted. The last
:data:`KEEP_BUILDS` builds are kept.

Stages, in order:

- ``profiles``: events + registered attributes -> ``profiles.parquet`` and ``details.parquet``
  (:mod:`memberwise.profiles.features`), on DuckDB or Spark from the same Ibis expressions.
- ``predictions``: CLV, alive probability, churn risk and habits per member ->
  ``predictions.parquet``, ``predictions.json``, ``models/``; fills ``clv_12m``, ``p_alive``
  and ``churn_risk`` into ``profiles.parquet`` for the rules after it
  (:mod:`memberwise.predict.stage`).
- ``tags``: the program's tag rules over the profiles -> ``tags.parquet``.
- ``segments``: lifecycle segment rules and persona clusters -> ``segments.parquet``.
- ``feedback``: sentiment and aspects of review/complaint text, recurring problems, the
  rising-complaint test (:mod:`memberwise.feedback.stage`).
- ``merchants``: DSR scorecards, refund/dispute/complaint rates, merchant items
  (:mod:`memberwise.merchants.stage`).
- ``publish``: everything into the operational store, by difference: each domain writes
  only the members whose published rows change, in transactions of
  :data:`~memberwise.kit.diffpublish.BATCH_ROWS` rows, and flips its own "published" pointer
  (build, model version) in its last one (see :func:`stage_publish`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import Connection

import memberwise.ledger  # noqa: F401  (registers the ledger's facts the tiers stage reads)
from memberwise.builds import (
    BuildContext,
    BuildResult,
    BuildStore,
    ProgressFn,
    StageResult,
    builds_root,
    link_or_copy,
)
from memberwise.config import Engine
from memberwise.feedback import service as feedback_service
from memberwise.feedback import stage as feedback_stage
from memberwise.kit.db import transaction
from memberwise.kit.diffpublish import Commit
from memberwise.kit.errors import InvalidRequest
from memberwise.kit.lake import atomic_write_bytes, fsync_file
from memberwise.kit.sparkframes import is_spark
from memberwise.kit.storage import join, read_table, write_pointer
from memberwise.kit.warehouse import open_backend, read_parquet, redirect_outputs, write_parquet
from memberwise.members import service as members_service
from memberwise.membership import notices as membership_notices
from memberwise.membership import stage as membership_stage
from memberwise.merchants import service as merchants_service
from memberwise.merchants import stage as merchants_stage
from memberwise.predict import service as predict_service
from memberwise.predict import stage as predict_stage
from memberwise.privacy import lakeview
from memberwise.privacy.lakeview import LakeView
from memberwise.profiles import service as profiles_service
from memberwise.profiles.distributed import personas_on_spark
from memberwise.profiles.features import member_profiles
from memberwise.profiles.fields import FIELD_TYPES
from memberwise.profiles.personas import fit_personas
from memberwise.profiles.rules import compile_rule, parse_rule
from memberwise.profiles.segments import segment_column
from memberwise.program.schemas import Program
from memberwise.recommend import stage as recommend_stage
from memberwise.runtime import Runtime
from memberwise.service import auto as service_auto

STAGES: tuple[str, ...] = (
    "profiles",
    "predictions",
    "tags",
    "segments",
    "tiers",
    "recommendations",
    "feedback",
    "merchants",
    "publish",
)
#: What each stage writes (publish writes to the operational store, not a file).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "profiles": ("profiles.parquet", "details.parquet"),
    # It also rewrites profiles.parquet with the predicted fields (not listed: a stage run
    # alone must still get the earlier profiles linked in to read).
    "predictions": ("predictions.parquet", "predictions.json"),
    "tags": ("tags.parquet",),
    "segments": ("segments.parquet",),
    "tiers": ("tiers.parquet", "invitations.parquet", "program.json"),
    "recommendations": recommend_stage.OUTPUTS,
    "feedback": feedback_stage.OUTPUTS,
    "merchants": merchants_stage.OUTPUTS,
    "publish": (),
}
#: What each stage reads.
INPUTS: dict[str, tuple[str, ...]] = {
    "profiles": (),
    "predictions": ("profiles.parquet",),
    "tags": ("profiles.parquet",),
    "segments": ("profiles.parquet",),
    "tiers": ("profiles.parquet",),
    "recommendations": recommend_stage.INPUTS,
    "feedback": feedback_stage.INPUTS,
    "merchants": merchants_stage.INPUTS,
    "publish": (
        "profiles.parquet",
        "details.parquet",
        "tags.parquet",
        "segments.parquet",
        "predictions.parquet",
        "predictions.json",
        "tiers.parquet",
        "invitations.parquet",
        "program.json",
    ),
}
KEEP_BUILDS = 5

TAG_SCHEMA = pa.schema([pa.field("member_id", pa.string()), pa.field("tag", pa.string())])
SEGMENT_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("persona", pa.int32()),
    ]
)


class BuildError(InvalidRequest):
    """A build that cannot run as asked (unknown stage, missing inputs)."""

    code = "build_failed"


def _no_progress(stage: str, step: int, total: int) -> None:
    return None


def new_build_id(now: datetime) -> str:
    """Sortable by time, unique across concurrent builds."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


def resolve_stages(only: Sequence[str] | None) -> list[str]:
    """The stages to run, in pipeline order. Raises BuildError for an unknown name."""
    if not only:
        return list(STAGES)
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        raise BuildError(
            f"unknown stage {', '.join(unknown)}: the stages are {', '.join(STAGES)}",
            details={"stages": list(STAGES)},
        )
    return [s for s in STAGES if s in only]


def _write_table(path: Path, table: pa.Table, schema: pa.Schema) -> int:
    """Write an Arrow table atomically (temp name, fsync, rename); the number of rows."""
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table.select(schema.names).cast(schema), tmp, compression="zstd")
    fsync_file(tmp)
    os.replace(tmp, path)
    return int(table.num_rows)


def stage_profiles(ctx: BuildContext) -> int:
    """Profiles and details from the lake, as of the build's clock."""
    runtime, as_of = ctx.runtime, ctx.result.as_of
    steps = (
        *("interests", "categories", "brands", "days", "purchases", "details", "activity"),
        "profiles",
    )
    ctx.progress("profiles", 0, len(steps))
    with runtime.engine.connect() as conn:
        attributes = members_service.analytics_attributes(conn)
    if isinstance(runtime.lake, LakeView):
        # A member who refused profiling gets no profile, from events or from attributes; an
        # id merged into another is profiled under that one only.
        view = runtime.lake
        keep = [
            view.audience.allows(m) and m not in view.merges
            for m in attributes["member_id"].to_pylist()
        ]
        attributes = attributes.filter(pa.array(keep, pa.bool_()))
    work = ctx.scratch("_work")

    def materialize(name: str, table: ir.Table) -> ir.Table:
        # Details are an artifact of their own; the other intermediates are scratch.
        path = ctx.path("details.parquet") if name == "details" else join(work, f"{name}.parquet")
        write_parquet(ctx.con, table, path)
        ctx.progress("profiles", steps.index(name) + 1, len(steps))
        return read_parquet(ctx.con, [path])

    offset = ZoneInfo(ctx.program.display_timezone).utcoffset(as_of) or timedelta(0)
    profiles, _ = member_profiles(
        runtime.lake.events_table(ctx.con),
        ibis.memtable(attributes),
        as_of=as_of,
        utc_offset=offset,
        materialize=materialize,
    )
    rows = write_parquet(ctx.con, profiles, ctx.path("profiles.parquet"))
    ctx.progress("profiles", len(steps), len(steps))
    ctx.drop_scratch(work)
    return rows


def stage_tags(ctx: BuildContext) -> int:
    """One row per member and tag whose rule holds."""
    tags = ctx.program.tag_rules()
    ctx.progress("tags", 0, len(tags) + 1)
    profiles = ctx.table("profiles.parquet")
    parts = []
    for done, (name, text) in enumerate(tags.items(), start=1):
        rule = parse_rule(name, text, FIELD_TYPES)
        matched = profiles.filter(compile_rule(rule, profiles))
        parts.append(matched.select("member_id", tag=ibis.literal(name)))
        ctx.progress("tags", done, len(tags) + 1)
    if parts:
        tagged = ibis.union(*parts).cast(ibis.Schema.from_pyarrow(TAG_SCHEMA))
        tagged = tagged.order_by(["tag", "member_id"])  # same inputs, same file
        rows = write_parquet(ctx.con, tagged, ctx.path("tags.parquet"))
    else:
        rows = _write_table(ctx.path("tags.parquet"), TAG_SCHEMA.empty_table(), TAG_SCHEMA)
    ctx.progress("tags", len(tags) + 1, len(tags) + 1)
    return rows


def stage_segments(ctx: BuildContext) -> int:
    """Lifecycle segment (first matching rule) and persona cluster per member."""
    ctx.progress("segments", 0, 2)
    profiles = ctx.table("profiles.parquet")
    config = ctx.program.personas
    segment = segment_column(profiles, ctx.program.segment_list())
    if is_spark(ctx.con):
        return _segments_on_spark(
            ctx, profiles.select("member_id", *config.features, segment=segment)
        )
    # One read gives both: persona assignments come back in their input's row order.
    rows = ctx.con.to_pyarrow(profiles.select("member_id", *config.features, segment=segment))
    ctx.progress("segments", 1, 2)
    personas = fit_personas(
        rows,
        fields=config.features,
        k_min=config.k_min,
        k_max=config.k_max,
        seed=0,
        names=config.names,
    )
    table = rows.select(["member_id", "segment"]).append_column(
        "persona", personas.assignments.column("persona")
    )
    written = _write_table(ctx.path("segments.parquet"), table, SEGMENT_SCHEMA)
    ctx.meta["personas"] = [c.as_dict() for c in personas.clusters]
    ctx.meta["persona_silhouette"] = {str(k): v for k, v in personas.silhouette.items()}
    ctx.progress("segments", 2, 2)
    return written


def _segments_on_spark(ctx: BuildContext, rows: ir.Table) -> int:
    """The segments stage on Spark: personas fitted on a sample, every member assigned in the
    executors (:mod:`memberwise.profiles.distributed`), the file written by Spark."""
    config = ctx.program.personas
    table, clusters, silhouette = personas_on_spark(
        ctx.con,
        rows,
        fields=config.features,
        k_min=config.k_min,
        k_max=config.k_max,
        seed=0,
        names=config.names,
    )
    ctx.progress("segments", 1, 2)
    typed = table.cast(ibis.Schema.from_pyarrow(SEGMENT_SCHEMA)).order_by("member_id")
    written = write_parquet(ctx.con, typed, ctx.path("segments.parquet"))
    ctx.meta["personas"] = [c.as_dict() for c in clusters]
    ctx.meta["persona_silhouette"] = {str(k): v for k, v in silhouette.items()}
    ctx.progress("segments", 2, 2)
    return written


#: Called as ``publisher(conn, build_dir, commit)`` in this order; each domain publishes its
#: own artifacts, calling ``commit`` between the batches it writes (the step commits after each
#: publisher too). The first (profiles) gives the stage's row count.
Publisher = Callable[[Connection, Path, Commit], int]


def _publish_profiles(conn: Connection, build_dir: Path, commit: Commit) -> int:
    return profiles_service.publish_build(conn, build_dir, commit=commit).members


def _publish_predictions(conn: Connection, build_dir: Path, commit: Commit) -> int:
    return predict_service.publish_build(conn, build_dir, commit=commit)


def _in_one_transaction(publish: Callable[[Connection, Path], int]) -> Publisher:
    """A publisher of small tables (merchant-sized, or replaced wholesale): one transaction."""

    def publisher(conn: Connection, build_dir: Path, commit: Commit) -> int:
        return publish(conn, build_dir)

    return publisher


PUBLISHERS: tuple[tuple[str, Publisher], ...] = (
    ("profiles", _publish_profiles),
    ("predictions", _publish_predictions),
    ("tiers", membership_stage.publish),
    # Lists name the model whose similar items and fallbacks serve them, and those are replaced
    # wholesale: a list is rewritten whenever the model changes, so it stays one transaction.
    ("recommendations", _in_one_transaction(recommend_stage.publish)),
    ("feedback", _in_one_transaction(feedback_service.publish_build)),
    ("merchants", _in_one_transaction(merchants_service.publish_build)),
)


def stage_publish(ctx: BuildContext) -> int:
    """Every domain's artifacts into the operational store, by difference and in batches.

    What readers see meanwhile: every member's row whole, from the previous build or this one
    (a row is written in one statement of one transaction); the previous build's id and
    groups, and the previous model version, until the profiles and the predictions flip their
    pointers in their last transaction. A crash
    leaves the batches committed so far; publishing again (``memberwise build --only
    publish``, or the next build) compares with what the store holds, so it writes only what
    is still different and fires each change's side effects (tier history, audit, outbox)
    once. One publish at a time: two concurrent publishes interleave their batches.
    """
    ctx.progress("publish", 0, len(PUBLISHERS))
    _write_manifest(ctx, status="built")
    # The store only ever points at a committed build (on an object store: uploaded, manifest
    # written), so a publish cut short resumes from artifacts every reader can fetch.
    BuildStore.of(ctx.runtime).commit(ctx.directory)
    counts: dict[str, int] = {}
    # Complaints of black-card members about kept-away merchants open desk tickets: the desk
    # sits above merchants, so the build (above both) hands merchants the desk's hook.
    hook = service_auto.complaint_ticket(ctx.program)
    merchants_service.COMPLAINT_HOOKS.append(hook)
    # New downgrade notices feed the desk's automatic tickets the same way.
    membership_notices.NOTICE_HOOKS.append(service_auto.downgrade_notice_tickets)
    try:
        with ctx.runtime.engine.connect() as conn:
            for done, (name, publisher) in enumerate(PUBLISHERS, start=1):
                counts[name] = publisher(conn, ctx.directory, conn.commit)
                conn.commit()
                ctx.progress("publish", done, len(PUBLISHERS))
    finally:
        merchants_service.COMPLAINT_HOOKS.remove(hook)
        membership_notices.NOTICE_HOOKS.remove(service_auto.downgrade_notice_tickets)
    ctx.meta["published"] = counts
    return counts[PUBLISHERS[0][0]]


RUNNERS: dict[str, Callable[[BuildContext], int]] = {
    "profiles": stage_profiles,
    "predictions": predict_stage.stage_predictions,
    "tags": stage_tags,
    "segments": stage_segments,
    "tiers": membership_stage.run_stage,
    "recommendations": recommend_stage.stage_recommendations,
    "feedback": feedback_stage.stage_feedback,
    "merchants": merchants_stage.stage_merchants,
    "publish": stage_publish,
}


def _link_inputs(
    directory: Path, stages: Sequence[str], store: BuildStore, *, in_place: bool = False
) -> None:
    """Put the inputs no selected stage makes into ``directory``, from the latest committed
    build that has them: hard links on a local disk, downloads from an object store; with
    ``in_place`` (a Spark build on an object store) the Parquet artifacts are copied on the
    store's side into the new build's folder and ``directory`` gets pointers to them."""
    made = {name for stage in stages for name in OUTPUTS[stage]}
    needed = [name for stage in stages for name in INPUTS[stage] if name not in made]
    if not needed:
        return
    committed = [b for b in store.committed() if b != directory.name]
    for name in dict.fromkeys(needed):
        source = next((b for b in committed if store.has(b, name)), None)
        if source is None:
            producer = next(s for s, outs in OUTPUTS.items() if name in outs)
            raise BuildError(
                f"no earlier build has {name}: run `memberwise build` (or `--only {producer}`) "
                "first",
                details={"missing": name, "stage": producer},
            )
        if in_place and name.endswith(".parquet"):
            write_pointer(directory / name, store.copy_within(source, name, directory.name))
        else:
            store.copy_artifact(source, name, directory / name)


#: Kept for callers of the old name (it moved to :mod:`memberwise.builds`).
_link_or_copy = link_or_copy


def _write_manifest(ctx: BuildContext, *, status: str) -> None:
    result = ctx.result
    manifest = {
        "build_id": result.build_id,
        "status": status,
        "as_of": result.as_of.isoformat(),
        "engine": str(result.engine),
        "started_at": ctx.meta["started_at"],
        "finished_at": datetime.now(UTC).isoformat(),
        "events_read": result.events_read,
        "members": result.members,
        "stages": {s.name: {"seconds": s.seconds, "rows": s.rows} for s in result.stages},
        "segments": [
            {"name": s.name, "rule": s.rule, "description": s.description}
            for s in ctx.program.segment_list()
        ],
        "tags": [
            {"name": name, "rule": rule, "description": ctx.program.tag_description(name)}
            for name, rule in ctx.program.tag_rules().items()
        ],
        "personas": ctx.meta.get("personas", []),
        "persona_silhouette": ctx.meta.get("persona_silhouette", {}),
        "program": ctx.program.name,
    }
    # Stages of other domains (tiers, predictions, recommendations) record their definitions
    # and diagnostics under their own key in ``ctx.meta["sections"]``.
    for key, value in ctx.meta.get("sections", {}).items():
        manifest[key] = value
    previous = ctx.path("build.json")
    if previous.exists() and "personas" not in ctx.meta:
        # A build that did not cluster keeps the linked segments' persona descriptions.
        manifest["personas"] = json.loads(previous.read_text()).get("personas", [])
    atomic_write_bytes(ctx.path("build.json"), json.dumps(manifest, indent=2).encode())


def _profile_counts(ctx: BuildContext) -> tuple[int, int]:
    """(members, events read) of the build's profiles."""
    table = read_table(ctx.path("profiles.parquet"), columns=["lifetime_events"])
    events = pc.sum(table.column("lifetime_events")).as_py()
    return table.num_rows, int(events or 0)


def _previous_manifest(store: BuildStore, directory: Path) -> dict[str, Any] | None:
    for build_id in store.committed():
        if build_id != directory.name:
            return store.manifest(build_id)
    return None


def run_build(
    runtime: Runtime,
    program: Program,
    *,
    only: Sequence[str] | None = None,
    as_of: datetime | None = None,
    engine: Engine | None = None,
    progress: ProgressFn = _no_progress,
    on_stage: Callable[[StageResult], None] | None = None,
) -> BuildResult:
    """Run the selected stages (all by default) as of ``as_of`` (default: now).

    Raises BuildError when a stage is unknown or its inputs exist in no earlier build.
    """
    stages = resolve_stages(only)
    now = datetime.now(UTC)
    clock = (as_of or now).astimezone(UTC)
    store = BuildStore.of(runtime)
    build_id = new_build_id(now)
    # The build's working copy: the build itself on a local disk; uploaded and committed
    # by :meth:`BuildStore.commit` when builds live on an object store.
    directory = builds_root(runtime) / build_id
    directory.mkdir(parents=True)
    chosen = engine or runtime.settings.engine
    result = BuildResult(build_id=build_id, directory=directory, as_of=clock, engine=chosen)
    publishing = False
    # A Spark build on an object store: its executors write the artifacts to the build's
    # committed location, not to this machine's disk.
    in_place = chosen == Engine.spark and store.remote
    try:
        _link_inputs(directory, stages, store, in_place=in_place)
        if "profiles" not in stages:
            # Reused profiles keep the clock they were computed at.
            before = _previous_manifest(store, directory)
            if before is not None:
                result.as_of = datetime.fromisoformat(before["as_of"])
        meta: dict[str, Any] = {"started_at": now.isoformat()}
        # Every stage reads the lake through privacy's view: merged ids re-keyed, members who
        # refused profiling left out (of profiles, predictions, segments, tiers and lists).
        with transaction(runtime.engine) as conn:
            view = lakeview.build_view(conn, runtime.lake, program.privacy)
        private = dataclasses.replace(runtime, lake=view)
        with open_backend(chosen, **runtime.settings.backend_options()) as con:
            if in_place:
                redirect_outputs(con, directory, str(store.location(build_id)))
            ctx = BuildContext(private, program, con, directory, result, progress, meta)
            for stage in stages:
                publishing = stage == "publish"
                started = time.perf_counter()
                rows = RUNNERS[stage](ctx)
                done = StageResult(stage, time.perf_counter() - started, rows)
                result.stages.append(done)
                # (Stages that read no profiles, e.g. feedback, may run before any build has.)
                profiled = ctx.path("profiles.parquet").exists()
                if profiled and (stage == "profiles" or result.members == 0):
                    result.members, result.events_read = _profile_counts(ctx)
                if on_stage is not None:
                    on_stage(done)
            _write_manifest(ctx, status="published" if "publish" in stages else "built")
            store.commit(directory)
            if "publish" in stages:
                store.mark_published(build_id)
    except BaseException:
        # A publish cut short may have committed batches: its directory stays (build.json
        # says "built"), so `memberwise build --only publish` takes these artifacts and
        # converges on them instead of an older build's.
        if not publishing:
            shutil.rmtree(directory, ignore_errors=True)
            with contextlib.suppress(OSError):  # else pruning deletes it (never committed)
                store.discard(build_id)
        raise
    store.prune(KEEP_BUILDS)
    return result
