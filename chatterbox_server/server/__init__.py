"""The HTTP layer: `create_app(settings, engine=None)` and the `Settings` it reads."""

from chatterbox_server.server.app import create_app
from chatterbox_server.server.settings import Settings, settings_from_cli

__all__ = ["Settings", "create_app", "settings_from_cli"]
