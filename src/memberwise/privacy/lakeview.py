"""The event lake as batch work may read it: merged ids re-keyed, refusing members left out.

A build reads events through :class:`LakeView` instead of the raw lake, so every stage (profiles,
predictions, tags, segments, tiers, recommendations) sees a guest id folded into its registered
id (merges are re-keyed at read; the files keep what was ingested) and never sees a member who
refused profiling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection

from memberwise.kit.lake import EventLake
from memberwise.privacy import consent, repository
from memberwise.privacy.schemas import PrivacySettings, Purpose

if TYPE_CHECKING:
    import ibis


class LakeView(EventLake):
    """The same lake, read with merges applied and only ``audience``'s members kept."""

    def __init__(
        self, lake: EventLake, *, merges: dict[str, str], audience: consent.Audience
    ) -> None:
        super().__init__(lake.root)
        self.source = lake  # the lake read (an object-store lake reads by URI)
        self.merges = merges
        self.audience = audience

    def events_table(self, con: ibis.BaseBackend) -> ibis.Table:
        import ibis

        events = self.source.events_table(con)
        names = events.columns
        if self.merges:
            pairs = ibis.memtable(
                {"_source": list(self.merges), "_target": list(self.merges.values())},
                schema={"_source": "string", "_target": "string"},
            )
            joined = events.left_join(pairs, events.member_id == pairs._source)
            events = joined.mutate(member_id=joined._target.coalesce(joined.member_id)).select(
                *names
            )
        ids = sorted(self.audience.except_ids)
        if self.audience.default_allowed and not ids:
            return events
        listed = ibis.memtable({"_member": ids}, schema={"_member": "string"})
        if self.audience.default_allowed:
            return events.anti_join(listed, events.member_id == listed._member).select(*names)
        return events.semi_join(listed, events.member_id == listed._member).select(*names)


def build_view(conn: Connection, lake: EventLake, settings: PrivacySettings) -> LakeView:
    """The lake as a build reads it: merges re-keyed, only members who allow profiling."""
    return LakeView(
        lake,
        merges=repository.all_merges(conn),
        audience=consent.audience(conn, settings, Purpose.profiling),
    )
