"""Steady loudness (TTS_TARGET_LUFS): each voice measured once, every response at its constant gain.

The voice service with the real tiny stand-in engine (measured at registration, stored in the
record, kept over a restart; older records and uploads measured on first use, once), then real
servers: normalised outputs land on the target, streamed and whole agree, and without the
setting the output is as spoken."""

import asyncio
import hashlib
import json
import math

import numpy as np
import pyloudnorm
import pytest
from pydantic import ValidationError

from chatterbox_server.audio import SAMPLE_RATE_HZ
from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.server.admission import Admission
from chatterbox_server.server.loudness import VoiceLoudness
from chatterbox_server.server.settings import Settings
from chatterbox_server.server.voice_service import VoiceService
from chatterbox_server.voice_store import LocalVoiceBackend, VoiceRecord, VoiceStore
from tests.support import decode_wav

MODEL = "tiny-stand-in@main:fp32"
TARGET = -16.0
# ≥ 3 s of tones in the tiny stand-in, in either test voice
TEXT = "The weather today is sunny with a light breeze, and tomorrow looks much the same."


def lufs(waveform: np.ndarray) -> float:
    return float(pyloudnorm.Meter(SAMPLE_RATE_HZ).integrated_loudness(np.asarray(waveform, dtype=np.float64)))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----- the voice service: where a voice's loudness comes from ----------------------------------------


def make_service(engine, executor, root, loudness: VoiceLoudness | None, model=MODEL) -> VoiceService:
    return VoiceService(
        VoiceStore(LocalVoiceBackend(root), model),
        engine,
        Admission(1, 4, 30.0, kind="encode"),
        executor,
        cache_size=8,
        max_voice_seconds=30.0,
        loudness=loudness,
    )


def test_registration_measures_the_voice_and_its_record_keeps_it(engine, executor, tmp_path, voice_a):
    async def scenario():
        loudness = VoiceLoudness(engine, TARGET, executor)
        service = make_service(engine, executor, tmp_path, loudness)
        await service.open()
        record = await service.register(voice_a.read_bytes(), "alice")
        assert loudness.calibrations == 1
        assert record.loudness_lufs is not None and -40 < record.loudness_lufs < 0
        meta = json.loads((tmp_path / "alice" / "meta.json").read_text())
        assert meta["loudness_lufs"] == record.loudness_lufs
        measured = await loudness.measure(await service.embedding("alice"))
        assert measured == pytest.approx(record.loudness_lufs, abs=1e-3)
        normalizer = await loudness.normalizer(await service.embedding("alice"))
        assert normalizer.gain_db == pytest.approx(TARGET - record.loudness_lufs, abs=1e-3)

        # a restart (or another replica on the same store) reads it from the record: no calibration
        restarted = VoiceLoudness(engine, TARGET, executor)
        reopened = make_service(engine, executor, tmp_path, restarted)
        await reopened.open()
        assert await restarted.measure(await reopened.embedding("alice")) == record.loudness_lufs
        assert restarted.calibrations == 0

        # measured by another model: not this engine's loudness, so measured again on first use
        other = VoiceLoudness(engine, TARGET, executor)
        elsewhere = make_service(engine, executor, tmp_path, other, model="another-model@main:fp32")
        await elsewhere.open()
        assert other.known(sha256(voice_a)) is None

    asyncio.run(scenario())


def test_an_older_voice_is_measured_on_first_use_once(engine, executor, tmp_path, voice_b):
    async def scenario():
        plain = make_service(engine, executor, tmp_path, None)  # TTS_TARGET_LUFS unset: nothing measured
        await plain.open()
        record = await plain.register(voice_b.read_bytes(), "bob")
        assert record.loudness_lufs is None
        assert "loudness_lufs" in json.loads((tmp_path / "bob" / "meta.json").read_text())

        loudness = VoiceLoudness(engine, TARGET, executor)
        service = make_service(engine, executor, tmp_path, loudness)
        await service.open()
        voice = await service.embedding("bob")
        assert loudness.known(voice.content_hash) is None
        # concurrent first uses share one calibration; a caller that goes away does not stop it
        leaver = asyncio.ensure_future(loudness.measure(voice))
        await asyncio.sleep(0)
        leaver.cancel()
        first, second = await asyncio.gather(loudness.measure(voice), loudness.measure(voice))
        assert first == second and math.isfinite(first)
        assert loudness.calibrations == 1
        assert await loudness.measure(voice) == first and loudness.calibrations == 1  # kept in memory
        # the record is not rewritten (the store's writers stay the registrations)
        assert (await service.record("bob")).loudness_lufs is None

    asyncio.run(scenario())


def test_an_upload_is_measured_once_per_clip(engine, executor, voice_a, tmp_path):
    async def scenario():
        loudness = VoiceLoudness(engine, TARGET, executor)
        service = make_service(engine, executor, tmp_path, loudness)
        await service.open()
        voice = await service.upload_embedding(voice_a.read_bytes())
        await loudness.normalizer(voice)
        await loudness.normalizer(await service.upload_embedding(voice_a.read_bytes()))
        assert loudness.calibrations == 1 and loudness.known(sha256(voice_a)) is not None

    asyncio.run(scenario())


