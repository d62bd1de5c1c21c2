"""The web page at `/` in a real browser (Debian's chromium driven by Playwright) against the real server.

What a person does there, end to end: register a voice (file and microphone), speak and hear it while it
streams, download the WAV, see the server's errors, and use an API key. The page is plain JS with no
build step, so this is the only place its behaviour is checked.
"""

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from chatterbox_server.benchmark.server_process import REPO, ServerProcess
from tests.system_tools import require_tool

pytestmark = [pytest.mark.server, pytest.mark.slow]

SAMPLE_RATE_HZ = 24_000
WAV_HEADER_BYTES = 44
SCREENSHOT = REPO / "artifacts" / "web-page.png"
TEXT = "Hello from the browser."
# A closed network, root, no display: no sandbox, nothing fetched in the background; the fake microphone
# plays a tone, and the fake permission UI accepts it (the refused-microphone test launches without it).
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
]
ARGS = [*BASE_ARGS, "--use-fake-ui-for-media-stream"]
UNTIL_DONE_JS = "['done', 'error', 'idle'].includes(document.getElementById('tts-status').dataset.state)"
WAV_FACTS_JS = """async (href) => {
    const bytes = new Uint8Array(await (await fetch(href)).arrayBuffer());
    const view = new DataView(bytes.buffer);
    const text = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
    return {
        riff: text(0), wave: text(8), fmt: text(12), data: text(36), total: bytes.length,
        riffSize: view.getUint32(4, true), channels: view.getUint16(22, true),
        sampleRate: view.getUint32(24, true), bits: view.getUint16(34, true), dataSize: view.getUint32(40, true),
    };
}"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    return require_tool(
        "chromium",
        [Path("/usr/bin/chromium"), "chromium", "chromium-browser"],
        "apt-get install -y --no-install-recommends chromium (Playwright's own browser download is not used)",
    )


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, chromium):
    """One browser for the module (each test takes a fresh context: its own storage and permissions)."""
    browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """One keyless server for the tests that need no keys (each uses its own voice ids)."""
    root = tmp_path_factory.mktemp("web-page")
    with ServerProcess(model_dir, root / "voices", root / "server.log", warmup="false") as running:
        yield running


@contextlib.contextmanager
def open_page(browser, url: str):
    """A page in a fresh context (its own storage); any uncaught script error fails the test: nothing silent."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        yield page
        assert not errors, errors
    finally:
        context.close()


def figure(page, element_id: str) -> float:
    text = page.locator(f"#{element_id}").inner_text().strip()
    assert re.fullmatch(r"\d+(\.\d+)?", text), f"#{element_id} shows {text!r}, not a number"
    return float(text)


def speak_and_wait(page, timeout_ms: int = 45_000) -> str:
    page.click("#speak-button")
    page.wait_for_function(UNTIL_DONE_JS, timeout=timeout_ms)
    return page.locator("#tts-status").get_attribute("data-state")


def test_register_speak_stream_download_then_see_a_server_error(browser, server, voice_a):
    """The main path a visitor takes, and the error they must see when the voice vanishes meanwhile."""
    with open_page(browser, server.url) as page:
        expect(page.locator("#stand-in-banner")).to_be_visible()  # the stand-in says so: tones, not words
        expect(page.locator("#alert")).to_be_hidden()

        page.set_input_files("#voice-file", str(voice_a))
        page.fill("#voice-id", "web-voice")
        page.click("#register-button")
        row = page.locator("#voice-list tr[data-voice-id='web-voice']")
        expect(row).to_be_visible()
        expect(row).to_contain_text("6.0 s")
        expect(page.locator("#voice-select")).to_have_value("web-voice")

        page.fill("#text", TEXT)
        page.locator("#text").evaluate("(area) => area.setSelectionRange(area.value.length, area.value.length)")
        page.get_by_role("button", name="Insert [chuckle]").click()
        expect(page.locator("#text")).to_have_value(TEXT + " [chuckle]")

        state = speak_and_wait(page)
        assert state == "done", f"{page.locator('#tts-status').inner_text()} / {page.locator('#alert').inner_text()}"
        stats = page.evaluate("window.ttsStats")
        assert stats["requests"] == 1
        assert stats["samplesScheduled"] > 0
        assert stats["chunksScheduled"] > 1, "the audio came in one piece: it was not played while streaming"
        assert stats["audioSeconds"] == pytest.approx(stats["samplesScheduled"] / SAMPLE_RATE_HZ)
        audio_seconds = figure(page, "stat-audio-length")
        assert audio_seconds > 0
        assert audio_seconds == pytest.approx(stats["audioSeconds"], abs=0.01)
        first_audio_ms = figure(page, "stat-first-audio")
        rtf = figure(page, "stat-rtf")
        assert rtf > 0
        assert 0 < first_audio_ms <= rtf * audio_seconds * 1000 + 1, "first audio came after the whole request"

        link = page.locator("#download")
        expect(link).to_be_visible()
        href = link.get_attribute("href")
        assert href and href.startswith("blob:")
        assert link.get_attribute("download").endswith(".wav")
        wav = page.evaluate(WAV_FACTS_JS, href)
        data_bytes = 2 * stats["samplesScheduled"]
        assert (wav["riff"], wav["wave"], wav["fmt"], wav["data"]) == ("RIFF", "WAVE", "fmt ", "data")
        assert (wav["channels"], wav["sampleRate"], wav["bits"]) == (1, SAMPLE_RATE_HZ, 16)
        assert wav["dataSize"] == data_bytes  # the real length, not the stream's 0xFFFFFFFF
        assert wav["riffSize"] == data_bytes + 36
        assert wav["total"] == data_bytes + WAV_HEADER_BYTES

        # the live panel has polled /metrics since: our request is counted
        expect(page.locator("#metric-total")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=5000)
        expect(page.locator("#metrics-note")).not_to_contain_text("unavailable")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        with server.client() as client:  # behind the page's back
            assert client.delete("/voices/web-voice").status_code == 200
        assert speak_and_wait(page) == "error"
        expect(page.locator("#alert")).to_be_visible()
        expect(page.locator("#alert")).to_contain_text("voice 'web-voice' is not registered")
        assert page.evaluate("window.ttsStats.requests") == 2


