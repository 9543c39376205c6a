"""A campaign's measured effect: each offer arm against the control (the holdout), as
assigned, from the ledger's orders since launch (:mod:`memberwise.campaigns.analysis` does the
statistics)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Connection

from memberwise.campaigns import analysis, repository
from memberwise.campaigns.schemas import (
    CampaignCreate,
    CampaignResults,
    MetricResult,
    OfferKind,
    SRMOut,
    TargetingResult,
)
from memberwise.campaigns.service import CampaignNotLaunched, _get
from memberwise.kit.time import as_utc, utcnow
from memberwise.ledger import service as ledger
from memberwise.recommend import service as recommend


def results(conn: Connection, campaign_id: str, *, now: datetime | None = None) -> CampaignResults:
    """Each offer arm against the control since launch, as assigned: the split's SRM check over
    every arm at the configured ratios, then per arm spend per member (Welch, CUPED on the
    pre-period, and an always-valid interval for daily reads), conversion, orders per member,
    points redeemed per member, spend per order (the delta method; when both sides ordered) and
    retention (of the pre-period's buyers, those who bought again; when both sides have two),
    with Benjamini-Hochberg across every arm and metric (more arms, more chances of a false
    lift). The control is the holdout, or the first arm without one.

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

    ratios = body.ratios()
    control = body.control()
    counts = dict.fromkeys(ratios, 0)
    for _, a in assigned:
        counts[a] = counts.get(a, 0) + 1
    srm = analysis.srm_check(counts, ratios)
    out = SRMOut(
        observed=srm.observed,
        expected=srm.expected,
        p_value=srm.p_value,
        mismatch=srm.mismatch,
        note=srm.note,
    )
    if min(counts[a] for a in ratios) < 2:
        return CampaignResults(
            campaign_id=campaign_id,
            as_of=now,
            control=control,
            srm=out,
            metrics=[],
            note="too few members in an arm to compare",
        )
    redeemed = ledger.points_redeemed_by_member(conn, ids, launched, now)
    points = {m: (0, n) for m, n in redeemed.items()}  # shaped like the spend columns
    spend_c, orders_c = column(control, after, 1), column(control, after, 0)
    pre_c, bought_before_c = column(control, before, 1), column(control, before, 0) > 0
    estimates: list[tuple[str, str, analysis.Estimate]] = []
    for arm in ratios:
        if arm == control:
            continue
        spend_t, orders_t = column(arm, after, 1), column(arm, after, 0)
        bought_before_t = column(arm, before, 0) > 0
        estimates += [
            (
                arm,
                "spend_per_member_fen",
                analysis.cuped(spend_c, pre_c, spend_t, column(arm, before, 1)),
            ),
            (arm, "conversion", analysis.difference_in_means(orders_c > 0, orders_t > 0)),
            (arm, "orders_per_member", analysis.difference_in_means(orders_c, orders_t)),
            (
                arm,
                "points_redeemed_per_member",
                analysis.difference_in_means(column(control, points, 1), column(arm, points, 1)),
            ),
        ]
        if orders_c.sum() > 0 and orders_t.sum() > 0:
            # A ratio of two per-member sums: the member is the unit, so the delta method.
            estimates.append(
                (
                    arm,
                    "spend_per_order_fen",
                    analysis.ratio_difference(spend_c, orders_c, spend_t, orders_t),
                )
            )
        if bought_before_c.sum() >= 2 and bought_before_t.sum() >= 2:
            # Retention: of the pre-period's buyers, the share who bought again since launch.
            estimates.append(
                (
                    arm,
                    "retention",
                    analysis.difference_in_means(
                        orders_c[bought_before_c] > 0, orders_t[bought_before_t] > 0
                    ),
                )
            )
    adjusted, _ = analysis.benjamini_hochberg([e.p_value for _, _, e in estimates])
    mde = float(row["mde_fen"] or 100.0)
    metrics = []
    for (arm, name, est), p_adj in zip(estimates, adjusted, strict=True):
        low = high = p_seq = None
        if name == "spend_per_member_fen":
            low, high, p_seq = analysis.confidence_sequence(est, mixing_variance=mde**2)
        metrics.append(
            MetricResult(
                metric=name,
                arm=arm,
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
    targeting = [
        _targeting(conn, arm, offer.coupon_template, assigned, control, after)
        for arm, offer in body.offers().items()
        if arm != control and offer.kind is OfferKind.coupon and offer.coupon_template
    ]
    return CampaignResults(
        campaign_id=campaign_id,
        as_of=now,
        control=control,
        srm=out,
        metrics=metrics,
        targeting=targeting,
        note=note,
    )


def _targeting(
    conn: Connection,
    arm: str,
    template: str,
    assigned: list[tuple[str, str]],
    control: str,
    after: dict[str, tuple[int, int]],
) -> TargetingResult:
    """Qini / AUUC of the published uplift for ``template`` on the arm and the control."""
    members = [(m, a == arm) for m, a in assigned if a in (arm, control)]
    ids = [m for m, _ in members]
    scores = recommend.coupon_uplifts(conn, template, ids)
    # Unscored members were not chosen by the targeting: ranked after every scored one.
    floor = min(scores.values(), default=0.0) - 1.0
    uplift = np.array([scores.get(m, floor) for m in ids], dtype=np.float64)
    treated = np.array([t for _, t in members], dtype=bool)
    converted = np.array([after.get(m, (0, 0))[0] > 0 for m in ids], dtype=np.float64)
    _, gain = analysis.qini_curve(uplift, treated, converted)
    return TargetingResult(
        arm=arm,
        template=template,
        members=len(ids),
        members_scored=len(scores),
        qini=analysis.qini_coefficient(uplift, treated, converted),
        auuc=analysis.auuc(uplift, treated, converted),
        auuc_random=float(gain[-1]) / 2 / max(len(ids), 1),
    )
