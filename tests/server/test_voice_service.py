"""VoiceService driven directly (no HTTP): the real tiny stand-in engine and a real local store.

Registration, replacement, deletion, start-up warm-up and uploads, and what each does to the
embedding cache, the store and the engine's prefix KV."""

import asyncio
import hashlib

import numpy as np
import pytest

from chatterbox_server.audio import prepare_reference_audio
from chatterbox_server.engine import GenerationOptions, TTSEngine, VoiceEmbedding
from chatterbox_server.errors import InvalidAudioError, VoiceNotFoundError
from chatterbox_server.server.admission import Admission
from chatterbox_server.server.voice_service import VoiceService
from chatterbox_server.voice_store import LocalVoiceBackend, VoiceStore

MODEL = "tiny-stand-in@main:fp32"  # the identity the service's store expects of an embedding
OTHER_MODEL = "another-model@main:fp32"
MAX_VOICE_SECONDS = 30.0


class CountingEncoder:
    """The real engine, recording the content hash of every clip it encodes."""

    def __init__(self, engine: TTSEngine):
        self.engine = engine
        self.encoded: list[str] = []

    def encode_audio(self, clip: np.ndarray, content_hash: str = "") -> VoiceEmbedding:
        self.encoded.append(content_hash)
        return self.engine.encode_audio(clip, content_hash)

    def forget_voice(self, content_hash: str) -> bool:
        return self.engine.forget_voice(content_hash)


@pytest.fixture
def encoder(engine) -> CountingEncoder:
    return CountingEncoder(engine)


def make_service(encoder, executor, root, model=MODEL, cache_size=8, revalidate_s=0.0) -> VoiceService:
    """A service over the local store in `root` (built on the running loop: Admission's primitives)."""
    store = VoiceStore(LocalVoiceBackend(root), model, revalidate_s=revalidate_s)
    return VoiceService(
        store,
        encoder,
        Admission(1, 4, 30.0, kind="encode"),
        executor,
        cache_size=cache_size,
        max_voice_seconds=MAX_VOICE_SECONDS,
    )


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def speak(engine: TTSEngine, voice: VoiceEmbedding) -> None:
    """A few tokens in the voice: its conditioning's prefix KV is now cached under its clip's hash."""
    engine.synthesize("Hi.", voice, GenerationOptions(max_new_tokens=4))
    assert voice.content_hash in engine.prefix_cache


def encode_elsewhere(engine: TTSEngine, path) -> VoiceEmbedding:
    """The clip encoded the way another replica would (without this service)."""
    data = path.read_bytes()
    clip = prepare_reference_audio(data, max_seconds=MAX_VOICE_SECONDS)
    return engine.encode_audio(clip, hashlib.sha256(data).hexdigest())


def test_registration_caches_and_persists(encoder, executor, tmp_path, voice_a, voice_b):
    async def scenario():
        service = make_service(encoder, executor, tmp_path)
        await service.open()
        record = await service.register(voice_a.read_bytes(), "alice")
        assert (record.voice_id, record.content_hash, record.model) == ("alice", sha256(voice_a), MODEL)
        assert record.duration_s == pytest.approx(6.0)
        assert encoder.encoded == [sha256(voice_a)]
        cached = service.cache.get("alice")
        assert cached is not None and await service.embedding("alice") is cached  # no store read, no encode
        # without an id, the id is derived from the content
        unnamed = await service.register(voice_b.read_bytes())
        assert unnamed.voice_id == sha256(voice_b)[:16]
        assert [r.voice_id for r in await service.records()] == ["alice", unnamed.voice_id]

        # persisted: a service opened later on the same folder serves both without encoding
        encoder.encoded.clear()
        reopened = make_service(encoder, executor, tmp_path)
        assert [r.voice_id for r in await reopened.open()] == ["alice", unnamed.voice_id]
        stored = await reopened.embedding("alice")
        assert encoder.encoded == []
        assert stored.content_hash == sha256(voice_a)
        np.testing.assert_array_equal(stored.audio_features, cached.audio_features)
        np.testing.assert_array_equal(stored.audio_tokens, cached.audio_tokens)

    asyncio.run(scenario())


def test_re_registration_drops_the_old_prefix_kv(engine, encoder, executor, tmp_path, voice_a, voice_b):
    async def scenario():
        service = make_service(encoder, executor, tmp_path)
        await service.open()
        await service.register(voice_a.read_bytes(), "alice")
        speak(engine, await service.embedding("alice"))
        record = await service.register(voice_b.read_bytes(), "alice")
        assert sha256(voice_a) not in engine.prefix_cache
        assert record.content_hash == sha256(voice_b)
        assert (await service.embedding("alice")).content_hash == sha256(voice_b)
        assert (await service.record("alice")).duration_s == pytest.approx(7.5)

    asyncio.run(scenario())


