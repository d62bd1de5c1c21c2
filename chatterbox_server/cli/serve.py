"""Serve the API: `chatterbox-server` or `python server.py` [--model-dir DIR] [--port P] [--stand-in] ...

On SIGTERM (or Ctrl+C) the server drains before it stops: /health/ready answers 503 at once, the
listener stays open so a load balancer's retries and probes are answered, new syntheses get 503
with Retry-After, in-flight streams get TTS_SHUTDOWN_GRACE_S to finish, then the process exits 0.
A second signal stops it at once.
"""

import asyncio
import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from chatterbox_server.engine import locate_model
from chatterbox_server.errors import ModelLoadError, VoiceStoreUnavailableError
from chatterbox_server.server import create_app, settings_from_cli
from chatterbox_server.server.app import JSON_BYTES_PER_CHAR, UPLOAD_OVERHEAD_BYTES, ensure_stand_in
from chatterbox_server.server.connections import (
    CLOSE_REASONS,
    CloseReport,
    ConnectionLimits,
    ConnectionTable,
    connection_cap,
    limited_protocols,
)
from chatterbox_server.server.drain import drain
from chatterbox_server.server.metrics import Metrics
from chatterbox_server.server.settings import Settings, SettingsError
from chatterbox_server.voice_store import open_backend

logger = logging.getLogger(__name__)

SHUTDOWN_MARGIN_S = 5  # after the drain: time for uvicorn to close idle keep-alive connections


class PortInUseError(Exception):
    """The listening address is taken (found before the model loads, not after)."""


def check_port_free(host: str, port: int, setting: str = "--port / TTS_PORT") -> None:
    """Bind the address as uvicorn will (SO_REUSEADDR) and let it go again."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise PortInUseError(f"cannot listen on {host}:{port} ({e.strerror}); choose another {setting}") from None


class DrainingServer(uvicorn.Server):
    """uvicorn, but its first SIGTERM/SIGINT drains the app (see the module docstring) before the
    usual shutdown, and the process exits 0 rather than re-raising the signal."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float):
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not appended to uvicorn's captured signals: a drained server ends with exit status 0.
        if self._draining or not self.started or self._loop is None:
            self.force_exit = self._draining  # a second signal: stop now
            self.should_exit = True
            return
        self._draining = True
        logger.info("%s: draining before shutdown", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._start_drain)  # signal-safe: only wakes the loop

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        state = getattr(self.app.state, "tts", None)
        if state is not None:
            await drain(state, self.grace_s)
        self.should_exit = True


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for the app, with the connection limits of server/connections.py."""
    metrics: Metrics = app.state.metrics
    for reason in CLOSE_REASONS:
        metrics.connections_closed.labels(reason=reason)  # every series from the start, at 0
    table = ConnectionTable(connection_cap(settings.max_connections))
    metrics.connections_open.set_function(lambda: len(table))
    limits = ConnectionLimits(
        max_connections=table.max_connections,
        header_timeout_s=settings.header_timeout_s,
        max_header_bytes=settings.max_header_bytes,
        body_timeout_s=settings.body_timeout_s,
        write_timeout_s=settings.write_timeout_s,
    )
    table.on_close = CloseReport(lambda reason: metrics.connections_closed.labels(reason=reason).inc())
    http, ws = limited_protocols(table, limits)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http,
        ws=ws,
        workers=1,
        log_level=settings.log_level,
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]  # uvicorn takes a float
        timeout_graceful_shutdown=SHUTDOWN_MARGIN_S,
        access_log=False,  # RequestMetricsMiddleware logs one line per request, with its timing
        # a realtime message holds one text delta at most: bound what one frame may allocate
        ws_max_size=JSON_BYTES_PER_CHAR * settings.max_text_length + UPLOAD_OVERHEAD_BYTES,
    )


def main(argv: list[str] | None = None) -> None:
    try:
        settings = settings_from_cli(argv)
    except SettingsError as e:  # one line, no traceback: which flag (and variable), which value, why
        print(f"server.py: invalid setting: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # a busy port, no voice store, missing files or no network: one clear line and exit 2, before loading
        check_port_free(settings.host, settings.port)
        if settings.wyoming_port is not None:
            check_port_free(
                settings.wyoming_host or settings.host, settings.wyoming_port, "--wyoming-port / TTS_WYOMING_PORT"
            )
        open_backend(settings.voice_store, settings.voices_dir).check()
        ensure_stand_in(settings)
        locate_model(settings.engine_config())
        settings.engine_config().generation.cleanup_rules()  # a pronunciation lexicon's bad line, named
    except (ModelLoadError, VoiceStoreUnavailableError, PortInUseError) as e:
        logger.error("cannot start: %s", e)
        raise SystemExit(2) from None
    app = create_app(settings)
    server = DrainingServer(server_config(app, settings), app, grace_s=settings.shutdown_grace_s)
    server.run()
    if not server.started:  # the app failed to start (a port in use, a bad store): not a clean exit
        raise SystemExit(3)


if __name__ == "__main__":
    main()
