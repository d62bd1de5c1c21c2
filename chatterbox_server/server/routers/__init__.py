"""One router per API surface: health and metrics, voices, speech (/tts), and OpenAI's speech API."""

from chatterbox_server.server.routers import health, openai, tts, voices

__all__ = ["health", "openai", "tts", "voices"]
