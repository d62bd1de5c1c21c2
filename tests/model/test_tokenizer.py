"""User text never produces a control token; the tags stay single tokens (model/tokenizer.py;
issue "Reliability round 3", finding 8)."""

import json

import pytest
from tokenizers import Tokenizer

from chatterbox_server.model.tokenizer import guard_special_tokens, special_token_ids
from chatterbox_server.text.normalize import TAGS

EOT_ID = 50_256
FIRST_TAG_ID = 50_257


def stand_in(model_dir) -> Tokenizer:
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def tags_marked_special(model_dir) -> Tokenizer:
    """The stand-in's tokenizer as a tokenizer.json that marks the tags special too would load."""
    spec = json.loads(stand_in(model_dir).to_str())
    for token in spec["added_tokens"]:
        token["special"] = True
    return Tokenizer.from_str(json.dumps(spec))


@pytest.fixture(params=["stand-in", "tags-marked-special"])
def guarded(request, model_dir) -> Tokenizer:
    raw = stand_in(model_dir) if request.param == "stand-in" else tags_marked_special(model_dir)
    return guard_special_tokens(raw)


def test_the_unguarded_tokenizer_would_take_typed_end_of_text(model_dir):
    assert EOT_ID in stand_in(model_dir).encode("Hi <|endoftext|> there").ids  # the hole this closes


def test_typed_special_tokens_are_text(guarded):
    special = special_token_ids(guarded)
    assert EOT_ID in special
    for text in ["<|endoftext|>", "Hi <|endoftext|> there", "<|endoftext|><|endoftext|>[laugh]"]:
        ids = guarded.encode(text).ids
        assert not special & set(ids), text
        assert guarded.decode(ids) == text  # spoken as the text it is, nothing removed


def test_every_tag_is_still_its_own_token(guarded):
    for offset, tag in enumerate(TAGS):
        assert guarded.encode(f"Well {tag} then").ids.count(FIRST_TAG_ID + offset) == 1, tag
