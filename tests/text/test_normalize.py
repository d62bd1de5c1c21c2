import pytest

from chatterbox_server.text.normalize import EMPTY_TEXT_REPLACEMENT, TAGS, normalize_text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", EMPTY_TEXT_REPLACEMENT),
        ("hello world", "Hello world."),
        ("several   spaces\there  ", "Several spaces here."),
        # upstream capitalises before collapsing whitespace, so a leading space blocks it
        ("  lower", "lower."),
        # upstream replaces after collapsing, so "…" leaves a double space
        ("Wait… what", "Wait,  what."),
        ("Note: this", "Note, this."),
        ("A—B–C", "A-B-C."),
        ("one , two", "One, two."),
        ("“Quoted” and ‘single’", "\"Quoted\" and 'single'."),
        ("Already ends!", "Already ends!"),
        ("Question?", "Question?"),
        ("Trailing dash -", "Trailing dash -"),
        ("Ends with comma,", "Ends with comma,"),
    ],
)
def test_normalize_matches_upstream_rules(raw, expected):
    assert normalize_text(raw) == expected


def test_tags_pass_through_unchanged():
    text = "[clear throat] well: hi [laugh] there… [chuckle]"
    out = normalize_text(text)
    assert out == "[clear throat] well, hi [laugh] there,  [chuckle]."
    for tag in ("[clear throat]", "[laugh]", "[chuckle]"):
        assert tag in out


def test_every_tag_survives():
    for tag in TAGS:
        assert tag in normalize_text(f"say {tag} now")
    assert len(TAGS) == 19
