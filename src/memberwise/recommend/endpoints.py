"""HTTP routes of recommendations, similar items, coupon suggestions and the item catalog:
parse, authorize, call one service function, return."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from memberwise.kit.db import transaction
from memberwise.privacy import consent
from memberwise.privacy.auth import Authorize
from memberwise.privacy.schemas import Principal, Purpose, Role
from memberwise.recommend import catalog, publishing, service
from memberwise.recommend.schemas import (
    CouponSuggestionsOut,
    ItemIn,
    ItemOut,
    RecModelsOut,
    RecommendationsOut,
    SimilarOut,
)
from memberwise.recommend.serving import recent_events
from memberwise.runtime import Runtime, get_runtime

router = APIRouter(prefix="/v1", tags=["recommendations"])

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# Lists hold no PII: the platform shows them, operators and service staff look at them.
Reader = Annotated[
    Principal, Depends(Authorize(Role.platform, Role.operator, Role.analyst, Role.service))
]
CouponReader = Annotated[Principal, Depends(Authorize(Role.platform, Role.operator, Role.analyst))]
CatalogWriter = Annotated[Principal, Depends(Authorize(Role.platform))]
# Model diagnostics are for the people who run the program, as the predictions' models.
ModelReader = Annotated[Principal, Depends(Authorize(Role.operator, Role.analyst))]
MAX_N = 100
#: The purposes of marketing messages, one a channel.
MARKETING = (Purpose.marketing_sms, Purpose.marketing_email, Purpose.marketing_push)


@router.get(
    "/members/{member_id}/recommendations",
    summary="A member's recommendations, re-ranked with their last minutes (always answers)",
    response_model=RecommendationsOut,
)
async def get_recommendations(
    member_id: str,
    rt: RuntimeDep,
    principal: Reader,
    n: Annotated[int, Query(ge=1, le=MAX_N, description="How many items.")] = 20,
    category: Annotated[
        str | None,
        Query(min_length=1, max_length=128, description="Only items of this category (or below)."),
    ] = None,
    context: Annotated[
        str, Query(max_length=140, description="home, cart or item:{item_id}")
    ] = "home",
) -> Response:
    # The hot path runs on the event loop: a few keyed reads and in-memory work (about a
    # millisecond), cheaper than a thread hop under load. Serialized once here (the model was
    # validated when it was built) instead of validated again by FastAPI.
    reader = recent_events(rt.lake)
    privacy_settings = rt.program().privacy
    with transaction(rt.engine) as conn:
        personalize = consent.allows(conn, privacy_settings, member_id, Purpose.personalization)
        out = service.recommend(
            conn,
            reader,
            member_id,
            n=n,
            category=category,
            context=context,
            personalize=personalize,
        )
    return Response(out.model_dump_json(), media_type="application/json")


@router.get(
    "/recommendations/models",
    summary="Recommendation models: ranker or own-history lists, metrics against the baselines",
)
def get_models(
    rt: RuntimeDep,
    principal: ModelReader,
    limit: Annotated[int, Query(ge=1, le=100, description="How many models, newest first.")] = 20,
) -> RecModelsOut:
    with transaction(rt.engine) as conn:
        return publishing.list_models(conn, limit=limit)


@router.get("/items/{item_id}/similar", summary="Items bought or browsed with this one")
def get_similar(
    item_id: str,
    rt: RuntimeDep,
    principal: Reader,
    n: Annotated[int, Query(ge=1, le=MAX_N)] = 20,
) -> SimilarOut:
    with transaction(rt.engine) as conn:
        return service.similar_items(conn, item_id, n=n)


@router.get(
    "/members/{member_id}/coupons/suggested",
    summary="Coupons the latest build's targeting chose for the member, and when to send them",
)
def get_suggested_coupons(
    member_id: str, rt: RuntimeDep, principal: CouponReader
) -> CouponSuggestionsOut:
    settings = rt.program().privacy
    with transaction(rt.engine) as conn:
        out = service.suggested_coupons(conn, member_id)
        out.channels = [p for p in MARKETING if consent.allows(conn, settings, member_id, p)]
    return out


@router.put(
    "/items/{item_id}",
    summary="Create or replace an item (stock, hidden, launch time...) in the catalog",
)
def put_item(item_id: str, item: ItemIn, rt: RuntimeDep, principal: CatalogWriter) -> ItemOut:
    with transaction(rt.engine) as conn:
        return catalog.put_item(conn, item_id, item)


@router.get("/items/{item_id}", summary="An item as the catalog holds it")
def get_item(item_id: str, rt: RuntimeDep, principal: Reader) -> ItemOut:
    with transaction(rt.engine) as conn:
        return catalog.get_item(conn, item_id)
