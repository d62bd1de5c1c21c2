"""The stand-in's GPT-2-style byte-level BPE tokenizer: GPT-2's special id 50256 and the 19 tags
at 50257-50275, trained on a small built-in corpus."""

from __future__ import annotations

import json
import logging

from chatterbox_server.model.stand_in.graphs import EOT_ID, MAX_POSITIONS, TAGS, TEXT_VOCAB

log = logging.getLogger(__name__)

_CORPUS = """\
The voice on the other end of the line was calm, clear and warm. She said that the weather would
change by the evening, so we packed our coats, a thermos of hot tea and a small book of poems.
Speech synthesis turns written text into spoken audio. A good system reads numbers like 1984, 3.14
and $25.99 naturally, pauses at commas, raises its pitch for questions, and stresses the important
words. Why does it matter? Because people listen to long articles, news, stories and messages while
they drive, cook, walk or work. Hello! How are you today? I'm fine, thanks -- and you? We'll see.
It's a beautiful morning in the city: children laughing, dogs barking, the smell of fresh bread from
the bakery around the corner, and the quiet hum of traffic far away. Once upon a time there lived a
king who loved music more than gold. Every night his musicians played until the candles burned out.
Please call me back at your earliest convenience; the meeting has been moved to Thursday at 10 am.
Scientists discovered that the brain processes rhythm, melody and language in overlapping regions.
Our new product is faster, smarter and more affordable than ever before. Order now and save twenty
percent! The train to London departs from platform nine. Mind the gap between the train and the
platform. Thank you for your patience, your call is important to us. What a wonderful surprise, I
never expected to see you here! She whispered: don't be afraid, everything will be all right.
"""


def _training_text() -> list[str]:
    """Corpus lines plus simple morphological variants, so BPE learns a few thousand merges."""
    words = sorted({w.strip(".,!?;:\"'$-").lower() for w in _CORPUS.split()} - {""})
    variants = []
    for w in words:
        variants += [w, w.capitalize(), w.upper(), "un" + w]
        variants += [w + end for end in ("s", "ed", "ing", "ly", "er")]
    lines = [" ".join(variants[i : i + 12]) for i in range(0, len(variants), 12)]
    return _CORPUS.splitlines() + lines


def build_tokenizer():
    """GPT-2-style byte-level BPE: 0..50255 regular, 50256 <|endoftext|>, 50257..50275 the tags."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=8000, min_frequency=1, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab: dict = spec["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in spec["model"]["merges"]]
    for i in range(len(vocab), EOT_ID):  # unreachable filler entries up to id 50255
        vocab[f"<|stand_in_filler_{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    assert tok.get_vocab_size() == TEXT_VOCAB and tok.token_to_id(TAGS[-1]) == TEXT_VOCAB - 1
    log.info("tokenizer: %d learned merges, vocab %d", len(merges), tok.get_vocab_size())
    return tok


def _tokenizer_config() -> dict:
    added = {str(EOT_ID): {"content": "<|endoftext|>", "special": True}}
    for i, tag in enumerate(TAGS):
        added[str(EOT_ID + 1 + i)] = {"content": tag, "special": False}
    for entry in added.values():
        entry.update(lstrip=False, rstrip=False, normalized=False, single_word=False)
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": MAX_POSITIONS,
        "tokenizer_class": "GPT2Tokenizer",
    }
