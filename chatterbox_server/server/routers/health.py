"""Liveness, readiness and Prometheus metrics."""

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chatterbox_server.server.context import RequestContext
from chatterbox_server.server.metrics import Metrics
from chatterbox_server.server.protocol import HealthStatus
from chatterbox_server.server.routes import Access, route_facts
from chatterbox_server.server.state import ServerState

router = APIRouter(tags=["health"])


@router.get(
    "/health/live",
    summary="Liveness",
    description="200 while the process serves HTTP at all, even while the model loads.",
)
@route_facts(access=Access.OPEN)  # probes carry no key
async def live() -> dict[str, str]:
    return {"status": "alive"}


HEALTH_DESCRIPTION = (
    "200 with the model, device, providers and load once the model is loaded and warmed up; "
    "503 with `status` loading or draining otherwise, so a load balancer sends no traffic."
)
HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": HealthStatus, "description": "Ready"},
    503: {"model": HealthStatus, "description": "Loading or draining"},
}


@router.get("/health", summary="Readiness and model facts", description=HEALTH_DESCRIPTION, responses=HEALTH_RESPONSES)
@router.get("/health/ready", summary="Readiness", description=HEALTH_DESCRIPTION, responses=HEALTH_RESPONSES)
@route_facts(access=Access.OPEN)
async def health(request: Request) -> JSONResponse:
    state: ServerState | None = getattr(request.app.state, "tts", None)
    if state is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    engine, store = state.engine, state.voices.store
    body: dict[str, Any] = {
        "status": "ok" if state.ready else ("draining" if state.draining else "loading"),
        "model_id": state.settings.model_id if not engine.files.is_stand_in else "stand-in",
        "dtype": engine.model_dtype,
        "encoder_dtype": engine.encoder_dtype,
        "device": engine.device,
        "providers": engine.active_providers,
        "kv_on_device": engine.kv_on_device,
        "max_batch_size": engine.max_batch_size,
        "stand_in": engine.is_stand_in,
        "voices_registered": len(store),
        "voice_store": store.backend.kind,
        "voices_cached": len(state.voices.cache),
        "in_flight": state.admission.running,
        "queued": state.admission.queued,
        "max_concurrent_requests": state.settings.max_concurrent_requests,
    }
    if RequestContext.of(request).authenticated:  # paths only for a keyed client
        body["model_dir"] = str(engine.files.root)
        body["voice_store_location"] = store.backend.location
    if engine.is_stand_in:
        body["note"] = "stand-in model with random weights: it speaks tones, not words"
    return JSONResponse(body, status_code=200 if state.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Prometheus text exposition; `?format=json` (or `Accept: application/json`) gives the "
    "summary: requests, audio seconds, average RTF, concurrency.",
    responses={
        200: {
            "content": {
                CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            }
        }
    },
    response_class=Response,
)
@route_facts(access=Access.METRICS)  # scrapers carry no key unless TTS_METRICS_REQUIRE_KEY
async def metrics(
    request: Request, format: str | None = Query(None, description="json: the JSON summary instead of Prometheus text")
) -> Response:
    m: Metrics = request.app.state.metrics
    if format == "json" or "application/json" in request.headers.get("accept", ""):
        return JSONResponse(m.summary())
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
