"""Voice registration, listing, deletion and persistence over HTTP (a real server on the tiny stand-in)."""

import io
import json
import shutil
from datetime import datetime

import pytest
import soundfile as sf

from chatterbox_server.benchmark.server_process import ServerProcess
from tests.clips import make_clip
from tests.support import (
    TEXT,
    assert_error,
    metric_value,
)

pytestmark = pytest.mark.server


def test_voice_listing_get_and_delete(client, voice_a):
    with open(voice_a, "rb") as f:
        r = client.post("/voices/register", files={"voice_file": ("v.wav", f)}, data={"voice_id": "to_delete"})
    assert r.status_code == 200
    listed = {v["voice_id"]: v for v in client.get("/voices").json()["voices"]}
    assert listed["to_delete"]["duration"] == pytest.approx(6.0)
    assert datetime.fromisoformat(listed["to_delete"]["created_at"]).timestamp() > 0
    assert client.get("/voices/to_delete").json()["voice_id"] == "to_delete"
    assert client.delete("/voices/to_delete").status_code == 200
    assert_error(client.get("/voices/to_delete"), 404, "voice_not_found")
    assert_error(client.delete("/voices/to_delete"), 404)
    assert_error(client.post("/tts", data={"text": TEXT, "voice_id": "to_delete"}), 404)


@pytest.mark.parametrize("bad_id", ["has space", "x" * 65, "dots.not.allowed", "ünï"])
def test_register_rejects_bad_voice_ids(client, voice_a, bad_id):
    before = client.get("/voices").json()
    with open(voice_a, "rb") as f:
        r = client.post("/voices/register", files={"voice_file": ("v.wav", f)}, data={"voice_id": bad_id})
    assert_error(r, 422, "invalid_input")
    assert client.get("/voices").json() == before


def test_register_rejects_bad_audio_with_reason(client, tmp_path):
    before = client.get("/voices").json()
    short = io.BytesIO()
    sf.write(short, make_clip(2.0, 24_000, 150.0, seed=1), 24_000, format="WAV")
    cases = [(short.getvalue(), "at least 5 s"), (b"not audio at all" * 50, "cannot decode"), (b"", "empty")]
    for data, reason in cases:
        r = client.post("/voices/register", files={"voice_file": ("v.wav", data)}, data={"voice_id": "bad"})
        assert reason in assert_error(r, 422, "invalid_audio")["message"]
    assert client.get("/voices").json() == before


@pytest.mark.slow
def test_voices_persist_across_restart_and_torn_writes_are_ignored(model_dir, tmp_path, voice_a, voice_b):
    voices = tmp_path / "voices"
    with ServerProcess(model_dir, voices, tmp_path / "log1") as server, server.client() as c:
        for vid, path in (("keep", voice_a), ("other", voice_b)):
            with open(path, "rb") as f:
                assert (
                    c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": vid}).status_code
                    == 200
                )
        before = c.post("/tts", data={"text": TEXT, "voice_id": "keep", "stream": "false"})
    # a torn write: files without their meta.json, and a meta whose source was cut short
    torn = voices / "torn"
    shutil.copytree(voices / "keep", torn)
    (torn / "meta.json").unlink()
    cut = voices / "cut"
    shutil.copytree(voices / "other", cut)
    meta = json.loads((cut / "meta.json").read_text())
    (cut / "meta.json").write_text(json.dumps({**meta, "voice_id": "cut"}))
    (cut / "source.audio").write_bytes((cut / "source.audio").read_bytes()[:1000])
    # a voice encoded by another model must be re-encoded, not reused
    meta = json.loads((voices / "other" / "meta.json").read_text())
    (voices / "other" / "meta.json").write_text(json.dumps({**meta, "model": "some-other-model:q4"}))

    with ServerProcess(model_dir, voices, tmp_path / "log2") as server, server.client() as c:
        listed = sorted(v["voice_id"] for v in c.get("/voices").json()["voices"])
        assert listed == ["keep", "other"]
        after = c.post("/tts", data={"text": TEXT, "voice_id": "keep", "stream": "false"})
        assert after.status_code == 200
        assert after.headers["X-Tokens-Generated"] == before.headers["X-Tokens-Generated"]
        assert c.post("/tts", data={"text": TEXT, "voice_id": "other"}).status_code == 200
        assert "some-other-model" not in (voices / "other" / "meta.json").read_text()
        assert_error(c.post("/tts", data={"text": TEXT, "voice_id": "torn"}), 404)
        assert "torn" in server.log() and "cut" in server.log()


@pytest.mark.slow
def test_evicted_voice_reloads_from_disk(model_dir, tmp_path, voice_a, voice_b):
    with (
        ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", voice_cache_size=1, warmup="false") as server,
        server.client() as c,
    ):
        for vid, path in (("first", voice_a), ("second", voice_b)):
            with open(path, "rb") as f:
                assert (
                    c.post("/voices/register", files={"voice_file": ("v", f)}, data={"voice_id": vid}).status_code
                    == 200
                )
        assert metric_value(c, "tts_voice_cache_evictions_total") >= 1
        assert c.post("/tts", data={"text": TEXT, "voice_id": "first"}).status_code == 200
        assert c.post("/tts", data={"text": TEXT, "voice_id": "second"}).status_code == 200
        assert metric_value(c, "tts_voice_cache_size") == 1
        assert c.get("/health").json()["voices_registered"] == 2
