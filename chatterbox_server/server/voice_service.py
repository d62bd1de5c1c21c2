"""Voices in one place: the store, the in-memory embedding cache, the prefix KV they invalidate,
and every (re-)encoding of a reference clip.

Every front end uses this one service: the HTTP routes, the realtime WebSocket session, and any
other socket server (it imports no web framework). Blocking work (store I/O, decoding, the speech
encoder) runs on the executor it is given, never on the event loop.

The cache holds encoder outputs by voice id (and uploaded clips by their content hash); an entry
is served only while the store's record still names the same clip. When a clip stops being in
use (re-registered, deleted, here or on another replica) its prefix KV is dropped from the engine
as well, with `engine.forget_voice(content_hash)`.

With a `VoiceLoudness` (TTS_TARGET_LUFS set), a registration also measures the voice's loudness
and stores it in the record; records that carry one hand it to `loudness` when they are read.
"""

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Protocol, TypeVar

import numpy as np

from chatterbox_server import audio
from chatterbox_server.engine import VoiceEmbedding
from chatterbox_server.errors import InvalidAudioError, VoiceNotFoundError
from chatterbox_server.server.admission import Admission
from chatterbox_server.server.loudness import VoiceLoudness
from chatterbox_server.voice_store import VoiceDataError, VoiceRecord, VoiceStore, validate_voice_id
from chatterbox_server.voice_store.cache import VoiceCache
from chatterbox_server.voice_store.records import sha256_hex

logger = logging.getLogger(__name__)

T = TypeVar("T")


class VoiceEncoder(Protocol):
    """What the service needs of the engine: the speech encoder, and dropping a clip's prefix KV."""

    def encode_audio(self, clip: np.ndarray, content_hash: str = "") -> VoiceEmbedding: ...

    def forget_voice(self, content_hash: str) -> bool: ...


