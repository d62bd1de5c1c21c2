"""Property-based conformance: Schemathesis generates requests from /openapi.json against a real
server with a registered voice (so synthesis really runs) and checks every response: no server
error, a documented status code and content type, and a body that matches the documented schema."""

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatterbox_server.benchmark.server_process import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

VOICE = "fuzz-voice"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 25  # bounded: the whole run takes a minute or two on two cores


@pytest.fixture(scope="module")
def fuzzed_server(model_dir, tmp_path_factory, voice_a):
    root = tmp_path_factory.mktemp("fuzz")
    # short texts and few tokens keep each synthesis cheap; the limits are part of what is tested
    with ServerProcess(
        model_dir,
        root / "voices",
        root / "server.log",
        warmup="false",
        max_text_length=300,
        max_new_tokens=40,
        request_timeout_s=60,
        max_queue=64,
    ) as server:
        with server.client() as c, open(voice_a, "rb") as f:
            assert c.post("/voices/register", files={"voice_file": f}, data={"voice_id": VOICE}).status_code == 200
        yield server
        log = server.log()
    assert "Traceback" not in log, log[-4000:]


def conformance(operation):
    """A Hypothesis test of one operation: generate requests, call the server, check the response."""

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        if isinstance(case.body, dict) and "register" not in case.path:
            # speak in the registered voice with a known model, so synthesis really runs; the
            # other fields stay as generated (formats, speeds, sampling values, texts)
            for field in ("voice_id", "voice"):
                if field in case.body or (field == "voice_id" and case.path.startswith("/tts")):
                    case.body[field] = VOICE
            if "model" in case.body:
                case.body["model"] = "tts-1"
            case.body.pop("voice_file", None)
        if case.method.upper() == "DELETE" and (case.path_parameters or {}).get("voice_id") == VOICE:
            return  # keep the voice the other operations speak in
        case.call_and_validate(checks=CHECKS)

    return run


def test_every_response_conforms_to_the_schema(fuzzed_server):
    schema = schemathesis.openapi.from_url(fuzzed_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:
        conformance(operation)()
