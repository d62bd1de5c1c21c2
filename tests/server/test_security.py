"""API keys, CORS and what /health reveals, against a real server process."""

import hashlib

import pytest
from openai import AuthenticationError, OpenAI

from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.server.auth import ApiKeys, exposure_warning

pytestmark = pytest.mark.server

PLAIN_KEY = "key-for-the-bench"
HASHED_KEY = "key-only-its-hash-is-configured"
ORIGIN = "https://studio.example"


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("keyed")
    keys = f"{PLAIN_KEY}, sha256:{hashlib.sha256(HASHED_KEY.encode()).hexdigest()}"
    with ServerProcess(
        model_dir, root / "voices", root / "server.log", warmup="false", api_keys=keys, cors_origins=ORIGIN
    ) as running:
        yield running


def keyed(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_required_and_refused_in_our_error_shape(server):
    with server.client() as c:
        for headers in ({}, keyed("wrong"), {"Authorization": PLAIN_KEY}, {"Authorization": "Basic abc"}):
            r = c.get("/voices", headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["type"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/tts/json", json={"text": "Hi.", "voice_id": "x"}).status_code == 401
        assert c.get("/voices", headers=keyed(PLAIN_KEY)).status_code == 200
        assert c.get("/voices", headers=keyed(HASHED_KEY)).status_code == 200  # configured as sha256:


def test_probes_metrics_and_docs_stay_open(server):
    with server.client() as c:
        for path in ("/health/live", "/health/ready", "/health", "/metrics", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 200, path


def test_health_shows_paths_only_to_a_keyed_client(server, model_dir):
    with server.client() as c:
        anonymous = c.get("/health").json()
        assert "model_dir" not in anonymous and str(model_dir) not in str(anonymous)
        assert c.get("/health", headers=keyed(PLAIN_KEY)).json()["model_dir"] == str(model_dir)


def test_openai_clients_send_their_api_key(server, voice_a):
    with server.client() as c, open(voice_a, "rb") as f:
        r = c.post("/voices/register", files={"voice_file": f}, data={"voice_id": "alloy"}, headers=keyed(PLAIN_KEY))
        assert r.status_code == 200
    good = OpenAI(base_url=server.url + "/v1", api_key=PLAIN_KEY)
    audio = good.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format="wav")
    assert audio.content[:4] == b"RIFF"
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=server.url + "/v1", api_key="sk-wrong").audio.speech.create(
            model="tts-1", voice="alloy", input="Hello there."
        )


def test_openai_routes_refuse_in_openais_error_shape(server):
    with server.client() as c:
        for r in (
            c.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy"}),
            c.get("/v1/models", headers=keyed("wrong")),
            c.get("/v1/audio/voices"),
        ):
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            error = r.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, "unauthorized")
        assert set(c.get("/voices").json()["error"]) == {"type", "message"}  # ours elsewhere
    with pytest.raises(AuthenticationError) as refused:
        OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert refused.value.code == "unauthorized"


def test_cors_allows_only_the_configured_origin(server):
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with server.client() as c:
        allowed = c.options("/tts/json", headers={"Origin": ORIGIN, **preflight})
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
        other = c.options("/tts/json", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        # a browser reading an error (401) from the allowed origin can see it
        denied = c.get("/voices", headers={"Origin": ORIGIN})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN


def test_openapi_documents_the_bearer_scheme_and_401(server):
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in spec["paths"]["/tts"]["post"]["responses"]
    assert spec["paths"]["/tts"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/health/live"]["get"]
    for path, shape in (("/tts", "ErrorResponse"), ("/v1/audio/speech", "OpenAIErrorResponse")):
        unauthorized = spec["paths"][path]["post"]["responses"]["401"]
        assert unauthorized["content"]["application/json"]["schema"]["$ref"].endswith("/" + shape), path


def test_metrics_can_require_a_key(model_dir, tmp_path):
    with (
        ServerProcess(
            model_dir,
            tmp_path / "voices",
            tmp_path / "log",
            warmup="false",
            api_keys=PLAIN_KEY,
            metrics_require_key="true",
        ) as server,
        server.client() as c,
    ):
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=keyed(PLAIN_KEY)).status_code == 200
        assert c.get("/health/ready").status_code == 200


def test_key_parsing_and_the_exposure_warning():
    keys = ApiKeys(f"a, b ,sha256:{hashlib.sha256(b'c').hexdigest()},")
    assert len(keys) == 3 and all(keys.accepts(k) for k in "abc") and not keys.accepts("d")
    assert not keys.accepts(None) and not keys.accepts("")
    with pytest.raises(ValueError, match="64 hex digits"):
        ApiKeys("sha256:nothex")
    assert exposure_warning("0.0.0.0", ApiKeys("")) is not None
    assert exposure_warning("127.0.0.1", ApiKeys("")) is None and exposure_warning("::1", ApiKeys("")) is None
    assert exposure_warning("0.0.0.0", keys) is None