def test_record_from_the_microphone_register_and_delete(browser, server):
    """The browser records WebM, which the server cannot read: the page must send it as WAV."""
    with open_page(browser, server.url) as page:
        page.click("#record-start")
        expect(page.locator("#record-stop")).to_be_enabled()
        page.wait_for_timeout(5_600)  # a voice needs 5 s at least
        expect(page.locator("#record-timer")).to_have_text(re.compile(r"^0:0[5-9]$"))
        page.click("#record-stop")
        expect(page.locator("#record-info")).to_contain_text("Ready to register")
        page.fill("#voice-id", "mic-voice")
        page.click("#register-button")
        row = page.locator("#voice-list tr[data-voice-id='mic-voice']")
        expect(row).to_be_visible()
        expect(page.locator("#alert")).to_be_hidden()
        with server.client() as client:
            assert 5 <= client.get("/voices/mic-voice").json()["duration"] < 8

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete voice mic-voice").click()
        expect(row).to_have_count(0)
        with server.client() as client:
            assert client.get("/voices/mic-voice").status_code == 404


def test_a_refused_microphone_is_explained(playwright, chromium, server):
    """Without the fake permission UI a Playwright context has no microphone grant: getUserMedia is refused."""
    browser = playwright.chromium.launch(
        executable_path=str(chromium), headless=True, args=[*BASE_ARGS, "--deny-permission-prompts"]
    )
    try:
        with open_page(browser, server.url) as page:
            page.click("#record-start")
            expect(page.locator("#alert")).to_contain_text("Microphone access was refused")
            expect(page.locator("#record-start")).to_be_enabled()
    finally:
        browser.close()


def test_api_key_entered_once_is_used_and_kept(browser, model_dir, tmp_path, voice_a):
    """With keys configured the page shows the 401 message; the key, once saved, opens the API and persists."""
    settings = {"warmup": "false", "api_keys": "k1"}
    with ServerProcess(model_dir, tmp_path / "voices", tmp_path / "server.log", **settings) as server:
        with server.client(headers={"Authorization": "Bearer k1"}) as client:
            files = {"voice_file": (voice_a.name, voice_a.read_bytes())}
            r = client.post("/voices/register", files=files, data={"voice_id": "keyed"})
            assert r.status_code == 200, r.text
        assert httpx.get(server.url + "/voices").status_code == 401

        with open_page(browser, server.url) as page:
            expect(page.locator("#alert")).to_contain_text("missing or wrong API key")
            expect(page.locator("#voice-list tr")).to_have_count(0)

            page.fill("#api-key", "k1")
            page.click("#api-key-save")
            expect(page.locator("#voice-list tr[data-voice-id='keyed']")).to_be_visible()
            expect(page.locator("#alert")).to_be_hidden()

            page.reload()  # kept in localStorage: no need to type it again
            expect(page.locator("#api-key")).to_have_value("k1")
            expect(page.locator("#voice-list tr[data-voice-id='keyed']")).to_be_visible()
            expect(page.locator("#alert")).to_be_hidden()
