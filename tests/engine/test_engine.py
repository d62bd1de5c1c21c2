"""TTSEngine on the tiny stand-in: real graphs, real ONNX Runtime, no mocks."""

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from chatterbox_server import audio as audio_io
from chatterbox_server.errors import (
    GenerationCancelledError,
    InvalidAudioError,
    InvalidInputError,
    ModelLoadError,
)
from tests.clips import make_clip
from tts_engine import (
    SAMPLES_PER_TOKEN,
    SILENCE_PADDING_TOKENS,
    START_SPEECH_TOKEN,
    STOP_SPEECH_TOKEN,
    GenerationOptions,
    GenerationRequest,
    SpeechCollector,
    TTSConfig,
    TTSEngine,
    speech_tokens_of,
)

# The stand-in's stop rule (chatterbox_server/model/stand_in): STOP is generated token number
# MIN_TOKENS + TOKENS_PER_TEXT_TOKEN × (text tokens).
MIN_TOKENS = 8
TOKENS_PER_TEXT_TOKEN = 6
TEXT = "Hello there, how are you today?"
LONG_TEXT = "Hello there, how are you today? I hope the weather is fine where you are."


def expected_tokens(engine: TTSEngine, text: str) -> int:
    """The stand-in's stop rule, summed over the pieces the text is split into."""
    pieces = engine.prepare(text).pieces
    return sum(MIN_TOKENS + TOKENS_PER_TEXT_TOKEN * len(p.token_ids) for p in pieces)


def text_ids(engine: TTSEngine, text: str) -> np.ndarray:
    (piece,) = engine.prepare(text).pieces
    return piece.token_ids


@pytest.fixture(scope="module")
def engine(model_dir) -> TTSEngine:
    return TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))


@pytest.fixture(scope="module")
def voices(engine, voice_a, voice_b) -> dict:
    return {"a": engine.encode_clip(voice_a), "b": engine.encode_clip(voice_b)}


def card_loop(model_dir, dtype_suffix: str, text_ids, audio, max_new_tokens=1024, penalty=1.2):
    """The model card's loop written out literally, batch 1: the reference the engine must match."""

    def session(name):
        return ort.InferenceSession(
            str(model_dir / "onnx" / f"{name}{dtype_suffix}.onnx"), providers=["CPUExecutionProvider"]
        )

    encoder, embed, lm = session("speech_encoder"), session("embed_tokens"), session("language_model")
    cond_emb, *_ = encoder.run(None, {"audio_values": audio[None, :]})
    inputs_embeds = np.concatenate([cond_emb, embed.run(None, {"input_ids": text_ids[None, :]})[0]], axis=1)
    kv_inputs = [i for i in lm.get_inputs() if "past_key_values" in i.name]
    past = {
        i.name: np.zeros([1, 16, 0, 64], dtype=np.float16 if i.type == "tensor(float16)" else np.float32)
        for i in kv_inputs
    }
    seq = inputs_embeds.shape[1]
    attention_mask = np.ones((1, seq), dtype=np.int64)
    position_ids = np.arange(seq, dtype=np.int64)[None, :]
    generated = np.array([[START_SPEECH_TOKEN]], dtype=np.int64)
    for _ in range(max_new_tokens):
        logits, *present = lm.run(
            None,
            {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids, **past},
        )
        scores = logits[:, -1, :].astype(np.float32)
        picked = np.take_along_axis(scores, generated, axis=1)
        picked = np.where(picked < 0, picked * penalty, picked / penalty)
        np.put_along_axis(scores, generated, picked, axis=1)
        next_token = np.argmax(scores, axis=-1, keepdims=True).astype(np.int64)
        generated = np.concatenate([generated, next_token], axis=1)
        if next_token[0, 0] == STOP_SPEECH_TOKEN:
            break
        attention_mask = np.concatenate([attention_mask, np.ones((1, 1), dtype=np.int64)], axis=1)
        position_ids = position_ids[:, -1:] + 1
        past = dict(zip(past, present))
        inputs_embeds = embed.run(None, {"input_ids": next_token})[0]
    return generated[0].tolist()


# ----- shapes and the generation contract ---------------------------------------------------


def test_voice_embedding_shapes(engine, voices):
    voice = voices["a"]
    frames = 6 * 24_000 // 960  # 150 tokens in a 6 s clip
    assert voice.audio_features.shape == (1, 1 + frames, 1024)
    assert voice.audio_features.dtype == np.float32
    assert voice.audio_tokens.shape == (1, frames) and voice.audio_tokens.dtype == np.int64
    assert voice.speaker_embeddings.shape == (1, 192)
    assert voice.speaker_features.shape == (1, 2 * frames, 80)
    assert voice.duration_s == pytest.approx(6.0)
    assert len(voice.content_hash) == 64


