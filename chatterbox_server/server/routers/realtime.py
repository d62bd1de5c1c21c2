"""WebSocket /v1/audio/speech/realtime: text deltas in, audio out as each sentence completes."""

from fastapi import APIRouter, WebSocket

from chatterbox_server.server.http_errors import RETRY_AFTER_S, error_response
from chatterbox_server.server.realtime import RealtimeSession
from chatterbox_server.server.state import ServerState

router = APIRouter()


@router.websocket("/v1/audio/speech/realtime")
async def realtime(websocket: WebSocket) -> None:
    """See chatterbox_server/server/realtime.py (and the README) for the messages."""
    state: ServerState = websocket.app.state.tts
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if state.draining:
        return await websocket.send_denial_response(
            error_response(503, "shutting_down", "server is shutting down", retry)
        )
    limit = state.settings.max_realtime_sessions
    if state.realtime_sessions >= limit:
        message = f"server busy: {limit} realtime sessions are open"
        return await websocket.send_denial_response(error_response(429, "queue_full", message, retry))
    state.realtime_sessions += 1
    try:
        await RealtimeSession(websocket.app.state.service, websocket).run()
    finally:
        state.realtime_sessions -= 1
