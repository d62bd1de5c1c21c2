"""The text clean-up on every speaking surface of a real server (`python server.py`, the stand-in):
/tts/json shows the text as spoken, the realtime socket and /v1/audio/speech speak it cleaned,
a pause mark is silence, and a text the clean-up empties is refused before any audio."""

import json
import subprocess
import sys

import httpx
import pytest
from websockets.sync.client import connect

from chatterbox_server.benchmark.server_process import REPO, ServerProcess

pytestmark = pytest.mark.server

RECV_TIMEOUT_S = 60.0
LLM_REPLY = '## Sure!\n**Hi** there "friend" (laughs) 😀, see https://www.example.com/docs and ask nginx.'
SPOKEN = "Sure! Hi there friend [laugh], see example.com and ask engine x."


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory, voice_a):
    root = tmp_path_factory.mktemp("cleanup")
    lexicon = root / "lexicon.txt"
    lexicon.write_text("# this deployment's words\nnginx = engine x\n", encoding="utf-8")
    with ServerProcess(model_dir, root / "voices", root / "server.log", warmup="false", lexicon_path=lexicon) as s:
        s.register(voice_a, "v")
        yield s


def test_tts_json_shows_the_text_as_spoken(server):
    with server.client() as client:
        r = client.post("/tts/json", json={"text": LLM_REPLY, "voice_id": "v", "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["normalized_text"] == SPOKEN
    for piece in body["pieces"]:
        assert SPOKEN[piece["text_start"] : piece["text_end"]] == piece["text"]
        assert piece["pause_after"] == 0


def test_tts_json_pieces_carry_their_pause(server):
    text = "First part of it. [pause:0.75s] Then the second part."
    with server.client() as client:
        body = client.post("/tts/json", json={"text": text, "voice_id": "v"}).json()
    assert body["normalized_text"] == "First part of it. Then the second part."
    first, second = body["pieces"]
    assert first["pause_after"] == 0.75 and second["pause_after"] == 0
    assert second["audio_start"] == pytest.approx(first["audio_end"], abs=1e-3)
    assert body["audio_duration"] == pytest.approx(second["audio_end"], abs=1e-3)


def test_a_text_cleanup_empties_is_refused(server):
    with server.client() as client:
        r = client.post("/tts/json", json={"text": "😀🎉👍", "voice_id": "v"})
        assert r.status_code == 422
        assert "cleaned up" in r.text
        body = {"model": "tts-1", "input": "[pause:1s] 🎉", "voice": "v"}
        r = client.post("/v1/audio/speech", json=body)
        assert r.status_code in (400, 422) and "cleaned up" in r.json()["error"]["message"]


def test_openai_speech_speaks_the_cleaned_text(server):
    body = {"model": "tts-1", "input": LLM_REPLY, "voice": "v", "response_format": "pcm"}
    body |= {"stream_format": "sse", "include_timestamps": True}
    with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [json.loads(line[len("data: ") :]) for line in r.iter_lines() if line.startswith("data: ")]
    timings = [e for e in events if e["type"] == "speech.audio.timestamps"]
    assert "".join(c for e in timings for c in e["alignment"]["characters"]) == SPOKEN


def test_the_realtime_socket_speaks_the_cleaned_text(server):
    url = server.url.replace("http://", "ws://") + "/v1/audio/speech/realtime"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "config", "voice": "v", "timestamps": True}))
        assert json.loads(ws.recv(timeout=RECV_TIMEOUT_S))["type"] == "ready"
        for delta in ["**Well** (sighs) ", "that's *fine*. ", "🎉🎉 ", "\n"]:
            ws.send(json.dumps({"type": "text", "delta": delta}))
        ws.send(json.dumps({"type": "close"}))
        events = []
        while not events or events[-1]["type"] != "done":
            frame = ws.recv(timeout=RECV_TIMEOUT_S)
            if isinstance(frame, str):
                events.append(json.loads(frame))
    spoken = "".join(c for e in events if e["type"] == "segment.timestamps" for c in e["alignment"]["characters"])
    assert spoken == "Well [sigh] that's fine."
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and "cleaned up" in errors[0]["error"]["message"]  # the emoji-only segment


def test_a_bad_lexicon_line_stops_the_server_with_one_line(model_dir, tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("SQL = sequel\nnginx engine x\n", encoding="utf-8")
    command = [sys.executable, str(REPO / "server.py"), "--model-dir", str(model_dir), "--model-dtype", "fp32"]
    proc = subprocess.run(
        [*command, "--lexicon-path", str(lexicon), "--port", "1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "cannot start" in proc.stderr and "lexicon.txt line 2" in proc.stderr and "--lexicon-path" in proc.stderr
    assert "Traceback" not in proc.stderr
