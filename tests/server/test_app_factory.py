"""create_app with an injected engine, served by a real uvicorn on a free port (in-process)."""

import httpx
import pytest

from chatterbox_server.benchmark.server_process import serve_in_thread
from chatterbox_server.server import Settings, create_app
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server


def test_injected_engine_is_used_and_not_closed(model_dir, tmp_path, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="q8"))
    settings = Settings(voices_dir=tmp_path / "voices", warmup=False)
    with serve_in_thread(create_app(settings, engine)) as url:
        assert httpx.get(url + "/health").json()["dtype"] == "q8"
        with open(voice_a, "rb") as f:
            r = httpx.post(
                url + "/tts", data={"text": "Injected.", "stream": "false"}, files={"voice_file": f}, timeout=60
            )
        assert r.status_code == 200 and int(r.headers["X-Tokens-Generated"]) > 8
    # the app did not own the engine, so it is still usable
    assert engine.synthesize("Still here.", voice_a).stopped
