"""Request and response schemas of the HTTP API, and the OpenAPI description of its errors and audio.

Bounds here are the engine's own (so a value the docs accept is one the engine accepts), and
enums list only what this install can produce.
"""

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chatterbox_server.audio.formats import FORMATS, available_formats, sample_exact_formats
from chatterbox_server.engine import DEFAULT_MAX_NEW_TOKENS, DEFAULT_REPETITION_PENALTY, GenerationOptions
from chatterbox_server.engine.prepare import MAX_REPETITION_PENALTY, MAX_TEMPERATURE, SEED_LIMIT
from chatterbox_server.voice_store import BACKEND_KINDS

# Model names OpenAI clients send (OpenAI's TTS models, and ours); all speak Chatterbox Turbo.
# Dated snapshots of OpenAI's (tts-1-1106, gpt-4o-mini-tts-2025-03-20) are accepted too, unlisted.
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "chatterbox-turbo")
MODEL_PATTERN = re.compile(r"(?:tts-1|tts-1-hd|gpt-4o-mini-tts)(?:-\d{4}(?:-\d{2}-\d{2})?)?|chatterbox-turbo")
MODELS_ACCEPTED = f"{', '.join(MODELS)} (or a dated snapshot such as gpt-4o-mini-tts-2025-03-20)"
# OpenAI's built-in voice names (its SDK's `voice` Literal): clients such as Pipecat send nothing
# else. The OpenAI route speaks them through TTS_VOICE_ALIASES, else in TTS_DEFAULT_VOICE.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)


def accepted_model(name: str) -> bool:
    return MODEL_PATTERN.fullmatch(name) is not None


# ----- errors ---------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. voice_not_found, queue_full, validation_error")
    message: str = Field(description="what went wrong, for a person")


class ErrorResponse(BaseModel):
    """Every error this API returns has this shape."""

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "A request the server understood but cannot serve (no voice named, an unknown model or format)",
    401: "Missing or wrong API key (send Authorization: Bearer <key>)",
    404: "No such voice (or route)",
    413: "Text, upload or body over the configured limit",
    422: "Invalid input: a field out of range, text that is empty, audio that cannot be used",
    429: "Server busy: every slot taken and the queue full (see Retry-After)",
    503: "Not ready, draining, no slot within the queue timeout, or the voice store unreachable (see Retry-After)",
    504: "Synthesis took longer than the request timeout",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, each with our error shape."""
    return {s: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="what went wrong, for a person")
    type: str = Field(description="invalid_request_error (a 4xx) or server_error (a 5xx)")
    param: str | None = Field(description="the request field at fault where known: voice, model, input, ...")
    code: str | None = Field(description="machine-readable kind, as `type` in our shape: voice_not_found, queue_full")


class OpenAIErrorResponse(BaseModel):
    """The errors of the OpenAI-compatible routes, in OpenAI's shape (its clients read them)."""

    error: OpenAIErrorDetail


def openai_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses, each with OpenAI's error shape."""
    return {s: {"model": OpenAIErrorResponse, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


SSE_MEDIA_TYPE = "text/event-stream"
# One server-sent event: `data` holds a JSON object, speech.audio.delta (base64 audio) or
# speech.audio.done (usage in tokens).
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["data"],
}


def audio_response(media_types: list[str], description: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI 200 response for binary audio in the given media types (SSE as events)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {m: ({"schema": SSE_EVENT_SCHEMA} if m == SSE_MEDIA_TYPE else binary) for m in media_types}
    return {200: {"description": description, "content": content}}


SYNTHESIS_ERRORS = error_responses(400, 404, 413, 422, 429, 503, 504)
OPENAI_SYNTHESIS_ERRORS = openai_error_responses(400, 404, 413, 422, 429, 503, 504)
JSON_SYNTHESIS_ERRORS = error_responses(404, 413, 422, 429, 503, 504)  # no upload, voice_id required


# ----- synthesis options ------------------------------------------------------------------------


class SamplingFields(BaseModel):
    """How tokens are chosen; every field is optional and defaults to the server's setting."""

    temperature: float | None = Field(
        None, ge=0, le=MAX_TEMPERATURE, description="0 (default) is greedy, as the model card; > 0 samples"
    )
    top_k: int | None = Field(None, ge=0, description="keep the k most likely tokens (0: all)")
    top_p: float | None = Field(None, gt=0, le=1, description="keep the smallest set with this probability mass")
    repetition_penalty: float | None = Field(
        None,
        gt=0,
        le=MAX_REPETITION_PENALTY,
        description=f"> 1 discourages repeats (server default {DEFAULT_REPETITION_PENALTY:g})",
    )
    seed: int | None = Field(None, ge=0, le=SEED_LIMIT - 1, description="seed of this request's sampler")
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description=f"speech tokens at most per piece, 25 per second of audio "
        f"(server ceiling, {DEFAULT_MAX_NEW_TOKENS} by default)",
    )

    def options(self) -> GenerationOptions:
        return GenerationOptions(**self.model_dump(include=set(SamplingFields.model_fields)))


class TTSForm(SamplingFields):
    """The form fields of POST /tts (multipart or urlencoded); the clip travels as a file part."""

    # "" rather than required: an empty text field is "text is empty", not pydantic's "Field required"
    text: str = Field("", description="text to speak (required); tags such as [laugh] and [chuckle] are spoken")
    voice_id: str | None = Field(None, description="a registered voice or alias (or send voice_file instead)")
    stream: bool = Field(True, description="send audio while later parts are generated (false: one finished WAV)")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="playback speed, pitch kept")


