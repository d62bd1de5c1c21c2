"""In-order delivery (requests.RequestState.deliver): pieces decoded out of order reach the reader
in text order, whole pieces are placed end to end, and the request finishes after its last piece.
Pure bookkeeping, driven by hand: no model, no threads."""

import numpy as np
import pytest

from chatterbox_server.engine import AudioChunk, GenerationOptions, GenerationRequest, SpeechPlan, SpokenPiece
from chatterbox_server.engine.outputs import SyncOutputs
from chatterbox_server.engine.requests import RequestState
from chatterbox_server.engine.sampling import SamplingParams
from chatterbox_server.engine.types import PlannedPiece, StageTimings, SynthesisResult
from chatterbox_server.text import TextPiece
from tests.clips import fake_embedding as embedding

SAMPLES = 2_400  # 0.1 s at 24 kHz


def request_of(pieces: int, chunked: bool) -> tuple[RequestState, SyncOutputs]:
    planned = tuple(
        PlannedPiece(TextPiece(f"piece {i}.", 10 * i, 10 * i + 8), np.array([1, 2], np.int64)) for i in range(pieces)
    )
    plan = SpeechPlan(planned, GenerationOptions(), SamplingParams(), 64)
    sink: SyncOutputs = SyncOutputs()
    return RequestState(GenerationRequest(plan, embedding(0), chunked=chunked), sink, 4), sink


def result(samples: int) -> SynthesisResult:
    return SynthesisResult(np.zeros(samples, np.float32), np.zeros(0, np.int64), 1, True, StageTimings())


def chunk(state: RequestState, index: int, value: float, last: bool) -> AudioChunk:
    wave = np.full(SAMPLES, value, np.float32)
    return AudioChunk(state.request.plan.pieces[index].piece, wave, result(SAMPLES) if last else None)


def test_chunks_of_later_pieces_wait_for_every_earlier_piece():
    state, sink = request_of(3, chunked=True)
    state.deliver(1, chunk(state, 1, 1.0, last=False), False)  # piece 1 runs ahead: held back
    state.deliver(2, chunk(state, 2, 2.0, last=True), True)  # piece 2 done first: held back
    state.deliver(0, chunk(state, 0, 0.0, last=False), False)  # the piece being delivered: sent
    assert state.next_to_deliver == 0 and not sink.finished
    state.deliver(1, chunk(state, 1, 1.5, last=True), True)  # piece 1 finished while 0 was not: still held
    assert state.next_to_deliver == 0
    state.deliver(0, chunk(state, 0, 0.5, last=True), True)  # 0 ends: 1's chunks, then 2's, then the end
    assert sink.finished and state.next_to_deliver == 3
    delivered = [(c.piece.start, float(c.waveform[0])) for c in sink]
    assert delivered == [(0, 0.0), (0, 0.5), (10, 1.0), (10, 1.5), (20, 2.0)]
    assert state.audio_sent_s == pytest.approx(5 * SAMPLES / 24_000) and state.first_audio_at is not None


def test_whole_pieces_are_placed_end_to_end_in_text_order():
    state, sink = request_of(2, chunked=False)
    second = SpokenPiece(state.request.plan.pieces[1].piece, np.zeros(2 * SAMPLES, np.float32), 0.0, result(1))
    first = SpokenPiece(state.request.plan.pieces[0].piece, np.zeros(SAMPLES, np.float32), 0.0, result(1))
    state.deliver(1, second, True)
    assert state.first_audio_at is None  # nothing reached the reader yet
    state.deliver(0, first, True)
    placed = list(sink)
    assert [p.piece.start for p in placed] == [0, 10]
    assert [p.start_s for p in placed] == [0.0, SAMPLES / 24_000]
    assert placed[1].end_s == pytest.approx(3 * SAMPLES / 24_000)


def test_nothing_is_sent_after_the_request_ended_elsewhere():
    state, sink = request_of(2, chunked=True)
    state.deliver(0, chunk(state, 0, 0.0, last=False), False)
    sink.finish(RuntimeError("aborted"))  # what the loop does to an aborted request
    state.deliver(0, chunk(state, 0, 0.5, last=True), True)
    state.deliver(1, chunk(state, 1, 1.0, last=True), True)
    received = []
    try:
        for item in sink:
            received.append(item)
    except RuntimeError as e:
        assert str(e) == "aborted"
    assert len(received) == 1
