"""Campaigns and their experiments: the list with members by status, and a launched campaign's
results -- treatment against holdout with confidence intervals, and a banner when the split's
sample-ratio test fails (SRM: the results are not to be trusted until it is explained).

Roles as in the API: operators and analysts read (admin too).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from memberwise.campaigns import outcomes
from memberwise.campaigns import service as campaigns
from memberwise.campaigns.schemas import MetricResult
from memberwise.console import i18n
from memberwise.console.nav import NavEntry
from memberwise.console.ops_format import interval
from memberwise.console.schemas import ConsoleUser
from memberwise.console.web import Require, render, runtime_of
from memberwise.kit.db import transaction
from memberwise.privacy.schemas import Role

router = APIRouter(prefix="/campaigns")
READ_ROLES = frozenset({Role.operator, Role.analyst})
NAV = NavEntry("/campaigns", "nav.campaigns", READ_ROLES, order=60)
Reader = Annotated[ConsoleUser, Depends(Require(*READ_ROLES))]

i18n.add(
    {
        "nav.campaigns": ("营销活动与实验", "Campaigns & experiments"),
        "camp.title": ("营销活动与实验", "Campaigns and experiments"),
        "camp.name": ("活动", "Campaign"),
        "camp.status": ("状态", "Status"),
        "camp.launched": ("上线时间", "Launched"),
        "camp.members": ("会员（按状态）", "Members by status"),
        "camp.results": ("实验结果：实验组 vs 对照组", "Results: treatment vs holdout"),
        "camp.metric": ("指标", "Metric"),
        "camp.control": ("对照组", "Holdout"),
        "camp.treatment": ("实验组", "Treatment"),
        "camp.difference": ("差值", "Difference"),
        "camp.ci": ("95% 置信区间", "95% CI"),
        "camp.p": ("p 值（BH 校正）", "p (BH-adjusted)"),
        "camp.srm_bad": (
            "样本比例不匹配（SRM）：分组比例与设计不符，结果不可信，请先排查分流。",
            "Sample ratio mismatch (SRM): the split does not match the design; do not trust "
            "these results until the assignment is explained.",
        ),
        "camp.srm_ok": ("分组比例检验通过", "Sample ratio check passed"),
        "camp.observed": ("实际人数", "Observed"),
        "camp.expected": ("期望人数", "Expected"),
        "camp.not_launched": ("活动尚未上线，没有结果。", "Not launched yet: no results."),
        "camp.ci_chart": ("差值与 95% 置信区间", "Difference with its 95% CI"),
    }
)


def ci_figure(metrics: list[MetricResult]) -> dict[str, Any]:
    """Each metric's difference (treatment - holdout) as a point with its interval."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [m.difference for m in metrics],
                "y": [m.metric for m in metrics],
                "error_x": {
                    "type": "data",
                    "symmetric": False,
                    "array": [m.ci_high - m.difference for m in metrics],
                    "arrayminus": [m.difference - m.ci_low for m in metrics],
                },
                "hovertemplate": "%{y}: %{x:.4f}<extra></extra>",
            }
        ],
        "layout": {
            "xaxis": {"zeroline": True},
            "yaxis": {"automargin": True},
            "margin": {"l": 170},
            "height": 80 + 50 * len(metrics),
        },
    }


@router.get("", include_in_schema=False)
def campaign_list(request: Request, user: Reader) -> HTMLResponse:
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        items = campaigns.list_all(conn)
    return render(request, "campaigns.html", user, campaigns=items)


@router.get("/{campaign_id}", include_in_schema=False)
def campaign(request: Request, campaign_id: str, user: Reader) -> HTMLResponse:
    """A campaign and, once launched, its results. Raises CampaignNotFound (a 404 page)."""
    rt = runtime_of(request)
    with transaction(rt.engine) as conn:
        out = campaigns.get(conn, campaign_id)
        results = outcomes.results(conn, campaign_id) if out.launched_at else None
    rows = [
        (m.metric, f"{m.control:.4f}", f"{m.treatment:.4f}", f"{m.difference:+.4f}",
         interval(m.ci_low, m.ci_high), f"{m.p_adjusted:.4f}")
        for m in (results.metrics if results else [])
    ]  # fmt: skip
    figure = ci_figure(results.metrics) if results and results.metrics else None
    return render(request, "campaign.html", user, c=out, results=results, rows=rows, figure=figure)
