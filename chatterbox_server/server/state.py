"""What the routes share, kept on `app.state.tts`: settings, engine, voices, admission, metrics."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from chatterbox_server.engine import TTSEngine
from chatterbox_server.server.admission import Admission
from chatterbox_server.server.metrics import Metrics
from chatterbox_server.server.sessions import SessionTable
from chatterbox_server.server.settings import Settings
from chatterbox_server.server.voice_service import VoiceService

T = TypeVar("T")


@dataclass
class ServerState:
    """Everything a request needs once the app is ready."""

    settings: Settings
    engine: TTSEngine
    voices: VoiceService  # the store, the embedding cache and every encoding of a clip
    admission: Admission  # synthesis slots
    encodes: Admission  # voice-encoding slots (registration, /tts with voice_file)
    metrics: Metrics
    executor: ThreadPoolExecutor  # blocking work (engine, disk, encoding), never the event loop
    ready: bool = False
    draining: bool = False
    sessions: SessionTable = field(init=False)  # open realtime sessions, in all and per client

    def __post_init__(self) -> None:
        self.sessions = SessionTable(
            self.settings.max_realtime_sessions,
            self.settings.max_realtime_sessions_per_client,
            on_refuse=lambda reason: self.metrics.rejected.labels(reason=reason).inc(),
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work on the pool, never on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def get_state(connection: HTTPConnection) -> ServerState:
    """The app's ServerState (a route's one-line accessor)."""
    state: ServerState = connection.app.state.tts
    return state
