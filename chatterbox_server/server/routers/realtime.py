"""WebSocket /v1/audio/speech/realtime: text deltas in, audio out as each sentence completes."""

from fastapi import APIRouter, WebSocket

from chatterbox_server.server.realtime import RealtimeSession

router = APIRouter()


@router.websocket("/v1/audio/speech/realtime")
async def realtime(websocket: WebSocket) -> None:
    """See chatterbox_server/server/realtime.py (and the README) for the messages."""
    await RealtimeSession(websocket.app.state.service, websocket).run()
