"""Published predictions: one row per member of the latest published model version, and one row
per published model version with its fit diagnostics.

A model version is the id of the build whose ``predictions`` stage fitted the models; its
``summary`` is that stage's ``predictions.json`` (parameters, log-likelihoods, AUC,
calibration, feature importance), so operators can always see what produced a number.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, Float, Index, Integer, String, Table, Text

from memberwise.kit.db import metadata
from memberwise.kit.time import UTCDateTime

prediction_models = Table(
    "prediction_models",
    metadata,
    Column("model_version", String(64), primary_key=True),
    Column("as_of", UTCDateTime, nullable=False),
    Column("fitted_at", UTCDateTime, nullable=True),
    Column("published_at", UTCDateTime, nullable=False),
    # "published": the version the API shows; "superseded": published once, replaced since.
    Column("status", String(16), nullable=False),
    # predictions.json as the build wrote it, JSON text.
    Column("summary", Text, nullable=False),
)

member_predictions = Table(
    "member_predictions",
    metadata,
    Column("member_id", String(128), primary_key=True),
    Column("model_version", String(64), nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    # Money in minor units (fen), as everywhere in the store; null: the model was not fitted.
    Column("clv_12m_fen", BigInteger, nullable=True),
    Column("p_alive", Float, nullable=True),
    Column("churn_risk", Float, nullable=True),
    Column("expected_purchases_90d", Float, nullable=True),
    Column("expected_spend_fen", BigInteger, nullable=True),
    Column("repeat_purchases", Integer, nullable=False),
    Column("purchase_days", Integer, nullable=False),
    Column("purchase_interval_days", Float, nullable=True),
    Column("next_purchase_date", Date, nullable=True),
    Column("best_hour", Integer, nullable=False),
    Column("best_weekday", Integer, nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    # Removing the rows of earlier versions after a publish scans by version.
    Index("ix_member_predictions_model_version", "model_version"),
)
