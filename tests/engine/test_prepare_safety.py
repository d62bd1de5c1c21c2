"""Request preparation's safety rules (issue "Reliability round 3"): invisible characters never
make pieces, whatever the clean-up settings (finding 6), and typed text never becomes a control
token, while the tags stay tags (finding 8)."""

import pytest
from tokenizers import Tokenizer

from chatterbox_server.engine.prepare import RequestPlanner
from chatterbox_server.engine.prompt import TextTokenizer
from chatterbox_server.errors import InvalidInputError
from chatterbox_server.text.cleanup import CleanupRules

EOT_ID = 50_256
LAUGH_ID = 50_275


@pytest.fixture(scope="module")
def tokenizer(model_dir) -> TextTokenizer:
    return TextTokenizer(Tokenizer.from_file(str(model_dir / "tokenizer.json")))


@pytest.fixture(params=[True, False], ids=["cleanup-on", "cleanup-off"])
def planner(request, tokenizer) -> RequestPlanner:
    rules = CleanupRules() if request.param else CleanupRules.off()
    return RequestPlanner(tokenizer, max_new_tokens=1024, repetition_penalty=1.2, cleanup=rules)


@pytest.mark.parametrize("text", ["\u200b" * 4999, "\ufeff\u2060\u200c\u200d\u00ad" * 900, "\x00\x01\u202e\u2066"])
def test_text_of_invisible_characters_is_empty(planner, text):
    with pytest.raises(InvalidInputError, match="text is empty: it holds only invisible characters"):
        planner.prepare(text)


def test_invisible_characters_between_words_make_the_same_pieces(planner):
    plain = "Hello there. How are you today? I am fine, thanks."
    hidden = "Hello\u200b there.\u200b How\ufeff are\u2060 you today?\u200b\u200b I am\u00ad fine,\u200c thanks."
    expected, got = planner.prepare(plain), planner.prepare(hidden)
    assert got.text == expected.text
    assert [p.piece for p in got.pieces] == [p.piece for p in expected.pieces]
    assert [p.token_ids.tolist() for p in got.pieces] == [p.token_ids.tolist() for p in expected.pieces]


def test_typed_end_of_text_is_spoken_as_text_and_tags_stay_tags(planner):
    for text in ["Hi <|endoftext|> there.", "<|endoftext|>"]:
        ids = [i for p in planner.prepare(text).pieces for i in p.token_ids.tolist()]
        assert EOT_ID not in ids, text
    ids = planner.prepare("Hi [laugh] there.").pieces[0].token_ids.tolist()
    assert LAUGH_ID in ids
