"""create_app with an injected engine, served by a real uvicorn on a free port (in-process)."""

import threading
import time

import httpx
import pytest
import uvicorn

from chatterbox_server.server import Settings, create_app
from tests.server_process import free_port
from tts_engine import TTSConfig, TTSEngine

pytestmark = pytest.mark.server


def test_injected_engine_is_used_and_not_closed(model_dir, tmp_path, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="q8"))
    settings = Settings(voices_dir=tmp_path / "voices", warmup=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(url + "/health").json()["dtype"] == "q8"
        with open(voice_a, "rb") as f:
            r = httpx.post(
                url + "/tts", data={"text": "Injected.", "stream": "false"}, files={"voice_file": f}, timeout=60
            )
        assert r.status_code == 200 and int(r.headers["X-Tokens-Generated"]) > 8
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    # the app did not own the engine, so it is still usable
    assert engine.synthesize("Still here.", voice_a).stopped
