"""Plotly figures as plain dicts (rendered in the browser by the bundled plotly.min.js).

Building the JSON by hand keeps the server from importing plotly's Python graph objects (slow to
import, large); the shapes are Plotly's documented trace and layout attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Figure = dict[str, Any]


def bar(labels: Sequence[str], values: Sequence[float], *, name: str = "") -> Figure:
    """One bar per label, the value on hover."""
    return {
        "data": [
            {
                "type": "bar",
                "x": list(labels),
                "y": list(values),
                "name": name,
                "hovertemplate": "%{x}: %{y:,}<extra></extra>",
            }
        ],
        "layout": {},
    }


def stacked(
    x: Sequence[str], series: Mapping[str, Sequence[float]], *, kind: str = "bar"
) -> Figure:
    """One trace per series over ``x`` (stacked bars, or lines with ``kind="scatter"``)."""
    data = [
        {
            "type": kind,
            "x": list(x),
            "y": list(values),
            "name": name,
            "hovertemplate": f"{name} %{{x}}: %{{y:,}}<extra></extra>",
        }
        for name, values in series.items()
    ]
    return {"data": data, "layout": {"barmode": "stack", "legend": {"orientation": "h"}}}


def histogram(values: Sequence[float], *, bins: int = 20, x_title: str = "") -> Figure:
    """The distribution of ``values`` (count per bin on hover)."""
    return {
        "data": [
            {
                "type": "histogram",
                "x": list(values),
                "nbinsx": bins,
                "hovertemplate": "%{x}: %{y:,}<extra></extra>",
            }
        ],
        "layout": {"xaxis": {"title": {"text": x_title}}, "bargap": 0.05},
    }


def binned(
    edges: Sequence[float], counts: Sequence[int], *, x_title: str = "", label: str = "{:,}"
) -> Figure:
    """A histogram already counted on the server: one bar per bin ``[edges[i], edges[i+1])``
    drawn over its range, the range and count on hover (the page carries the counts, not every
    value)."""
    lows, highs = list(edges[:-1]), list(edges[1:])
    return {
        "data": [
            {
                "type": "bar",
                "x": [(lo + hi) / 2 for lo, hi in zip(lows, highs, strict=True)],
                "y": list(counts),
                "width": [hi - lo for lo, hi in zip(lows, highs, strict=True)],
                "customdata": [
                    [label.format(lo), label.format(hi)] for lo, hi in zip(lows, highs, strict=True)
                ],
                "hovertemplate": "%{customdata[0]} – %{customdata[1]}: %{y:,}<extra></extra>",
            }
        ],
        "layout": {"xaxis": {"title": {"text": x_title}}, "bargap": 0.05},
    }


def heatmap(
    rows: Sequence[str], cols: Sequence[str], z: Sequence[Sequence[float]], *, x_title: str = ""
) -> Figure:
    """A matrix (e.g. tier transitions: from -> to) with the count in each cell on hover."""
    return {
        "data": [
            {
                "type": "heatmap",
                "x": list(cols),
                "y": list(rows),
                "z": [list(r) for r in z],
                "colorscale": "Blues",
                "reversescale": True,  # Plotly's Blues runs dark to light: 0 is light here
                "texttemplate": "%{z}",
                "hovertemplate": "%{y} → %{x}: %{z:,}<extra></extra>",
            }
        ],
        "layout": {"xaxis": {"title": {"text": x_title}}, "yaxis": {"autorange": "reversed"}},
    }


def bins(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """How many values fall in each [edge_i, edge_i+1) (the last bin is closed), for tables."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        for i in range(len(edges) - 1):
            last = i == len(edges) - 2
            if edges[i] <= v < edges[i + 1] or (last and v == edges[i + 1]):
                counts[i] += 1
                break
    return counts
