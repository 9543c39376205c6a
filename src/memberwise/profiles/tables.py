"""Published profiles: the builds published so far, one profile per member, and the groups
(lifecycle segments, personas, tags) of each build with their member counts.

A profile's fields and details are one JSON text made by the publisher from the build's
artifacts, so the API serves a profile with one keyed read (joined to its build's row).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

builds = Table(
    "builds",
    metadata,
    Column("build_id", String(64), primary_key=True),
    Column("as_of", UTCDateTime, nullable=False),
    Column("engine", String(16), nullable=False),
    # "published": the build the API shows; "superseded": published once, replaced since.
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("published_at", UTCDateTime, nullable=False),
    # JSON text: the profile field names, in the order of every profile's "fields" array.
    Column("fields", Text, nullable=False),
    # build.json as the job wrote it (stages, counts, definitions), JSON text.
    Column("summary", Text, nullable=False),
)

member_profiles = Table(
    "member_profiles",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("build_id", String(64), nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("segment", String(64), nullable=False),
    Column("persona", Integer, nullable=True),
    # JSON text: the member's tags, an array of names in name order.
    Column("tags", Text, nullable=False),
    # JSON text: {"fields": [value, ...], "details": {detail: [[key, value], ...]}}, the
    # values in the order of the build's ``fields`` (positional: half the bytes of named
    # values, and bytes are most of a publish's time), each detail list best first.
    Column("profile", Text, nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    # Keyset pages of one segment or persona, in member_id order.
    Index("ix_member_profiles_segment_member", "segment", "member_id"),
    Index("ix_member_profiles_persona_member", "persona", "member_id"),
    # Kept a rowid table (unlike members): a profile is a few kilobytes, and SQLite advises
    # WITHOUT ROWID only for rows well under a twentieth of a page.
)

profile_groups = Table(
    "profile_groups",
    metadata,
    Column("build_id", String(64), nullable=False),
    # "segment" (lifecycle), "persona" (cluster, named "persona-<id>") or "tag".
    Column("kind", String(16), nullable=False),
    Column("name", String(128), nullable=False),
    Column("members", Integer, nullable=False),
    # Listing order: the group's place in build.json (the order the program declares them).
    Column("position", Integer, nullable=False),
    # The rule of a segment or tag; null for a persona (clusters have no rule).
    Column("rule", Text, nullable=True),
    Column("description", Text, nullable=False),
    # JSON text: the group's entry in build.json (a persona's id, name and top features).
    Column("definition", Text, nullable=False),
    PrimaryKeyConstraint("build_id", "kind", "name"),
)
