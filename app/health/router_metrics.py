"""`GET /metrics`: Prometheus exposition (public unless LXDGW_METRICS_PUBLIC=false, then `read` scope)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.requests import HTTPConnection

from app.http.auth import current_principal

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", operation_id="metrics",
            response_class=Response, responses={200: {"content": {"text/plain": {}},
                                                      "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    if not request.app.state.settings.metrics_public:
        await current_principal(HTTPConnection(request.scope))
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
