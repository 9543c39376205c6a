"""HTTP routes of published predictions: parse, authorize, call one service function, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from memberwise.kit.db import transaction
from memberwise.predict import service
from memberwise.predict.schemas import MemberPredictionsOut, ModelsOut
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Role
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["predictions"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# Predictions hold no PII: the roles that read a member's profile read its predictions.
PredictionReader = Annotated[
    Principal,
    Depends(Authorize(Role.operator, Role.analyst, Role.service, Role.platform)),
]
ModelReader = Annotated[Principal, Depends(Authorize(Role.operator, Role.analyst))]


@router.get(
    "/members/{member_id}/predictions",
    summary="A member's CLV, alive probability, churn risk and habits (published models)",
)
def get_member_predictions(
    member_id: str, rt: RuntimeDep, principal: PredictionReader
) -> MemberPredictionsOut:
    with transaction(rt.engine) as conn:
        return service.get_member_predictions(conn, member_id)


@router.get(
    "/predictions/models",
    summary="Parameters and fit diagnostics of the published prediction models",
)
def get_models(rt: RuntimeDep, principal: ModelReader) -> ModelsOut:
    with transaction(rt.engine) as conn:
        return service.get_models(conn)
