"""``GET /favicon.ico``: the icon browsers ask every site's root for.

Without it every first page of the console and the member center logged a 404 in the browser.
The icon is a static file of the package (``console/static/favicon.ico``, 32x32), served with no
key, outside the OpenAPI (it is no API route) and cached for a day.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

ICON = Path(__file__).parent / "static" / "favicon.ico"

router = APIRouter()


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> FileResponse:
    """The package's icon (the console's pages link the same file under /console/static)."""
    return FileResponse(
        ICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"}
    )
