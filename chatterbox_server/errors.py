"""Typed engine errors; the server maps each class to one HTTP status in one place."""


class TTSError(Exception):
    """Base class of every error the engine raises on purpose.

    `param` names the request field the error is about, where the code raising it knows the
    field's name (OpenAI's error shape reports it: `UnsupportedOptionError(..., param="model")`)."""

    def __init__(self, *args: object, param: str | None = None):
        super().__init__(*args)
        self.param = param


class InvalidInputError(TTSError):
    """The caller's text or options are unusable (maps to a 4xx)."""


class InvalidAudioError(InvalidInputError):
    """A reference clip cannot be decoded, is non-finite, or is too short or too long."""


class VoiceNotFoundError(TTSError):
    """No voice is cached under the requested id."""


class ModelLoadError(TTSError):
    """The model files, tokenizer or runtime could not be loaded."""


class GenerationCancelledError(TTSError):
    """The caller cancelled a synthesis (for example the client disconnected)."""


class MissingVoiceError(InvalidInputError):
    """A synthesis request named neither a voice id nor a reference clip."""


class TextTooLongError(InvalidInputError):
    """The text is longer than the configured limit."""


class UploadTooLargeError(InvalidInputError):
    """An upload is larger than the configured limit."""


class SynthesisTimeoutError(TTSError):
    """A synthesis ran longer than the request timeout."""


class UnsupportedOptionError(InvalidInputError):
    """A model name or audio format this server cannot serve (the message lists what works)."""


class VoiceStoreUnavailableError(TTSError):
    """The voice store (an object store, a folder) cannot be reached or refused an operation."""
