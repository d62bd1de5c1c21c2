"""The text tokenizer as user text may use it: the tags are tokens, the control tokens are not.

`tokenizer.json` marks `<|endoftext|>` (50256) special, and by default HF tokenizers turn that
string into its id wherever it appears in the input: a user who types `<|endoftext|>` writes an
end-of-text into the prompt. The library's own switch, `Tokenizer.encode_special_tokens = True`,
makes it encode special tokens in the input as the plain text they spell (`<`, `|`, `end`, ...),
and leaves the non-special added tokens, the paralinguistic tags (`[laugh]` = 50275), matched as
before. What the post-processor adds (the contract's two trailing `<|endoftext|>`, where a
tokenizer has them) is not input and still comes.

So that the tags keep working on a tokenizer.json that marks them special too, they are made
non-special first (in the tokenizer's own serialised form), never by editing the user's text.
"""

import json
import logging
from collections.abc import Iterable

from tokenizers import Tokenizer

from chatterbox_server.text.normalize import TAGS

logger = logging.getLogger(__name__)


def guard_special_tokens(tokenizer: Tokenizer, tags: Iterable[str] = TAGS) -> Tokenizer:
    """`tokenizer` made safe for user text: special tokens in the text are encoded as text, the
    `tags` stay single tokens. Returns the same object (switched) unless a tag had to be made
    non-special, then a rebuilt copy."""
    tag_set = frozenset(tags)
    spec = json.loads(tokenizer.to_str())
    special_tags = [t for t in spec.get("added_tokens", []) if t.get("content") in tag_set and t.get("special")]
    for token in special_tags:
        token["special"] = False
    if special_tags:
        logger.info("tokenizer: %d tags marked special, made ordinary tokens so text can use them", len(special_tags))
        tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.encode_special_tokens = True
    return tokenizer


def special_token_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """The ids of the tokenizer's special (control) added tokens, which text must never produce."""
    return frozenset(i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special)
