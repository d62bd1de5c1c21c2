"""Register, list, inspect and delete voices (reference clips with their encoder outputs)."""

from datetime import datetime, timezone

from fastapi import APIRouter, File, Form, UploadFile

from chatterbox_server.server.protocol import VoiceDeleted, VoiceInfo, VoiceList, VoiceRegistered, error_responses
from chatterbox_server.server.routes import Body, route_facts
from chatterbox_server.server.serving import Service, Voices
from chatterbox_server.voice_store import VOICE_ID_REGEX, VoiceRecord

router = APIRouter(prefix="/voices", tags=["voices"])


def voice_info(record: VoiceRecord) -> VoiceInfo:
    created_at = datetime.fromtimestamp(record.created_at, tz=timezone.utc).replace(microsecond=0)
    return VoiceInfo(voice_id=record.voice_id, duration=record.duration_s, created_at=created_at)


@router.get(
    "",
    summary="List voices",
    description="Every registered voice, oldest first (from the voice store, shared by all replicas).",
    response_model=VoiceList,
    responses=error_responses(503),
)
async def list_voices(voices: Voices) -> VoiceList:
    return VoiceList(voices=[voice_info(r) for r in await voices.records()])


@router.post(
    "/register",
    summary="Register a voice",
    description="Upload a reference clip (WAV, FLAC, OGG or MP3, 5 s to `max_voice_seconds`); its speech-encoder "
    "outputs are stored and reused by every request in that voice. Without `voice_id` the id is derived "
    "from the clip's content, so registering the same file twice gives the same id. Registering an "
    "existing id replaces that voice.",
    response_model=VoiceRegistered,
    responses=error_responses(413, 422, 429, 503),
)
@route_facts(body=Body.UPLOAD)
async def register_voice(
    service: Service,
    voices: Voices,
    voice_file: UploadFile = File(description="reference clip, 5-30 s"),
    voice_id: str | None = Form(
        None, description="1-64 letters, digits, '-' or '_'", json_schema_extra={"pattern": VOICE_ID_REGEX}
    ),
) -> VoiceRegistered:
    data = await service.read_upload(voice_file)
    record = await voices.register(data, voice_id)
    return VoiceRegistered(
        voice_id=record.voice_id, message="Voice registered successfully", duration=record.duration_s
    )


@router.get(
    "/{voice_id}",
    summary="Describe a voice",
    description="The voice's reference length and registration time; 404 if it is not registered.",
    response_model=VoiceInfo,
    responses=error_responses(404, 503),
)
async def get_voice(voice_id: str, voices: Voices) -> VoiceInfo:
    return voice_info(await voices.record(voice_id))


@router.delete(
    "/{voice_id}",
    summary="Delete a voice",
    description="Removes the voice from disk and memory; requests naming it then get 404.",
    response_model=VoiceDeleted,
    responses=error_responses(404, 503),
)
async def delete_voice(voice_id: str, voices: Voices) -> VoiceDeleted:
    await voices.delete(voice_id)
    return VoiceDeleted(voice_id=voice_id, message="Voice deleted")
