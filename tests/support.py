"""Helpers shared by the HTTP tests: texts of known shape, WAV decoding, error and metric checks."""

import io

import httpx
import numpy as np
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

TEXT = "Hello, how are you today?"


# one piece (no sentence end, no clause break, < 250 characters): the stand-in speaks
# 8 + 6 × ~50 text tokens ≈ 300+ tokens for it, unless max_new_tokens caps it
LONG_PIECE = (
    "This sentence keeps the language model busy for a while and then it goes on and on "
    "without a single pause so that the whole of it stays in one piece for the engine to speak"
)


# many sentences: ~25 pieces, several seconds of work on the tiny stand-in
LONG_TEXT = " ".join(["This sentence keeps the language model busy for a while."] * 25)


def decode_wav(data: bytes) -> tuple[np.ndarray, sf._SoundFileInfo]:
    info = sf.info(io.BytesIO(data))
    audio, _ = sf.read(io.BytesIO(data), dtype="float32")
    return audio, info


def assert_error(response: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    if kind:
        assert body["error"]["type"] == kind
    return body["error"]


def metric_value(client, name: str, **labels) -> float:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def strongest_partials(audio: np.ndarray) -> np.ndarray:
    """The loudest FFT bin of each 960-sample token, int [tokens]."""
    frames = audio[: audio.shape[0] // 960 * 960].reshape(-1, 960)
    return np.argmax(np.abs(np.fft.rfft(frames, axis=1)), axis=1)


MULTI_SENTENCE = (
    "Good morning everyone. Thanks for joining the call today. We have three topics. "
    "First the budget. Then the schedule. Finally, questions [chuckle] if we have time."
)
