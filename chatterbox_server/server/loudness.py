"""Steady loudness: each voice's measured loudness, and the normalizer a response runs through.

A response's gain must not depend on what it says or on how it is delivered (a streamed reply
and the same reply as one file get the same gain), so it is not measured on the response: each
voice is measured once, by speaking `CALIBRATION_TEXT` in it (greedy, whole pieces: the same
audio every time, give or take the decoder's noise) and measuring that with BS.1770. The gain of
every response in that voice is then target − measured, a constant, followed by the peak limiter.

Measurements are kept by the clip's content hash (the clip decides the voice's loudness): a
registered voice's is measured at registration and written into its record (replicas share it,
restarts keep it); a voice whose record has none (registered before, or with the setting off) and
an uploaded clip are measured on first use and kept in memory. Concurrent first uses share one
measurement.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor

import cachetools
import numpy as np

from chatterbox_server.audio import SAMPLE_RATE_HZ
from chatterbox_server.audio.loudness import LoudnessNormalizer, measure_lufs, normalization_gain_db
from chatterbox_server.engine import GenerationOptions, GenerationRequest, TTSEngine, VoiceEmbedding

logger = logging.getLogger(__name__)

# One piece of everyday assistant speech: about 5 s in the real model (and of tones in the tiny stand-in).
CALIBRATION_TEXT = "Hello, and thanks for waiting: let me check those details and read them back to you."
CALIBRATION_OPTIONS = GenerationOptions(temperature=0.0, seed=0)  # greedy: the same tokens every time
MEASUREMENTS_KEPT = 4096  # clips whose loudness is kept in memory (LRU; a registered voice's is in its record too)


class VoiceLoudness:
    """The measured loudness (LUFS) of each voice, by clip content hash, and the normalizer that
    takes a response in that voice to `target_lufs`."""

    def __init__(self, engine: TTSEngine, target_lufs: float, executor: Executor, timeout_s: float = 120.0):
        self.target_lufs = target_lufs
        self._engine = engine
        self._executor = executor
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # remember() is also called from the voice service's threads
        self._measured: cachetools.LRUCache = cachetools.LRUCache(MEASUREMENTS_KEPT)
        self._pending: dict[str, asyncio.Task[float]] = {}  # content hash → its measurement under way
        self.calibrations = 0  # calibration syntheses run (tests read it)

    def known(self, content_hash: str) -> float | None:
        """The clip's loudness if it was measured (here, or by whoever wrote its record)."""
        with self._lock:
            lufs: float | None = self._measured.get(content_hash)
            return lufs

    def remember(self, content_hash: str, lufs: float) -> None:
        with self._lock:
            self._measured[content_hash] = lufs

    async def measure(self, voice: VoiceEmbedding) -> float:
        """The voice's loudness in LUFS: known, or measured now (one calibration for any number
        of callers waiting on the same clip; a caller that goes away does not stop it)."""
        lufs = self.known(voice.content_hash)
        if lufs is not None:
            return lufs
        task = self._pending.get(voice.content_hash)
        if task is None:
            task = asyncio.ensure_future(self._calibrate(voice))
            self._pending[voice.content_hash] = task
            task.add_done_callback(lambda done: self._settled(voice.content_hash, done))
        return await asyncio.shield(task)

    def _settled(self, content_hash: str, task: "asyncio.Task[float]") -> None:
        if self._pending.get(content_hash) is task:
            del self._pending[content_hash]  # a failed measurement is tried again by the next use
        if not task.cancelled() and task.exception() is not None:  # its waiters may all have gone
            logger.warning("voice %s…: loudness not measured: %s", content_hash[:12], task.exception())

    async def normalizer(self, voice: VoiceEmbedding) -> LoudnessNormalizer:
        """A fresh normalizer for one response in this voice (measuring the voice first if need be)."""
        return LoudnessNormalizer(normalization_gain_db(await self.measure(voice), self.target_lufs))

    async def _calibrate(self, voice: VoiceEmbedding) -> float:
        started = time.perf_counter()
        plan = self._engine.prepare(CALIBRATION_TEXT, CALIBRATION_OPTIONS)
        request = GenerationRequest(plan, voice, deadline=started + self._timeout_s)
        waves = [output.waveform async for output in self._engine.generate(request)]
        waveform = np.concatenate(waves) if waves else np.zeros(0, np.float32)
        loop = asyncio.get_running_loop()
        lufs = await loop.run_in_executor(self._executor, measure_lufs, waveform)
        self.calibrations += 1
        self.remember(voice.content_hash, lufs)  # -inf (a silent voice) too: gain 0, not measured again
        logger.info(
            "voice %s…: %.1f LUFS (calibration, %.2f s of audio in %.2f s)",
            voice.content_hash[:12],
            lufs,
            waveform.shape[0] / SAMPLE_RATE_HZ,
            time.perf_counter() - started,
        )
        return lufs
