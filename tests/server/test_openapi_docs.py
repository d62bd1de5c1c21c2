"""The API documents itself truthfully, and its docs pages work without internet."""

import re
from urllib.parse import urljoin, urlparse

import pytest

from chatterbox_server.audio.formats import available_formats
from chatterbox_server.benchmark.server_process import ServerProcess

pytestmark = pytest.mark.server

SYNTHESIS_STATUSES = {"404", "413", "422", "429", "503", "504"}
OPENAI_PATHS = {"/v1/audio/speech", "/v1/models", "/v1/audio/voices"}  # errors in OpenAI's shape


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    with ServerProcess(model_dir, root / "voices", root / "server.log", warmup="false") as running:
        yield running


@pytest.fixture(scope="module")
def spec(server):
    with server.client() as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_this_server(server, page):
    with server.client() as c:
        html = c.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
        assert any(u.endswith(".js") for u in urls), urls
        for url in urls:
            absolute = urljoin(server.url + page, url)
            assert urlparse(absolute).netloc == urlparse(server.url).netloc, f"{page} loads {url} from off-host"
            if not url.endswith("openapi.json"):
                assert c.get(absolute).status_code == 200, url
        assert "cdn." not in html.text and "fonts.googleapis" not in html.text


def test_every_route_has_a_summary_and_description(spec):
    for name, operation in operations(spec):
        assert operation.get("summary"), name
        assert operation.get("description"), name


def test_errors_are_documented_in_our_one_shape(spec):
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["ErrorResponse"]["properties"]) == {"error"}
    assert set(schemas["OpenAIErrorResponse"]["properties"]) == {"error"}
    assert set(schemas["OpenAIErrorDetail"]["properties"]) == {"message", "type", "param", "code"}
    for name, operation in operations(spec):
        shape = "/OpenAIErrorResponse" if name.split(" ", 1)[1] in OPENAI_PATHS else "/ErrorResponse"
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and name not in ("GET /health", "GET /health/ready"):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith(shape), (name, status)
    paths = spec["paths"]
    assert SYNTHESIS_STATUSES | {"400"} <= set(paths["/tts"]["post"]["responses"])
    assert set(paths["/tts/json"]["post"]["responses"]) >= SYNTHESIS_STATUSES
    assert SYNTHESIS_STATUSES | {"400"} <= set(paths["/v1/audio/speech"]["post"]["responses"])
    assert {"404"} <= set(paths["/voices/{voice_id}"]["delete"]["responses"])
    assert {"413", "422"} <= set(paths["/voices/register"]["post"]["responses"])


def test_audio_responses_carry_their_media_types(spec):
    paths = spec["paths"]
    assert set(paths["/tts"]["post"]["responses"]["200"]["content"]) == {"audio/wav"}
    speech = set(paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"])
    assert {"audio/wav", "audio/pcm", "text/event-stream"} <= speech
    assert "application/json" not in speech


def test_enums_list_only_what_this_install_produces(spec):
    response_format = spec["components"]["schemas"]["SpeechRequest"]["properties"]["response_format"]
    assert response_format["enum"] == list(available_formats())


def test_form_fields_carry_bounds_and_defaults(spec):
    form = spec["components"]["schemas"]["TTSForm"]["properties"]

    def number(field):
        return next(s for s in form[field].get("anyOf", [form[field]]) if s.get("type") in ("number", "integer"))

    assert number("temperature")["minimum"] == 0 and number("temperature")["maximum"] == 10
    assert number("top_p")["exclusiveMinimum"] == 0 and number("top_p")["maximum"] == 1
    assert number("max_new_tokens")["minimum"] == 1
    assert form["stream"]["default"] is True
    for field in form.values():
        assert field.get("description"), field


def test_a_validation_error_matches_the_documented_shape(server):
    with server.client() as c:
        r = c.post("/tts/json", json={"text": "Hi.", "voice_id": "v", "temperature": 99})
        openai = c.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "v", "speed": 99})
    assert r.status_code == 422
    assert set(r.json()) == {"error"} and r.json()["error"]["type"] == "validation_error"
    assert openai.status_code == 422
    assert openai.json() == {
        "error": {
            "message": openai.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": "speed",
            "code": "validation_error",
        }
    }


def test_the_openai_request_documents_what_clients_send(spec):
    request = spec["components"]["schemas"]["SpeechRequest"]["properties"]
    assert "ignored" in request["instructions"]["description"]
    assert request["stream"]["default"] is True
    assert {"type": "string"} in request["voice"]["anyOf"]  # or OpenAI's {"id": ...}
    assert "gpt-4o-mini-tts" in request["model"]["description"]
