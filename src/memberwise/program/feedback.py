"""The program's ``feedback`` section: how far back the build reads feedback and when a problem
counts as recurring or rising."""

from __future__ import annotations

from pydantic import Field

from memberwise.program.base import Section


class FeedbackSettings(Section):
    """Windows and thresholds of the feedback stage."""

    #: Topics count feedback of this many days before the build's clock.
    window_days: int = Field(default=90, ge=1, le=730)
    #: A (key, aspect, trigger) needs this many negative mentions to be a topic.
    min_mentions: int = Field(default=3, ge=1, le=10_000)
    #: Rising test: the recent window (days) against this many weeks before it ...
    recent_days: int = Field(default=7, ge=1, le=60)
    baseline_weeks: int = Field(default=4, ge=1, le=52)
    #: ... flagged at this false-discovery rate, with at least this many recent complaints and
    #: this ratio of recent to baseline complaint rate.
    fdr: float = Field(default=0.01, gt=0, lt=1)
    min_complaints: int = Field(default=3, ge=1, le=10_000)
    min_ratio: float = Field(default=2.0, ge=1.0, le=1000)