# ----- real servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normalized_root(tmp_path_factory):
    return tmp_path_factory.mktemp("normalized")


@pytest.fixture(scope="module")
def normalized(model_dir, normalized_root, voice_a, voice_b):
    """A server with TTS_TARGET_LUFS=-16 and both test voices registered (each measured then)."""
    root = normalized_root
    with ServerProcess(model_dir, root / "voices", root / "server.log", target_lufs=TARGET) as running:
        running.register(voice_a, "voice-a")
        running.register(voice_b, "voice-b")
        yield running


def stored_lufs(root, voice_id: str) -> float:
    return json.loads((root / "voices" / voice_id / "meta.json").read_text())["loudness_lufs"]


def speak(server, voice_id: str, stream: bool, text: str = TEXT) -> np.ndarray:
    with server.client() as c:
        r = c.post("/tts", data={"text": text, "voice_id": voice_id, "stream": str(stream).lower()})
    assert r.status_code == 200, r.text
    return decode_wav(r.content)[0]


@pytest.mark.server
def test_whole_outputs_land_on_the_target(normalized, normalized_root):
    for voice_id in ("voice-a", "voice-b"):
        audio = speak(normalized, voice_id, stream=False)
        assert audio.shape[0] >= 3 * SAMPLE_RATE_HZ
        assert lufs(audio) == pytest.approx(TARGET, abs=1.0), voice_id
        assert np.max(np.abs(audio)) <= 10 ** (-1 / 20) + 1 / 32767  # the limiter's ceiling, -1 dBFS
        assert isinstance(stored_lufs(normalized_root, voice_id), float)


@pytest.mark.server
def test_streamed_and_whole_outputs_of_one_request_match(normalized):
    for voice_id in ("voice-a", "voice-b"):
        whole, streamed = speak(normalized, voice_id, stream=False), speak(normalized, voice_id, stream=True)
        assert streamed.shape == whole.shape
        assert lufs(streamed) == pytest.approx(lufs(whole), abs=0.2)
    # another route and format, streamed: the same gain
    with normalized.client() as c:
        r = c.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "input": TEXT, "voice": "voice-b", "response_format": "pcm"},
        )
    assert r.status_code == 200
    pcm = np.frombuffer(r.content, dtype="<i2").astype(np.float32) / 32767
    assert lufs(pcm) == pytest.approx(TARGET, abs=1.0)


@pytest.mark.server
def test_an_uploaded_clip_is_normalised_too(normalized, voice_b):
    with normalized.client() as c, open(voice_b, "rb") as f:
        r = c.post("/tts", data={"text": TEXT, "stream": "false"}, files={"voice_file": (voice_b.name, f)})
    assert r.status_code == 200, r.text
    assert lufs(decode_wav(r.content)[0]) == pytest.approx(TARGET, abs=1.0)


@pytest.mark.server
def test_without_the_setting_the_output_is_as_spoken(server, voice_ids, normalized, normalized_root):
    """The package's server has no TTS_TARGET_LUFS: its voices keep their own, different loudness
    (the tones of the stand-in are louder than -16, by several LU for voice b)."""
    plain = {name: lufs(speak(server, voice_id, stream=False)) for name, voice_id in voice_ids.items()}
    level = {name: lufs(speak(normalized, f"voice-{name}", stream=False)) for name in ("a", "b")}
    assert abs(plain["b"] - TARGET) > 3
    assert abs(plain["a"] - plain["b"]) > 2  # two voices, two levels without it ...
    assert abs(level["a"] - level["b"]) < 1  # ... one level with it
    # the gain the normalised server applied is exactly its measured loudness's distance to the target
    for name in ("a", "b"):
        # what the plain server speaks is what the calibration measured, give or take the text
        assert plain[name] == pytest.approx(stored_lufs(normalized_root, f"voice-{name}"), abs=0.5)


def test_the_setting_is_off_unless_given_and_bounded(monkeypatch):
    assert Settings().target_lufs is None
    monkeypatch.setenv("TTS_TARGET_LUFS", "-16")
    assert Settings().target_lufs == -16.0
    for wrong in ("-50", "0"):
        monkeypatch.setenv("TTS_TARGET_LUFS", wrong)
        with pytest.raises(ValidationError):
            Settings()


def test_records_without_a_usable_figure_read_as_unmeasured():
    base = {"voice_id": "v", "duration_s": 6.0, "created_at": 0.0, "content_hash": "ab", "model": MODEL}
    assert VoiceRecord.from_json(json.dumps(base)).loudness_lufs is None  # an older record
    for junk in ("loud", True, None, [1]):
        assert VoiceRecord.from_json(json.dumps({**base, "loudness_lufs": junk})).loudness_lufs is None
    assert (
        VoiceRecord.from_json(
            '{"voice_id": "v", "duration_s": 6, "created_at": 0, "content_hash": "ab", '
            '"model": "m", "loudness_lufs": -Infinity}'
        ).loudness_lufs
        is None
    )
    record = VoiceRecord.from_json(json.dumps({**base, "loudness_lufs": -23.5}))
    assert record.loudness_lufs == -23.5 and VoiceRecord.from_json(record.to_json()) == record