def test_engine_reads_model_facts_from_sessions(engine):
    assert engine.num_layers == 24
    assert engine.kv_dtype == np.float32
    assert engine.active_providers == ["CPUExecutionProvider"]
    assert engine.is_stand_in
    assert set(engine.providers) == {"speech_encoder", "embed_tokens", "language_model", "conditional_decoder"}


def test_greedy_matches_the_model_card_loop(engine, voices, model_dir, voice_a):
    audio = audio_io.prepare_reference_audio(voice_a.read_bytes(), max_seconds=30)
    ids = text_ids(engine, TEXT)
    reference = card_loop(model_dir, "", ids, audio)
    result = engine.synthesize(TEXT, voices["a"])
    assert result.tokens_generated == len(reference) - 1
    assert result.speech_tokens.tolist() == reference[1:-1]


def test_stop_path_and_length_rule(engine, voices):
    result = engine.synthesize(TEXT, voices["a"])
    assert result.stopped
    assert result.tokens_generated == expected_tokens(engine, TEXT)
    assert STOP_SPEECH_TOKEN not in result.speech_tokens
    assert len(result.speech_tokens) == result.tokens_generated - 1
    # decoder rule: (T − P) × 960 samples with T − P = speech tokens + 3 SILENCE
    assert result.waveform.shape == ((len(result.speech_tokens) + SILENCE_PADDING_TOKENS) * SAMPLES_PER_TOKEN,)
    assert result.waveform.dtype == np.float32
    assert np.isfinite(result.waveform).all() and np.abs(result.waveform).max() <= 1.0
    # the padding is spoken as silence at the very end
    assert np.abs(result.waveform[-SILENCE_PADDING_TOKENS * SAMPLES_PER_TOKEN :]).max() < 0.05
    assert np.abs(result.waveform[: SAMPLES_PER_TOKEN * 4]).max() > 0.05
    assert result.audio_duration_s == pytest.approx(result.waveform.shape[0] / 24_000)
    assert result.rtf == pytest.approx(result.generation_time_s / result.audio_duration_s)


def test_longer_text_gives_longer_audio(engine, voices):
    short = engine.synthesize(TEXT, voices["a"])
    long = engine.synthesize(LONG_TEXT, voices["a"])
    assert long.tokens_generated == expected_tokens(engine, LONG_TEXT) > short.tokens_generated
    assert long.audio_duration_s > short.audio_duration_s


def test_max_new_tokens_path_keeps_every_token(engine, voices):
    result = engine.synthesize(TEXT, voices["a"], GenerationOptions(max_new_tokens=5))
    assert not result.stopped
    assert result.tokens_generated == 5
    assert len(result.speech_tokens) == 5  # no final STOP to drop
    assert result.waveform.shape == ((5 + SILENCE_PADDING_TOKENS) * SAMPLES_PER_TOKEN,)


def test_speech_tokens_of_drops_start_and_only_a_final_stop():
    assert speech_tokens_of([START_SPEECH_TOKEN, 5, 7, STOP_SPEECH_TOKEN]).tolist() == [5, 7]
    assert speech_tokens_of([START_SPEECH_TOKEN, 5, 7]).tolist() == [5, 7]
    assert speech_tokens_of([START_SPEECH_TOKEN, STOP_SPEECH_TOKEN]).tolist() == []


def test_timings_are_recorded(engine, voices):
    result = engine.synthesize(TEXT, voices["a"])
    t = result.timings
    assert t.prefill_s > 0 and t.decode_s > 0 and t.vocoder_s > 0
    assert t.decode_steps == result.tokens_generated - 1
    assert t.total_s >= t.prefill_s + t.decode_s + t.vocoder_s
    assert t.voice_encode_s == 0.0  # encoder outputs given


def test_voice_given_as_bytes_is_encoded_and_timed(engine, voice_a):
    result = engine.synthesize(TEXT, voice_a.read_bytes())
    assert result.timings.voice_encode_s > 0
    assert result.tokens_generated == expected_tokens(engine, TEXT)


@pytest.mark.parametrize("dtype", ["fp16", "q8", "q4", "q4f16"])
def test_every_dtype_synthesises(model_dir, voice_a, dtype):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype=dtype))
    assert engine.kv_dtype == (np.float16 if dtype in ("fp16", "q4f16") else np.float32)
    result = engine.synthesize(TEXT, voice_a)
    assert result.stopped and result.tokens_generated == expected_tokens(engine, TEXT)
    assert np.isfinite(result.waveform).all()


