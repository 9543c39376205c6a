"""The CDNOW sample of the CLV papers (it ships inside `lifetimes`), read with our own code."""

from __future__ import annotations

import csv
from datetime import date
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from memberwise.predict.rfm import rfm_summary

DATASETS = Path(__import__("lifetimes").__file__).parent / "datasets"
CALIBRATION_END = date(1997, 9, 30)  # weeks 1-39 from 1997-01-01
OBSERVATION_END = date(1998, 6, 30)  # the holdout: weeks 40-78


@cache
def transactions() -> pa.Table:
    """CDNOW_sample.txt: master id, sample id (1-2357), yyyymmdd, CDs bought, dollar value."""
    ids, days, values = [], [], []
    for line in (DATASETS / "CDNOW_sample.txt").read_text().splitlines():
        _, customer, day, _, value = line.split()
        ids.append(int(customer))
        days.append(date(int(day[:4]), int(day[4:6]), int(day[6:])))
        values.append(float(value))
    return pa.table({"customer_id": ids, "date": pa.array(days, pa.date32()), "value": values})


@cache
def summary() -> dict[str, np.ndarray]:
    """Our weekly calibration/holdout summary of the raw transactions."""
    table = rfm_summary(
        transactions(),
        value_col="value",
        calibration_end=CALIBRATION_END,
        observation_end=OBSERVATION_END,
        freq="W",
    )
    return {name: table[name].to_numpy() for name in table.column_names}


def published() -> dict[str, np.ndarray]:
    """The summary as published with the papers (ID, x, t_x, T, zbar; 2 decimals)."""
    with (DATASETS / "cdnow_customers_summary_with_transactions.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def agrees_to_3_significant_figures(value: float, published: float) -> bool:
    """``value`` is within half a unit of the published figure's third significant digit."""
    unit = 10 ** (np.floor(np.log10(abs(published))) - 2)
    return bool(abs(value - published) <= unit / 2)
