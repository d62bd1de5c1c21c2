"""A text that could not be spoken within the request deadline is refused at once (413), at the
engine's measured costs, instead of holding a slot until a 504 (engine/cost.py)."""

import re

from chatterbox_server.benchmark.server_process import ServerProcess

SENTENCE = "This sentence is one of many in a reply far too long for the deadline."


def test_a_text_that_cannot_finish_in_time_is_refused_at_once(model_dir, tmp_path, voice_a):
    with ServerProcess(model_dir, tmp_path / "voices", tmp_path / "log", request_timeout_s=4) as srv:
        srv.register(voice_a, "alice")
        with srv.client() as client:
            short = client.post("/tts/json", json={"text": "Hello there.", "voice_id": "alice"})
            assert short.status_code == 200  # the warm-up and this measured the engine
            too_long = " ".join([SENTENCE] * 60)
            for route, body in (
                ("/tts/json", {"text": too_long, "voice_id": "alice"}),
                ("/tts/json", {"text": too_long, "voice_id": "alice", "max_new_tokens": 5}),
                ("/v1/audio/speech", {"model": "tts-1", "input": too_long, "voice": "alice"}),
            ):
                r = client.post(route, json=body)
                assert r.status_code == 413, (route, r.status_code, r.text[:200])
                error = r.json()["error"]
                assert "more than the request timeout of 4 s" in error["message"]
            streamed = client.post("/tts", data={"text": too_long, "voice_id": "alice"})
            assert streamed.status_code == 413
            # what fits is still spoken (about 0.5 s of work here: far inside the deadline, even on a busy machine)
            assert client.post("/tts/json", json={"text": "Hello again.", "voice_id": "alice"}).status_code == 200
            metrics = client.get("/metrics").text
        assert 'tts_requests_rejected_total{reason="would_time_out"} 4.0' in metrics
        # the status field of the access lines ("POST /tts 413 0.013s"), not any "504" in a request id
        statuses = re.findall(r" (?:GET|POST) \S+ (\d{3}) ", srv.log())
        assert statuses and "504" not in statuses