def test_fp16_kv_matches_the_card_loop(model_dir, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp16"))
    audio = audio_io.prepare_reference_audio(voice_a.read_bytes(), max_seconds=30)
    reference = card_loop(model_dir, "_fp16", text_ids(engine, TEXT), audio)
    assert engine.synthesize(TEXT, voice_a).speech_tokens.tolist() == reference[1:-1]


def test_encoder_dtype_may_differ(model_dir, voice_a):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="q4f16", encoder_dtype="fp32"))
    assert engine.files.graphs["speech_encoder"].name == "speech_encoder.onnx"
    assert engine.files.graphs["language_model"].name == "language_model_q4f16.onnx"
    assert engine.synthesize(TEXT, voice_a).stopped


def test_auto_dtype_on_cpu_is_q4(model_dir):
    engine = TTSEngine(TTSConfig(model_dir=model_dir))
    assert (engine.device, engine.model_dtype) == ("cpu", "q4")


# ----- determinism and sampling -------------------------------------------------------------


def test_greedy_is_deterministic(engine, voices):
    a = engine.synthesize(TEXT, voices["a"])
    b = engine.synthesize(TEXT, voices["a"])
    assert a.speech_tokens.tolist() == b.speech_tokens.tolist()


def test_sampling_is_reproducible_per_seed(engine, voices):
    def tokens(seed):
        options = GenerationOptions(temperature=1.0, top_k=200, top_p=0.95, seed=seed)
        return engine.synthesize(TEXT, voices["a"], options).speech_tokens.tolist()

    assert tokens(1) == tokens(1)
    assert tokens(1) != tokens(2)
    assert tokens(1) != engine.synthesize(TEXT, voices["a"]).speech_tokens.tolist()


def test_sampling_seeds_do_not_leak_between_threads(engine, voices):
    options = GenerationOptions(temperature=1.0, seed=11)
    serial = engine.synthesize(TEXT, voices["a"], options).speech_tokens.tolist()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: engine.synthesize(TEXT, voices["a"], options), range(4)))
    assert all(r.speech_tokens.tolist() == serial for r in results)


@pytest.mark.slow
def test_concurrent_greedy_requests_match_serial(engine, voices):
    jobs = [(TEXT, voices["a"]), (LONG_TEXT, voices["b"]), (TEXT, voices["b"]), (LONG_TEXT, voices["a"])]
    serial = [engine.synthesize(t, v).speech_tokens.tolist() for t, v in jobs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda job: engine.synthesize(*job).speech_tokens.tolist(), jobs))
    assert parallel == serial


@pytest.mark.slow
def test_batched_rows_match_single_runs(engine, voices):
    """Left-padded batch of different lengths, voices and settings = each request alone."""
    jobs = [
        (LONG_TEXT, "a", GenerationOptions()),
        (TEXT, "b", GenerationOptions()),
        (TEXT, "a", GenerationOptions(max_new_tokens=7)),
        (TEXT, "b", GenerationOptions(temperature=0.8, seed=3)),
    ]
    # submitted together, before any is read: they share decode steps
    streams = [engine.submit(GenerationRequest(engine.prepare(t, o), voices[v])) for t, v, o in jobs]
    batched = []
    for stream in streams:
        collector = SpeechCollector()
        for output in stream:
            collector.add(output)
        batched.append(collector.result())
    for (text, voice, options), result in zip(jobs, batched):
        alone = engine.synthesize(text, voices[voice], options)
        assert result.speech_tokens.tolist() == alone.speech_tokens.tolist()
        assert result.waveform.shape == alone.waveform.shape


# ----- voices -------------------------------------------------------------------------------


def test_two_voices_sound_different(engine, voices):
    a = engine.synthesize(TEXT, voices["a"])
    b = engine.synthesize(TEXT, voices["b"])
    # the decoder adds ~1e-3 noise per run; a voice change must be far above that
    again = engine.synthesize(TEXT, voices["a"])
    n = min(a.waveform.shape[0], b.waveform.shape[0])
    noise = np.abs(a.waveform - again.waveform).mean()
    between = np.abs(a.waveform[:n] - b.waveform[:n]).mean()
    assert between > 20 * noise


# ----- bad input: typed errors, nothing changes ----------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_invalid(engine, voices, text):
    with pytest.raises(InvalidInputError, match="empty"):
        engine.synthesize(text, voices["a"])


@pytest.mark.parametrize(
    "options",
    [
        GenerationOptions(temperature=-1.0),
        GenerationOptions(temperature=float("nan")),
        GenerationOptions(top_p=0.0),
        GenerationOptions(top_p=1.5),
        GenerationOptions(top_k=-3),
        GenerationOptions(repetition_penalty=0.0),
        GenerationOptions(max_new_tokens=0),
        GenerationOptions(max_new_tokens=5000),
        GenerationOptions(seed=-1),
    ],
)
def test_bad_options_are_invalid(engine, voices, options):
    with pytest.raises(InvalidInputError):
        engine.synthesize(TEXT, voices["a"], options)


