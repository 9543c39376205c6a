"""A campaign's measured effect: treatment against holdout, as assigned, from the ledger's
orders since launch (:mod:`memberwise.campaigns.analysis` does the statistics)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Connection

from memberwise.campaigns import analysis, repository
from memberwise.campaigns.schemas import CampaignCreate, CampaignResults, MetricResult, SRMOut
from memberwise.campaigns.service import HOLDOUT, TREATMENT, CampaignNotLaunched, _get
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import service as ledger


def results(conn: Connection, campaign_id: str, *, now: datetime | None = None) -> CampaignResults:
    """Treatment against holdout since launch, as assigned: the split's SRM check, spend per
    member (Welch, CUPED on the pre-period, and an always-valid interval for daily reads),
    conversion and orders per member, with Benjamini-Hochberg across the metrics.

    Raises CampaignNotFound, CampaignNotLaunched."""
    now = as_utc(now or utcnow())
    row = _get(conn, campaign_id)
    if row["launched_at"] is None:
        raise CampaignNotLaunched(f"campaign {campaign_id!r} has not been launched")
    body = CampaignCreate.model_validate_json(row["definition"])
    launched = as_utc(row["launched_at"])
    assigned = repository.arms(conn, campaign_id)
    ids = [m for m, _ in assigned]
    after = ledger.spend_by_member(conn, ids, launched, now)
    before = ledger.spend_by_member(
        conn, ids, launched - timedelta(days=body.pre_period_days), launched
    )

    def column(arm: str, source: dict[str, tuple[int, int]], part: int) -> np.ndarray:
        return np.array(
            [source.get(m, (0, 0))[part] for m, a in assigned if a == arm], dtype=np.float64
        )

    counts = {HOLDOUT: 0, TREATMENT: 0}
    for _, a in assigned:
        counts[a] += 1
    srm = analysis.srm_check(
        counts, {HOLDOUT: body.holdout_percent, TREATMENT: 100.0 - body.holdout_percent}
    )
    out = SRMOut(
        observed=srm.observed,
        expected=srm.expected,
        p_value=srm.p_value,
        mismatch=srm.mismatch,
        note=srm.note,
    )
    if min(counts.values()) < 2:
        return CampaignResults(
            campaign_id=campaign_id,
            as_of=now,
            srm=out,
            metrics=[],
            note="too few members in an arm to compare",
        )
    spend_c, spend_t = column(HOLDOUT, after, 1), column(TREATMENT, after, 1)
    orders_c, orders_t = column(HOLDOUT, after, 0), column(TREATMENT, after, 0)
    spend = analysis.cuped(
        spend_c, column(HOLDOUT, before, 1), spend_t, column(TREATMENT, before, 1)
    )
    estimates = [
        ("spend_per_member_fen", spend),
        ("conversion", analysis.difference_in_means(orders_c > 0, orders_t > 0)),
        ("orders_per_member", analysis.difference_in_means(orders_c, orders_t)),
    ]
    adjusted, _ = analysis.benjamini_hochberg([e.p_value for _, e in estimates])
    mde = float(row["mde_fen"] or 100.0)
    metrics = []
    for (name, est), p_adj in zip(estimates, adjusted, strict=True):
        low = high = p_seq = None
        if name == "spend_per_member_fen":
            low, high, p_seq = analysis.confidence_sequence(est, mixing_variance=mde**2)
        metrics.append(
            MetricResult(
                metric=name,
                method=est.method,
                control=est.control,
                treatment=est.treatment,
                difference=est.difference,
                relative=est.relative,
                ci_low=est.ci_low,
                ci_high=est.ci_high,
                p_value=est.p_value,
                p_adjusted=p_adj,
                always_valid_low=low,
                always_valid_high=high,
                always_valid_p=p_seq,
            )
        )
    note = (
        out.note
        if srm.mismatch
        else (
            "read the always-valid interval when checking daily; the fixed interval holds "
            "only at a horizon chosen in advance"
        )
    )
    return CampaignResults(campaign_id=campaign_id, as_of=now, srm=out, metrics=metrics, note=note)