class VoiceService:
    """Registered voices and uploaded clips: lookup, registration, deletion, start-up warm-up."""

    def __init__(
        self,
        store: VoiceStore,
        engine: VoiceEncoder,
        encodes: Admission,
        executor: Executor,
        *,
        cache_size: int,
        max_voice_seconds: float,
        max_sample_rate_hz: int = audio.DEFAULT_MAX_SAMPLE_RATE_HZ,
        aliases: Mapping[str, str] | None = None,
        loudness: VoiceLoudness | None = None,
    ):
        """`encodes` bounds the clips decoded and encoded at once (registrations and uploads);
        `max_sample_rate_hz`: a clip's highest sample rate, checked from its header before decoding;
        `aliases` maps names clients send (OpenAI's 'alloy') to registered voice ids; `loudness`:
        the voices' measured loudness, when responses are normalised (None: they are not)."""
        self.store = store
        self.cache = VoiceCache(cache_size)  # voice id (or an upload's content hash) → encoder outputs
        self.max_voice_seconds = max_voice_seconds
        self.max_sample_rate_hz = max_sample_rate_hz
        self.aliases = dict(aliases or {})
        self.loudness = loudness
        self._engine = engine
        self._encodes = encodes
        self._executor = executor

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ----- start-up -------------------------------------------------------------------------------

    async def open(self) -> list[VoiceRecord]:
        """Open the store; returns its voices, oldest first.

        A local store (this replica its only writer) also fills the cache, up to its size, and
        re-encodes and rewrites voices made by another model. A shared one loads each voice on
        first use, so a replica starts without downloading every voice and never rewrites what
        the others serve."""
        return await self._run(self._open)

    def _open(self) -> list[VoiceRecord]:
        records = self.store.open()
        logger.info("%d registered voices in %s", len(records), self.store.backend.location)
        for record in records:
            self._note_loudness(record)
        if self.store.shared:
            return records
        for record in records:
            voice = self.store.load_embedding(record)
            if voice is None:
                voice = self._rewrite(record)
            if voice is not None and len(self.cache) < self.cache.maxsize:
                self.cache.put(record.voice_id, voice)
        return records

    def _rewrite(self, record: VoiceRecord) -> VoiceEmbedding | None:
        """Blocking: encode a stored voice again (another model made its embedding, or it is
        damaged) and store the result; None, logged, when its source clip is unusable."""
        logger.info("re-encoding voice %r for %s", record.voice_id, self.store.model)
        try:
            source = self.store.source_audio(record)
            clip = self._decode(source)
        except (InvalidAudioError, VoiceDataError) as e:
            logger.warning("voice %r cannot be re-encoded: %s", record.voice_id, e)
            return None
        voice = self._engine.encode_audio(clip, record.content_hash)
        self.store.save(record.voice_id, source, voice)
        return voice

    # ----- which voices exist ---------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        """A configured alias (e.g. OpenAI's 'alloy') → its voice id; any other name as it is."""
        return self.aliases.get(name, name)

    async def record(self, voice_id: str) -> VoiceRecord:
        """The voice's record, revalidated against the store once it is older than the staleness
        bound; VoiceNotFoundError when it is not registered."""
        fresh, record = self.store.cached(voice_id)
        if not fresh:
            record = await self._run(self.store.get, voice_id)
        if record is None:
            cached = self.cache.get(voice_id)
            if cached is not None:  # deleted on another replica since it was cached here
                self._forget(voice_id, cached.content_hash)
            raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
        return record

    async def records(self) -> list[VoiceRecord]:
        """Every registered voice, oldest first."""
        return await self._run(self.store.records)

    async def names(self) -> list[str]:
        """Registered voice ids, then the aliases whose voice is registered."""
        return [name for name, _ in await self.named()]

    async def named(self) -> list[tuple[str, str]]:
        """(name, voice id): each registered voice as itself, then each alias whose voice is registered."""
        registered = [r.voice_id for r in await self.records()]
        present = set(registered)
        aliased = [(name, target) for name, target in self.aliases.items() if target in present]
        return [(voice_id, voice_id) for voice_id in registered] + aliased

    # ----- a voice's encoder outputs --------------------------------------------------------------

    async def embedding(self, voice_id: str) -> VoiceEmbedding:
        """The registered voice's encoder outputs: from the cache while the store's record still
        names the same clip, else read from the store (or encoded again for another model)."""
        record = await self.record(voice_id)
        self._note_loudness(record)
        voice = self.cache.get(voice_id)
        if voice is not None and voice.content_hash == record.content_hash:
            return voice
        if voice is not None:  # re-registered on another replica since it was cached
            self._forget(voice_id, voice.content_hash)
        voice = await self._run(self._load, record)
        self.cache.put(voice_id, voice)
        return voice

    def _load(self, record: VoiceRecord) -> VoiceEmbedding:
        """Blocking: the stored embedding, or the source clip encoded again when another model made it."""
        store = self.store
        voice = store.load_embedding(record)
        if voice is None and store.shared:
            # the cached record may be older than a re-registration elsewhere, whose data replaced it
            current = store.refresh(record.voice_id)
            if current is None:
                raise VoiceNotFoundError(f"voice {record.voice_id!r} is not registered")
            if current.version != record.version:
                record, voice = current, store.load_embedding(current)
        if voice is not None:
            return voice
        try:
            clip = self._decode(store.source_audio(record))
        except (VoiceDataError, InvalidAudioError) as e:
            logger.warning("voice %r cannot be loaded: %s", record.voice_id, e)
            raise VoiceNotFoundError(f"voice {record.voice_id!r} has no usable stored data") from None
        # a shared store's embedding is never rewritten here: other replicas may serve another model
        logger.info("encoding voice %r again for %s", record.voice_id, store.model)
        return self._engine.encode_audio(clip, record.content_hash)

    async def upload_embedding(self, data: bytes) -> VoiceEmbedding:
        """An uploaded reference clip's encoder outputs, cached by its content hash, so a clip sent
        again is not encoded again. InvalidAudioError for a clip that cannot be used."""
        # the lookup takes an encode slot too: every upload is admitted as an encode, cached or not
        async with self._encodes.slot():
            return await self._run(self._encode_upload, data)

    def _encode_upload(self, data: bytes) -> VoiceEmbedding:
        content_hash = sha256_hex(data)
        voice = self.cache.get(content_hash)
        # the hash could also be a registered voice's id: serve only what this clip encodes to
        if voice is not None and voice.content_hash == content_hash:
            return voice
        voice = self._engine.encode_audio(self._decode(data), content_hash)
        self.cache.put(content_hash, voice)
        return voice

    def _decode(self, data: bytes) -> np.ndarray:
        """Blocking: a reference clip's bytes → mono float32 at 24 kHz, length- and rate-checked."""
        return audio.prepare_reference_audio(
            data, max_seconds=self.max_voice_seconds, max_sample_rate_hz=self.max_sample_rate_hz
        )

    # ----- registering and deleting ---------------------------------------------------------------

    async def register(self, data: bytes, voice_id: str | None = None) -> VoiceRecord:
        """Decode, encode and persist a reference clip; the id defaults to its content hash.

        Registering an existing id replaces that voice; the prefix KV of the clip it replaces is
        dropped."""
        if voice_id is not None:
            validate_voice_id(voice_id)
        async with self._encodes.slot():  # decoding and encoding are the expensive part: bounded
            clip, content_hash = await self._run(lambda: (self._decode(data), sha256_hex(data)))
            voice = await self._run(self._engine.encode_audio, clip, content_hash)
            # speaks the calibration text in the voice: part of registering, so bounded with it
            lufs = await self.loudness.measure(voice) if self.loudness is not None else None
        voice_id = voice_id or content_hash[:16]
        previous = self.cache.get(voice_id)
        stored_lufs = lufs if lufs is not None and math.isfinite(lufs) else None
        record = await self._run(self.store.save, voice_id, data, voice, stored_lufs)
        self.cache.put(voice_id, voice)
        if previous is not None and previous.content_hash != content_hash:
            self._engine.forget_voice(previous.content_hash)  # its prefix KV is stale now
        return record

    async def delete(self, voice_id: str) -> None:
        """Remove the voice from the store, the cache and the prefix KV; VoiceNotFoundError if absent."""
        cached = self.cache.get(voice_id)
        record = await self.record(voice_id)
        if not await self._run(self.store.delete, voice_id):
            raise VoiceNotFoundError(f"voice {voice_id!r} is not registered")
        self._forget(voice_id, record.content_hash)
        if cached is not None and cached.content_hash != record.content_hash:
            self._engine.forget_voice(cached.content_hash)  # cached from a version replaced elsewhere

    def _note_loudness(self, record: VoiceRecord) -> None:
        """A record's stored loudness, made by this model, is this voice's: no calibration needed."""
        if self.loudness is not None and record.loudness_lufs is not None and record.model == self.store.model:
            self.loudness.remember(record.content_hash, record.loudness_lufs)

    def _forget(self, voice_id: str, content_hash: str) -> None:
        """Drop a voice's cached encoder outputs and its clip's prefix KV."""
        self.cache.remove(voice_id)
        self._engine.forget_voice(content_hash)
