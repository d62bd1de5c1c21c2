"""Serve the API: `chatterbox-server` or `python server.py` [--model-dir DIR] [--port P] [--stand-in] ..."""

import logging

from chatterbox_server.engine import locate_model
from chatterbox_server.errors import ModelLoadError
from chatterbox_server.server import create_app, settings_from_cli
from chatterbox_server.server.app import ensure_stand_in

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings = settings_from_cli(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # missing files or no network: one clear line and exit 2, not a startup traceback
        ensure_stand_in(settings)
        locate_model(settings.engine_config())
    except ModelLoadError as e:
        logger.error("cannot start: %s", e)
        raise SystemExit(2) from None
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )


if __name__ == "__main__":
    main()