class TTSJsonRequest(SamplingFields):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="text to speak")
    voice_id: str = Field(description="a registered voice")


class PieceInfo(BaseModel):
    text: str
    text_start: int = Field(description="character offset of the piece in normalized_text")
    text_end: int
    audio_start: float = Field(description="seconds into the audio")
    audio_end: float = Field(description="where its audio ends, the silence of a pause after it included")
    pause_after: float = Field(0.0, description="seconds of silence a pause mark put at the end of its audio")
    generation_time: float
    tokens_generated: int
    truncated: Literal["runaway", "length"] | None = Field(
        None,
        description="why the piece ended early: runaway (a runaway guard stopped it: it ran past its text's "
        "bound, looped or fell silent, and the run was dropped) or length (it reached max_new_tokens); "
        "null when it ended on its own",
    )


class TTSJsonResponse(BaseModel):
    request_id: str
    audio_duration: float = Field(description="seconds of audio generated")
    generation_time: float = Field(description="seconds from admission to the last audio")
    time_to_first_audio: float = Field(description="seconds from admission to the first audio")
    rtf: float = Field(description="real-time factor: generation_time / audio_duration")
    tokens_generated: int
    sample_rate: int
    normalized_text: str = Field(
        description="the text as spoken, after the text clean-up (Markdown, emoji, stage directions, symbols, "
        "lexicon; pause marks removed): what the pieces' text_start and text_end index"
    )
    pieces: list[PieceInfo]
    truncated: Literal["runaway", "length"] | None = Field(
        None, description="runaway when any piece was stopped as a runaway, else length when any reached max_new_tokens"
    )


# ----- health -----------------------------------------------------------------------------------


class HealthStatus(BaseModel):
    """Readiness and what is being served; only `status` while the model is still loading."""

    status: Literal["ok", "loading", "draining"]
    model_id: str | None = Field(None, description="hub repo id, or 'stand-in'")
    model_dir: str | None = Field(None, description="where the model files are; only for a client with an API key")
    dtype: str | None = Field(None, description="language model dtype: fp32, fp16, q8, q4, q4f16")
    encoder_dtype: str | None = None
    device: str | None = Field(None, description="cuda or cpu")
    providers: list[str] | None = Field(None, description="ONNX Runtime providers in use (a CPU fallback shows)")
    kv_on_device: bool | None = Field(None, description="the KV cache stays on the GPU between decode steps")
    max_batch_size: int | None = Field(None, description="sequences the engine loop decodes together")
    stand_in: bool | None = Field(None, description="true: generated stand-in weights that speak tones")
    voices_registered: int | None = Field(None, description="as of the last listing of the voice store")
    voice_store: str | None = Field(
        None,
        description=f"the voice store's backend, one of: {', '.join(BACKEND_KINDS)} "
        "(local: a folder of this replica; the others are shared by replicas)",
    )
    voice_store_location: str | None = Field(None, description="the folder or s3:// URL; only with an API key")
    voices_cached: int | None = None
    in_flight: int | None = None
    queued: int | None = None
    max_concurrent_requests: int | None = None
    note: str | None = None


# ----- voices -----------------------------------------------------------------------------------


class VoiceInfo(BaseModel):
    voice_id: str
    duration: float = Field(description="seconds of reference audio")
    created_at: datetime = Field(description="registration time, ISO 8601 in UTC")


class VoiceList(BaseModel):
    voices: list[VoiceInfo]


