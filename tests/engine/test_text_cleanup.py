"""The text clean-up in the engine: every request is cleaned before it is split (prepare.py), and
pause markup becomes exact silence in the audio (requests.RequestState.deliver), streamed or whole."""

import pytest

from chatterbox_server.errors import InvalidInputError, ModelLoadError
from tts_engine import GenerationRequest, SpeechCollector, TTSConfig, TTSEngine

RATE = 24_000


@pytest.fixture(scope="module")
def engine(model_dir) -> TTSEngine:
    return TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))


@pytest.fixture(scope="module")
def voice(engine, voice_a):
    return engine.encode_clip(voice_a)


def test_every_request_is_cleaned_before_it_is_split(engine):
    plan = engine.prepare('## Plan\n**Hi** there "friend" (laughs) 😀 see https://www.example.com/x.')
    assert plan.text == "Plan. Hi there friend [laugh] see example.com."
    assert all(plan.text[p.piece.start : p.piece.end] == p.piece.text for p in plan.pieces)
    assert "".join(p.piece.text for p in plan.pieces).replace(" ", "") == plan.text.replace(" ", "")


def test_a_text_cleanup_removes_entirely_is_the_empty_text_error(engine):
    for text in ["😀" * 50, "[pause:1s] [pause:2s]", "```\ncode only", "**  **"]:
        if text.startswith("```"):
            assert engine.prepare(text).text == "Code omitted."
            continue
        with pytest.raises(InvalidInputError, match="text is empty once cleaned up"):
            engine.prepare(text)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("mark, seconds", [("[pause:0.5s]", 0.5), ("[pause:250ms]", 0.25), ('<break time="1s"/>', 1.0)])
def test_pause_markup_is_exact_silence_in_the_audio(engine, voice, chunked, mark, seconds):
    plan = engine.prepare(f"Hello there, my friend. {mark} And now, goodbye to you. [pause:0.1s]")
    assert plan.text == "Hello there, my friend. And now, goodbye to you."
    assert [p.pause_after_s for p in plan.pieces] == [seconds, 0.1]
    collector = SpeechCollector()
    for output in engine.submit(GenerationRequest(plan, voice, chunked=chunked)):
        collector.add(output)
    result = collector.result()
    first, second = result.pieces
    silence = round(seconds * RATE)
    assert first.waveform.shape[0] == first.result.waveform.shape[0] + silence  # the speech, then the pause
    assert not first.waveform[-silence:].any()  # exact zeros
    assert first.pause_s == pytest.approx(silence / RATE)
    assert second.start_s == pytest.approx(first.end_s)  # the next piece starts after the silence
    assert second.waveform.shape[0] == second.result.waveform.shape[0] + round(0.1 * RATE)
    assert result.waveform.shape[0] == first.waveform.shape[0] + second.waveform.shape[0]
    assert result.audio_duration_s == pytest.approx(second.end_s)


def test_synthesize_takes_the_pause_too(engine, voice):
    result = engine.synthesize("One more time, please. [pause:2s] Thank you very much.", voice)
    first = result.pieces[0]
    assert first.waveform.shape[0] - first.result.waveform.shape[0] == 2 * RATE
    assert result.pieces[1].start_s == pytest.approx(first.end_s)


def test_cleanup_off_speaks_the_text_as_given(model_dir):
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", text_cleanup=False))
    try:
        plan = engine.prepare("**Hi** there [pause:1s] friend 😀")
        assert plan.text == "**Hi** there [pause:1s] friend 😀"
        assert [p.piece.text for p in plan.pieces] == ["**Hi** there [pause:1s] friend 😀"]
        assert all(p.pause_after_s == 0 for p in plan.pieces)
    finally:
        engine.close()


def test_each_step_has_its_switch(model_dir):
    config = TTSConfig(model_dir=model_dir, model_dtype="fp32", cleanup_emoji=False, pause_markup=False)
    rules = config.generation.cleanup_rules()
    assert not rules.emoji and not rules.pause_markup and rules.markdown and rules.symbols


def test_a_bad_lexicon_line_stops_the_engine_at_start(model_dir, tmp_path):
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("SQL = sequel\nnginx engine x\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match=r"lexicon .*lexicon\.txt line 2"):
        TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", lexicon_path=lexicon))
    lexicon.write_text("SQL = sequel\nnginx\tengine x\n", encoding="utf-8")
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32", lexicon_path=lexicon))
    try:
        assert engine.prepare("Put SQL behind nginx today.").text == "Put sequel behind engine x today."
    finally:
        engine.close()
