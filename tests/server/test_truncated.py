"""The runaway guards over HTTP: `truncated` on /tts/json and tts_pieces_truncated_total on /metrics,
with a real server on a stand-in whose language model never stops (and on the normal one)."""

import pytest

from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.model.stand_in import make_stand_in_model
from tests.support import TEXT, metric_value

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def never_stop_model(tmp_path_factory):
    return make_stand_in_model(
        tmp_path_factory.mktemp("never-stop") / "model", "tiny", ("fp32",), behaviour="never_stop"
    )


def speak(client, **body) -> dict:
    r = client.post("/tts/json", json={"voice_id": "alice", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_runaway_is_reported_on_the_piece_and_the_response_and_counted(never_stop_model, voice_a, tmp_path):
    with ServerProcess(never_stop_model, tmp_path / "voices", tmp_path / "server.log", warmup="false") as server:
        server.register(voice_a, "alice")
        with server.client() as client:
            assert metric_value(client, "tts_pieces_truncated_total", reason="runaway") == 0
            body = speak(client, text="Hi there. How are you today?")
            pieces = body["pieces"]
            assert body["truncated"] == "runaway" and [p["truncated"] for p in pieces] == ["runaway"] * len(pieces)
            assert all(50 < p["tokens_generated"] < 1024 for p in pieces)  # each its own text's bound
            assert metric_value(client, "tts_pieces_truncated_total", reason="runaway") == len(pieces)
            # a request's own max_new_tokens below the bound: "length"
            body = speak(client, text="Hi.", max_new_tokens=20)
            piece = body["pieces"][0]
            assert (body["truncated"], piece["truncated"], body["tokens_generated"]) == ("length", "length", 20)
            assert metric_value(client, "tts_pieces_truncated_total", reason="length") == 1
        assert "stopped as a runaway: ran to its text's bound" in server.log()


def test_tts_runaway_guard_false_lets_it_run_to_max_new_tokens(never_stop_model, voice_a, tmp_path):
    settings = {"warmup": "false", "runaway_guard": "false", "max_new_tokens": 200}
    with ServerProcess(never_stop_model, tmp_path / "voices", tmp_path / "server.log", **settings) as server:
        server.register(voice_a, "alice")
        with server.client() as client:
            body = speak(client, text="Hi.")
            assert (body["truncated"], body["tokens_generated"]) == ("length", 200)
            assert metric_value(client, "tts_pieces_truncated_total", reason="runaway") == 0


def test_normal_speech_is_not_truncated(client, voice_ids):
    before = metric_value(client, "tts_pieces_truncated_total", reason="runaway")
    r = client.post("/tts/json", json={"text": TEXT, "voice_id": voice_ids["a"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["truncated"] is None and all(p["truncated"] is None for p in body["pieces"])
    assert metric_value(client, "tts_pieces_truncated_total", reason="runaway") == before