def test_deletion_forgets_cache_and_prefix_kv(engine, encoder, executor, tmp_path, voice_a):
    async def scenario():
        service = make_service(encoder, executor, tmp_path)
        await service.open()
        await service.register(voice_a.read_bytes(), "alice")
        speak(engine, await service.embedding("alice"))
        await service.delete("alice")
        assert "alice" not in service.cache
        assert sha256(voice_a) not in engine.prefix_cache
        for lookup in (service.record, service.embedding, service.delete):
            with pytest.raises(VoiceNotFoundError, match="is not registered"):
                await lookup("alice")
        assert await service.records() == []
        assert await make_service(encoder, executor, tmp_path).open() == []

    asyncio.run(scenario())


def test_a_voice_replaced_or_deleted_by_another_writer_is_followed(
    engine, encoder, executor, tmp_path, voice_a, voice_b
):
    """Another replica's writes reach this service at the next revalidation (at once here): the
    clip it replaced or deleted leaves the cache and the prefix KV."""

    async def scenario():
        service = make_service(encoder, executor, tmp_path)
        await service.open()
        await service.register(voice_a.read_bytes(), "alice")
        speak(engine, await service.embedding("alice"))
        elsewhere = VoiceStore(LocalVoiceBackend(tmp_path), MODEL)
        elsewhere.save("alice", voice_b.read_bytes(), encode_elsewhere(engine, voice_b))
        encoder.encoded.clear()
        assert (await service.embedding("alice")).content_hash == sha256(voice_b)
        assert encoder.encoded == []  # read from the store, not encoded again
        assert sha256(voice_a) not in engine.prefix_cache

        speak(engine, await service.embedding("alice"))
        assert elsewhere.delete("alice")
        with pytest.raises(VoiceNotFoundError):
            await service.embedding("alice")
        assert "alice" not in service.cache
        assert sha256(voice_b) not in engine.prefix_cache

    asyncio.run(scenario())


def test_warm_up_re_encodes_a_voice_made_by_another_model(encoder, executor, tmp_path, voice_a):
    async def scenario():
        before = make_service(encoder, executor, tmp_path, model=OTHER_MODEL)
        await before.open()
        await before.register(voice_a.read_bytes(), "alice")
        assert (await before.record("alice")).model == OTHER_MODEL

        encoder.encoded.clear()
        service = make_service(encoder, executor, tmp_path)
        await service.open()
        assert encoder.encoded == [sha256(voice_a)]  # encoded again from its stored source
        assert "alice" in service.cache
        record = await service.record("alice")
        assert (record.model, record.content_hash) == (MODEL, sha256(voice_a))  # and rewritten

        encoder.encoded.clear()
        again = make_service(encoder, executor, tmp_path)
        await again.open()
        assert encoder.encoded == []  # the rewritten embedding is this model's now
        assert (await again.embedding("alice")).content_hash == sha256(voice_a)

    asyncio.run(scenario())


def test_warm_up_fills_the_cache_up_to_its_size(encoder, executor, tmp_path, voice_a, voice_b):
    async def scenario():
        writer = make_service(encoder, executor, tmp_path)
        await writer.open()
        for voice_id, clip in (("a", voice_a), ("b", voice_b), ("c", voice_a)):
            await writer.register(clip.read_bytes(), voice_id)

        encoder.encoded.clear()
        service = make_service(encoder, executor, tmp_path, cache_size=2)
        assert len(await service.open()) == 3
        assert len(service.cache) == 2 and service.cache.stats.evictions == 0
        (left_out,) = {"a", "b", "c"} - set(service.cache.ids())
        assert (await service.embedding(left_out)).content_hash == (await service.record(left_out)).content_hash
        assert encoder.encoded == []  # every embedding came from the store

    asyncio.run(scenario())


def test_an_uploaded_clip_is_encoded_once(encoder, executor, tmp_path, voice_a):
    async def scenario():
        service = make_service(encoder, executor, tmp_path)
        await service.open()
        data = voice_a.read_bytes()
        first = await service.upload_embedding(data)
        second = await service.upload_embedding(data)
        assert second is first
        assert encoder.encoded == [sha256(voice_a)]
        assert first.content_hash == sha256(voice_a) and service.cache.get(sha256(voice_a)) is first
        assert await service.records() == []  # an upload registers nothing
        with pytest.raises(InvalidAudioError):
            await service.upload_embedding(b"RIFF....WAVEfmt garbage" * 10)

    asyncio.run(scenario())


def test_aliases_resolve_and_name_registered_voices_only(encoder, executor, tmp_path, voice_a):
    async def scenario():
        store = VoiceStore(LocalVoiceBackend(tmp_path), MODEL)
        service = VoiceService(
            store,
            encoder,
            Admission(1, 4, 30.0, kind="encode"),
            executor,
            cache_size=4,
            max_voice_seconds=MAX_VOICE_SECONDS,
            aliases={"alloy": "alice", "echo": "bob"},
        )
        await service.open()
        await service.register(voice_a.read_bytes(), "alice")
        assert [service.resolve(name) for name in ("alloy", "echo", "carol")] == ["alice", "bob", "carol"]
        assert await service.names() == ["alice", "alloy"]

    asyncio.run(scenario())