def test_bad_clips_are_rejected(engine, clips_dir):
    short = clips_dir / "short.wav"
    sf.write(short, make_clip(2.0, 24_000, 150.0, seed=4), 24_000)
    with pytest.raises(InvalidAudioError, match="at least 5 s"):
        engine.encode_clip(short)
    long = clips_dir / "long.wav"
    sf.write(long, make_clip(31.0, 16_000, 150.0, seed=4), 16_000)
    with pytest.raises(InvalidAudioError, match="at most 30 s"):
        engine.encode_clip(long)
    with pytest.raises(InvalidAudioError, match="cannot decode"):
        engine.encode_clip(b"RIFF....WAVEfmt garbage" * 10)
    with pytest.raises(InvalidAudioError):
        engine.synthesize(TEXT, b"not audio")


def test_abort_stops_generation(engine, voices):
    # 20 pieces, at most 4 in flight: far from done when its first piece arrives (the deterministic
    # one-step bound is tests/engine/test_loop.py's, which steps the loop by hand)
    request = GenerationRequest(engine.prepare(" ".join([LONG_TEXT] * 10)), voices["a"])
    outputs = engine.submit(request)
    next(outputs)
    assert engine.abort(request.request_id)
    with pytest.raises(GenerationCancelledError):
        list(outputs)
    assert not engine.abort(request.request_id)  # ended: nothing left to stop


# ----- model loading errors -------------------------------------------------------------------


def test_missing_model_file_is_named(model_dir, tmp_path):
    partial = tmp_path / "partial"
    (partial / "onnx").mkdir(parents=True)
    for src in model_dir.rglob("*"):
        if src.is_file() and "language_model.onnx_data" not in src.name:
            dst = partial / src.relative_to(model_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    with pytest.raises(ModelLoadError, match=r"language_model\.onnx_data"):
        TTSEngine(TTSConfig(model_dir=partial, model_dtype="fp32"))


def test_unknown_dtype(model_dir):
    with pytest.raises(ModelLoadError, match="unknown model dtype"):
        TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="int3"))


def test_watermark_without_perth_fails_at_start(model_dir):
    if importlib.util.find_spec("perth") is not None:
        pytest.skip("resemble-perth is installed here")
    with pytest.raises(ModelLoadError, match="resemble-perth"):
        TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", apply_watermark=True))


# ----- token-window streaming ---------------------------------------------------------------

STREAM_TEXT = "Here is a sentence that is long enough to be spoken in several windows of tokens. And a second one."


def chunked(engine: TTSEngine, text: str, voice) -> GenerationRequest:
    return GenerationRequest(engine.prepare(text), voice, chunked=True)


@pytest.mark.slow
def test_stream_chunks_add_up_to_each_piece(engine, voices):
    chunks = list(engine.submit(chunked(engine, STREAM_TEXT, voices["a"])))
    finals = [c for c in chunks if c.result is not None]
    whole_pieces = list(engine.submit(GenerationRequest(engine.prepare(STREAM_TEXT), voices["a"])))
    assert [c.piece.text for c in finals] == [p.piece.text for p in whole_pieces]
    for final in finals:
        own = [c for c in chunks if c.piece == final.piece]
        assert own[-1] is final and all(c.result is None for c in own[:-1])
        alone = engine.synthesize(final.piece.text, voices["a"])
        assert final.result.speech_tokens.tolist() == alone.speech_tokens.tolist()
        assert sum(c.waveform.shape[0] for c in own) == alone.waveform.shape[0]
    first_piece_chunks = [c for c in chunks if c.piece == finals[0].piece]
    assert len(first_piece_chunks) >= 3
    # the first chunk left after STREAM_FIRST_CHUNK_TOKENS tokens (minus the held crossfade tail)
    assert first_piece_chunks[0].waveform.shape[0] == 12 * SAMPLES_PER_TOKEN - 480


@pytest.mark.slow
def test_stream_seams_do_not_click(engine, voices):
    streamed = engine.synthesize(STREAM_TEXT, voices["a"], chunked=True).waveform
    whole = engine.synthesize(STREAM_TEXT, voices["a"]).waveform
    # a click is a sample-to-sample jump far beyond what the tones themselves contain
    assert np.abs(np.diff(streamed)).max() <= 1.5 * np.abs(np.diff(whole)).max()


def test_stream_abort_stops_between_steps(engine, voices):
    request = chunked(engine, STREAM_TEXT, voices["a"])
    chunks = engine.submit(request)
    next(chunks)
    assert engine.abort(request.request_id)
    with pytest.raises(GenerationCancelledError):
        next(chunks)
