"""Published profiles, segments, personas and tags as the API shows them, and the manifest
(``build.json``) of a build directory as the publisher reads it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from memberwise.profiles.fields import DETAILS

#: A profile field's value: a number, a string, an ISO-8601 UTC time string, or null.
FieldValue = int | float | str | None


class BuildStatus(StrEnum):
    """``published``: the build the API shows; ``superseded``: published once, replaced since;
    ``publishing``: its profiles are being written (not shown yet)."""

    published = "published"
    superseded = "superseded"
    publishing = "publishing"


class GroupKind(StrEnum):
    segment = "segment"
    persona = "persona"
    tag = "tag"


# --- build.json, the manifest the build job writes next to its Parquet artifacts ----------


class RuleDefinition(BaseModel):
    """A lifecycle segment or tag as the program defines it."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=128)
    rule: str | None = None
    description: str = ""


class PersonaFeature(BaseModel):
    """A field that sets a persona apart: its mean's z-score against all members."""

    field: str
    z: float


class PersonaDefinition(BaseModel):
    """A persona (cluster) as the build found it."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str | None = Field(default=None, description="The operator's name, if given.")
    size: int | None = None
    description: str = ""
    top_features: list[PersonaFeature] = []


class BuildManifest(BaseModel):
    """``build.json``: what the build measured, how long each stage took, and the definitions
    of its segments, tags and personas."""

    model_config = ConfigDict(extra="allow")

    build_id: str = Field(min_length=1, max_length=64)
    as_of: datetime
    engine: str = Field(max_length=16)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    events_read: int | None = None
    members: int | None = None
    segments: list[RuleDefinition] = []
    tags: list[RuleDefinition] = []
    personas: list[PersonaDefinition] = []


# --- API ------------------------------------------------------------------------------------


class DetailItem(BaseModel):
    """One entry of a detail list: a category, brand or channel and its number."""

    key: str
    value: float | None = Field(description="Affinity or share; for price_bands the band 1-5.")


class ProfileOut(BaseModel):
    """A member's profile from the published build."""

    member_id: str
    build_id: str
    as_of: datetime = Field(description="The time the build measured the profile at.")
    published_at: datetime
    segment: str = Field(description="The member's lifecycle segment.")
    persona: int | None = Field(description="The member's persona (cluster) id, if any.")
    tags: list[str] = Field(description="The tags the member has, in name order.")
    fields: dict[str, FieldValue] = Field(
        description="Every field of the profile catalog (docs/profiles.md) by name; times are "
        "ISO-8601 UTC strings, absent values null."
    )
    details: dict[str, list[DetailItem]] = Field(
        description="Ranked lists, best first: "
        + "; ".join(f"`{name}`: {meaning}" for name, meaning in DETAILS.items())
        + "."
    )


class SegmentOut(BaseModel):
    """A lifecycle segment of the published build."""

    name: str
    members: int
    rule: str | None
    description: str


class PersonaOut(BaseModel):
    """A persona (a cluster of similar members) of the published build."""

    name: str = Field(description="`persona-<id>`: pass it to /v1/segments/{name}/members.")
    id: int
    label: str = Field(
        description="The persona's human name: the operator's, else the same as `name`."
    )
    members: int
    description: str
    top_features: list[PersonaFeature]


class SegmentsOut(BaseModel):
    """The published build's lifecycle segments and personas (empty before any publish)."""

    build_id: str | None
    as_of: datetime | None
    segments: list[SegmentOut]
    personas: list[PersonaOut]


class TagOut(BaseModel):
    name: str
    members: int
    rule: str | None
    description: str


class TagsOut(BaseModel):
    """The published build's tags with their member counts (empty before any publish)."""

    build_id: str | None
    as_of: datetime | None
    tags: list[TagOut]


class SegmentMember(BaseModel):
    """A member listed in a segment or persona."""

    member_id: str
    segment: str
    persona: int | None
    tags: list[str]


class PublishResult(BaseModel):
    """What publishing a build did."""

    build_id: str
    as_of: datetime
    published_at: datetime
    members: int = Field(description="Members of the build (one published profile each).")
    written: int = Field(
        default=0, description="Profiles written: new members and members whose profile changed."
    )
    removed: int = Field(description="Profiles deleted: members absent from this build.")
    segments: int
    personas: int
    tags: int