class VoiceRegistered(BaseModel):
    voice_id: str
    message: str
    duration: float


class VoiceDeleted(BaseModel):
    voice_id: str
    message: str


# ----- OpenAI speech API ------------------------------------------------------------------------

# The response_format types are built from the format records, so a new format is one record
# in audio/formats.py. Realtime's lists its default first (as its validation message always has),
# and takes only the formats whose bytes are exactly each piece's samples (a session never ends a
# codec's stream between segments).
REALTIME_DEFAULT_FORMAT = "pcm"
REALTIME_FORMATS = (REALTIME_DEFAULT_FORMAT, *(f for f in sample_exact_formats() if f != REALTIME_DEFAULT_FORMAT))
if TYPE_CHECKING:  # mypy cannot read a Literal built at runtime
    ResponseFormat = str
    RealtimeFormat = str
else:
    ResponseFormat = Literal[tuple(FORMATS)]
    RealtimeFormat = Literal[REALTIME_FORMATS]
# the sample rates (Hz) the OpenAI route offers; audio/formats.py says which formats take which
SpeechSampleRate = Literal[8000, 16000, 22050, 24000, 44100, 48000]


def _available_format_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = list(available_formats())


class VoiceRef(BaseModel):
    """OpenAI's custom-voice object, `{"id": "voice_1234"}`."""

    id: str = Field(description="a registered voice id or alias")


class SpeechRequest(BaseModel):
    """OpenAI's speech request; fields we do not know are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description=f"one of {MODELS_ACCEPTED}; all speak Chatterbox Turbo")
    input: str = Field(description="text to speak; tags such as [laugh] and [sigh] are spoken")
    voice: str | VoiceRef = Field(
        description="a registered voice id or alias, as a string or OpenAI's {\"id\": ...}; OpenAI's own names "
        f"({', '.join(OPENAI_VOICES)}) without an alias speak in the default voice (TTS_DEFAULT_VOICE)"
    )
    instructions: str | None = Field(
        None,
        description="accepted and ignored: Chatterbox Turbo has no style prompt; write paralinguistic tags "
        "such as [laugh] or [sigh] in `input` instead",
    )
    # Validation knows every OpenAI format so a known-but-unavailable one gets a 400 naming what
    # works; the documented enum lists only what this install can encode.
    response_format: ResponseFormat = Field("mp3", json_schema_extra=_available_format_enum)
    sample_rate: SpeechSampleRate | None = Field(
        None,
        description="the audio's sample rate in Hz (not OpenAI's; default 24000, ulaw 8000): pcm, wav, mp3, aac "
        "and flac take every listed rate, opus 8000, 16000, 24000 and 48000, ulaw only 8000; another "
        "combination is a 400",
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="playback speed, pitch kept")
    stream_format: Literal["audio", "sse"] = Field("audio", description="sse: base64 audio in server-sent events")
    stream: bool = Field(
        True,
        description="false: one whole file with its real length and Content-Length (a streamed WAV's header "
        "says 'unknown length'); not with stream_format=sse",
    )
    include_timestamps: bool = Field(
        False,
        description="not OpenAI's; with stream_format=sse: a speech.audio.timestamps event after each piece's audio, "
        "with estimated character and word timings (seconds from the start of the audio)",
    )

    @property
    def voice_id(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


SPEECH_MEDIA_TYPES = [FORMATS[f].content_type for f in available_formats()] + [SSE_MEDIA_TYPE]


class ModelInfo(BaseModel):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "resemble-ai"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelInfo]


class VoiceNames(BaseModel):
    """/v1/audio/voices?format=names: the names alone."""

    voices: list[str]


class OpenAIVoice(BaseModel):
    id: str = Field(description="what to send as `voice`")
    name: str = Field(description="for a person: the id, or 'alias → voice id' for an alias")


class OpenAIVoiceList(BaseModel):
    """/v1/audio/voices: the shape Open WebUI reads."""

    voices: list[OpenAIVoice]


# ----- realtime WebSocket ---------------------------------------------------------------------


class RealtimeConfig(SamplingFields):
    """The first message on /v1/audio/speech/realtime: who speaks, in what format, how."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"]
    voice: str = Field(description="a registered voice id (or an alias)")
    response_format: RealtimeFormat = Field(
        REALTIME_DEFAULT_FORMAT,
        description="pcm: raw 16-bit little-endian mono at 24 kHz; wav: the same after one WAV header",
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="playback speed, pitch kept")
    timestamps: bool = Field(
        False, description="a segment.timestamps event after each piece's audio: estimated character and word timings"
    )
