"""WebSocket /v1/audio/speech/realtime: text deltas in, audio out as each sentence completes."""

from fastapi import APIRouter, WebSocket

from chatterbox_server.errors import TTSError
from chatterbox_server.server.admission import ShuttingDownError
from chatterbox_server.server.auth import ApiKeys
from chatterbox_server.server.realtime import RealtimeSession
from chatterbox_server.server.sessions import client_of, refuse_upgrade
from chatterbox_server.server.state import ServerState

router = APIRouter()


@router.websocket("/v1/audio/speech/realtime")
async def realtime(websocket: WebSocket) -> None:
    """See chatterbox_server/server/realtime.py (and the README) for the messages."""
    state: ServerState = websocket.app.state.tts
    client = client_of(websocket.scope, ApiKeys(state.settings.api_keys))
    try:
        if state.draining:
            raise ShuttingDownError("server is shutting down")
        session = state.sessions.acquire(client)  # in all and per client (sessions.py)
    except TTSError as e:
        return await refuse_upgrade(websocket, e)
    with session:
        await RealtimeSession(websocket.app.state.service, websocket).run()
