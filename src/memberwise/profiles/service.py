"""Publish a build's profiles, segments, personas and tags to the operational store, and read
the published ones.

The build job writes a build directory (``profiles.parquet``, ``details.parquet``,
``tags.parquet``, ``segments.parquet``, ``build.json``); :func:`publish_build` turns it into
one ``member_profiles`` row per member and one ``profile_groups`` row per segment, persona and
tag. The API shows the latest published build only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, RowMapping

from memberwise.kit import diffpublish
from memberwise.kit.diffpublish import Commit, no_commit
from memberwise.kit.errors import InvalidRequest, NotFound
from memberwise.kit.pagination import DEFAULT_LIMIT, Page, decode_cursor, encode_cursor
from memberwise.kit.storage import artifact_exists
from memberwise.kit.time import as_utc, utcnow
from memberwise.profiles import repository
from memberwise.profiles.fields import FIELD_NAMES
from memberwise.profiles.schemas import (
    BuildManifest,
    BuildStatus,
    DetailItem,
    GroupKind,
    PersonaDefinition,
    PersonaOut,
    ProfileOut,
    PublishResult,
    RuleDefinition,
    SegmentMember,
    SegmentOut,
    SegmentsOut,
    TagOut,
    TagsOut,
)

#: A persona's group name is this prefix and its id, e.g. ``persona-3``.
PERSONA_PREFIX = "persona-"


class ProfileNotFound(NotFound):
    code = "profile_not_found"


class SegmentNotFound(NotFound):
    code = "segment_not_found"


class InvalidBuild(InvalidRequest):
    code = "invalid_build"


def _read_manifest(build_dir: Path) -> tuple[BuildManifest, dict[str, Any]]:
    path = build_dir / "build.json"
    # An artifact is a file (DuckDB), a directory of part files (Spark) or a pointer to one
    # on the object store (a Spark build there).
    missing = [
        name
        for name in ("build.json", *repository.ARTIFACTS.values())
        if not artifact_exists(build_dir / name)
    ]
    if missing:
        raise InvalidBuild(f"{build_dir} is not a complete build: missing {', '.join(missing)}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        manifest = BuildManifest.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise InvalidBuild(f"{path} is not a valid build manifest: {exc}") from exc
    for kind, names in (
        ("segment", [s.name for s in manifest.segments]),
        ("tag", [t.name for t in manifest.tags]),
        ("persona", [str(p.id) for p in manifest.personas]),
    ):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InvalidBuild(f"{path} defines {kind} {', '.join(repeated)} more than once")
    return manifest, raw


def _rule_groups(
    kind: GroupKind, definitions: list[RuleDefinition], counts: dict[tuple[str, str], int]
) -> list[dict[str, Any]]:
    """Groups of segments or tags: the defined ones in build.json order (even when empty),
    then any the artifacts hold without a definition, by name."""
    rows = [
        {
            "kind": kind.value,
            "name": d.name,
            "members": counts.get((kind.value, d.name), 0),
            "rule": d.rule,
            "description": d.description,
            "definition": d.model_dump_json(),
        }
        for d in definitions
    ]
    defined = {d.name for d in definitions}
    extra = sorted(n for k, n in counts if k == kind.value and n not in defined)
    rows += [
        {
            "kind": kind.value,
            "name": name,
            "members": counts[(kind.value, name)],
            "rule": None,
            "description": "",
            "definition": RuleDefinition(name=name).model_dump_json(),
        }
        for name in extra
    ]
    return rows


def _persona_groups(
    definitions: list[PersonaDefinition], counts: dict[tuple[str, str], int]
) -> list[dict[str, Any]]:
    known = {p.id: p for p in definitions}
    ids = [p.id for p in definitions]
    ids += sorted(
        int(n.removeprefix(PERSONA_PREFIX))
        for k, n in counts
        if k == GroupKind.persona.value and int(n.removeprefix(PERSONA_PREFIX)) not in known
    )
    rows = []
    for persona_id in ids:
        p = known.get(persona_id) or PersonaDefinition(id=persona_id)
        name = f"{PERSONA_PREFIX}{persona_id}"
        rows.append(
            {
                "kind": GroupKind.persona.value,
                "name": name,
                "members": counts.get((GroupKind.persona.value, name), 0),
                "rule": None,
                "description": p.description,
                "definition": p.model_dump_json(),
            }
        )
    return rows


def publish_build(
    conn: Connection, build_dir: Path, *, commit: Commit = no_commit
) -> PublishResult:
    """Publish the build in ``build_dir``: it becomes the build the API shows.

    By difference: only the profiles that differ from the published ones (or are new) are
    written, and the profiles of members absent from this build deleted, each
    :data:`~memberwise.kit.diffpublish.BATCH_ROWS` members a transaction (``commit`` after
    each); then the build's segment, persona and tag groups are replaced and the build is
    recorded as the published one (earlier builds become superseded) in the last transaction.
    Until then readers see the previous build's groups and id, and each member's profile
    whole, from one build or the other. Publishing the same build again writes no profile (its
    first ``published_at`` is kept); after a crash it writes what the crash left unwritten.

    Raises InvalidBuild when the directory lacks an artifact, build.json does not parse, or
    a member appears twice or has no segment; nothing is written then.
    """
    manifest, raw = _read_manifest(build_dir)
    build_id = manifest.build_id
    as_of = as_utc(manifest.as_of)
    with repository.BuildArtifacts(build_dir) as artifacts:
        problems = artifacts.problems()
        if problems:
            raise InvalidBuild(
                f"{build_dir} cannot be published: {'; '.join(problems)}", details=problems
            )
        fields = json.dumps(FIELD_NAMES)
        live = repository.live_build(conn)
        already = live is not None and live["build_id"] == build_id
        published_at = live["published_at"] if live is not None and already else utcnow()
        build_row = {
            "build_id": build_id,
            "as_of": as_of,
            "engine": manifest.engine,
            "status": BuildStatus.published.value if already else BuildStatus.publishing.value,
            "started_at": manifest.started_at and as_utc(manifest.started_at),
            "finished_at": manifest.finished_at and as_utc(manifest.finished_at),
            "published_at": published_at,
            "fields": fields,
            "summary": json.dumps(raw, ensure_ascii=False),
        }
        # The build's row first (not yet shown): the profiles written below name it.
        repository.upsert_build(conn, build_row)
        commit()
        repository.load_profiles(conn, artifacts.con, "stored", fields)
        written = 0
        for batch in artifacts.profile_rows(FIELD_NAMES, diffpublish.BATCH_ROWS, stored="stored"):
            rows: list[dict[str, Any]] = batch.to_pylist()
            for row in rows:
                row["build_id"] = build_id
            repository.upsert_profiles(conn, rows)
            written += len(rows)
            commit()
        removed = 0
        for gone in artifacts.gone_members("stored", diffpublish.BATCH_ROWS):
            removed += repository.delete_profiles(conn, gone)
            commit()
        members = artifacts.members()
        counts = artifacts.group_counts()
    segments = _rule_groups(GroupKind.segment, manifest.segments, counts)
    personas = _persona_groups(manifest.personas, counts)
    tags = _rule_groups(GroupKind.tag, manifest.tags, counts)
    groups = [
        {**row, "build_id": build_id, "position": position}
        for part in (segments, personas, tags)
        for position, row in enumerate(part)
    ]
    repository.replace_groups(conn, build_id, groups)
    # The flip: this build becomes the one shown, in the caller's last transaction.
    repository.supersede_others(conn, build_id)
    repository.upsert_build(conn, {**build_row, "status": BuildStatus.published.value})
    return PublishResult(
        build_id=build_id,
        as_of=as_of,
        published_at=published_at,
        members=members,
        written=written,
        removed=removed,
        segments=len(segments),
        personas=len(personas),
        tags=len(tags),
    )


def get_profile(conn: Connection, member_id: str) -> ProfileOut:
    """The member's profile in the published build. Raises ProfileNotFound.

    A build writes only the profiles it changes, so a profile is shown as part of the live
    build (its id, as-of time and publication), whichever build last wrote the row; while a
    build is being published, a member it has reached already shows the new values under the
    previous build's id until the build flips to published.
    """
    row = repository.get_profile(conn, member_id)
    if row is None:
        raise ProfileNotFound(f"no published profile for member {member_id!r}")
    build = repository.live_build(conn) or row
    profile = orjson.loads(row["profile"])
    names = orjson.loads(row["fields"])
    return ProfileOut(
        member_id=row["member_id"],
        build_id=build["build_id"],
        as_of=build["as_of"],
        published_at=build["published_at"],
        segment=row["segment"],
        persona=row["persona"],
        tags=orjson.loads(row["tags"]),
        fields=dict(zip(names, profile["fields"], strict=True)),
        details={
            detail: [DetailItem(key=key, value=value) for key, value in pairs]
            for detail, pairs in profile["details"].items()
        },
    )


def _persona_out(row: RowMapping) -> PersonaOut:
    definition = PersonaDefinition.model_validate_json(row["definition"])
    return PersonaOut(
        name=row["name"],
        id=definition.id,
        # An unnamed cluster is shown by its group name until an operator names it.
        label=definition.name or row["name"],
        members=row["members"],
        description=row["description"],
        top_features=definition.top_features,
    )


def list_segments(conn: Connection) -> SegmentsOut:
    """Lifecycle segments and personas of the published build, with member counts."""
    build = repository.live_build(conn)
    if build is None:
        return SegmentsOut(build_id=None, as_of=None, segments=[], personas=[])
    rows = repository.groups(
        conn, build["build_id"], [GroupKind.segment.value, GroupKind.persona.value]
    )
    return SegmentsOut(
        build_id=build["build_id"],
        as_of=build["as_of"],
        segments=[
            SegmentOut(
                name=r["name"],
                members=r["members"],
                rule=r["rule"],
                description=r["description"],
            )
            for r in rows
            if r["kind"] == GroupKind.segment.value
        ],
        personas=[_persona_out(r) for r in rows if r["kind"] == GroupKind.persona.value],
    )


def list_tags(conn: Connection) -> TagsOut:
    """Tags of the published build, with member counts."""
    build = repository.live_build(conn)
    if build is None:
        return TagsOut(build_id=None, as_of=None, tags=[])
    rows = repository.groups(conn, build["build_id"], [GroupKind.tag.value])
    return TagsOut(
        build_id=build["build_id"],
        as_of=build["as_of"],
        tags=[
            TagOut(
                name=r["name"], members=r["members"], rule=r["rule"], description=r["description"]
            )
            for r in rows
        ],
    )


def segment_members(
    conn: Connection, name: str, cursor: str | None = None, limit: int = DEFAULT_LIMIT
) -> Page[SegmentMember]:
    """Members of a lifecycle segment or a persona (``persona-<id>``) of the published
    build, in member_id order, one page at a time.

    Raises SegmentNotFound when the published build has no such segment or persona,
    InvalidCursor when ``cursor`` was not made by us.
    """
    after = decode_cursor(cursor)
    build = repository.live_build(conn)
    found = (
        []
        if build is None
        else repository.get_group(
            conn, build["build_id"], name, [GroupKind.segment.value, GroupKind.persona.value]
        )
    )
    if not found:
        raise SegmentNotFound(f"the published build has no segment or persona {name!r}")
    # A lifecycle segment wins should a segment be named like a persona.
    group = min(found, key=lambda g: g["kind"] != GroupKind.segment.value)
    if group["kind"] == GroupKind.segment.value:
        rows = repository.page_members(conn, segment=name, after=after, limit=limit + 1)
    else:
        persona = PersonaDefinition.model_validate_json(group["definition"]).id
        rows = repository.page_members(conn, persona=persona, after=after, limit=limit + 1)
    items = [
        SegmentMember(
            member_id=r["member_id"],
            segment=r["segment"],
            persona=r["persona"],
            tags=orjson.loads(r["tags"]),
        )
        for r in rows[:limit]
    ]
    next_cursor = encode_cursor(items[-1].member_id) if len(rows) > limit else None
    return Page[SegmentMember](items=items, next_cursor=next_cursor)


def audience(
    conn: Connection,
    *,
    segment: str | None = None,
    persona: int | None = None,
    tag: str | None = None,
    page: int = 10_000,
) -> list[str]:
    """Every member of the published profiles in a segment, a persona or with a tag, in id
    order: what a campaign targets."""
    out: list[str] = []
    after: str | None = None
    while True:
        ids = repository.audience_page(
            conn, segment=segment, persona=persona, tag=tag, after=after, limit=page
        )
        out.extend(ids)
        if len(ids) < page:
            return out
        after = ids[-1]


def recent_builds(conn: Connection, limit: int = 12) -> list[tuple[str, datetime]]:
    """The newest ``limit`` builds, oldest first, as (build id, as of): the console's axis of
    figures over builds."""
    return repository.recent_builds(conn, limit)


def segments_by_build(conn: Connection, build_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Build id -> segment -> members, for ``build_ids`` (each present, maybe empty)."""
    return repository.segments_by_build(conn, build_ids)


def latest_build_summary(conn: Connection) -> dict[str, Any]:
    """The newest build's summary as its stages wrote it (empty before the first build)."""
    return repository.latest_summary(conn)
