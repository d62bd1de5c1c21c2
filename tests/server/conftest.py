"""One server for the HTTP tests of this folder that need no special settings (package scope, as one module before)."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.engine import TTSConfig, TTSEngine


@pytest.fixture(scope="package")
def server(model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    with ServerProcess(model_dir, root / "voices", root / "server.log") as running:
        yield running


@pytest.fixture(scope="package")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="package")
def voice_ids(client, voice_a, voice_b):
    ids = {}
    for name, path in (("a", voice_a), ("b", voice_b)):
        with open(path, "rb") as f:
            r = client.post(
                "/voices/register", files={"voice_file": (path.name, f)}, data={"voice_id": f"voice-{name}"}
            )
        assert r.status_code == 200, r.text
        ids[name] = r.json()["voice_id"]
    return ids


@pytest.fixture(scope="package")
def engine(model_dir):
    """An in-process engine (fp32) for the serving layer's tests that need no server."""
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    yield engine
    engine.close()


@pytest.fixture(scope="package")
def executor():
    """The thread pool a VoiceService runs its blocking work on."""
    with ThreadPoolExecutor(2, thread_name_prefix="service") as pool:
        yield pool
