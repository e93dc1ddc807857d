"""The user-error type: what it prints is safe to put on a terminal."""

from unlearning.errors import UnlearnError


def test_control_characters_a_message_quotes_are_printed_as_escapes():
    err = UnlearnError("channel 'a\x1b[2J\x1b]0;owned\x07b' is not a short token")
    assert str(err) == "channel 'a\\x1b[2J\\x1b]0;owned\\x07b' is not a short token"
    assert str(UnlearnError("delete 'José' — ok")) == "delete 'José' — ok"  # printable text stays as written


def test_a_line_break_a_message_quotes_is_printed_as_an_escape():
    """A request's `model: "a\\nb"` or `revoke_features: ["a\\nb"]` is quoted by the error unescaped
    (`unlearn train a<newline>b`): the one-line message became two lines."""
    err = UnlearnError("unknown model 'a\\nb' — train one with `unlearn train a\nb`")
    assert str(err) == "unknown model 'a\\nb' — train one with `unlearn train a\\nb`" and "\n" not in str(err)
    assert str(UnlearnError("a\tb")) == "a\tb"  # a tab does not break the line


def test_format_characters_that_reorder_or_hide_text_are_printed_as_escapes():
    assert str(UnlearnError("id 'a\u202eb\u200bc' unknown")) == "id 'a\\u202eb\\u200bc' unknown"


def test_separators_surrogates_and_tags_beyond_the_basic_plane_are_escaped_unambiguously():
    text = str(UnlearnError("id 'a\u2028b\udcffc\U000e0001' unknown"))
    assert text == "id 'a\\u2028b\\udcffc\\U000e0001' unknown"
    text.encode("utf-8")  # a lone surrogate printed raw could not be written to the terminal


def test_a_long_quoted_name_is_cut_in_the_middle_keeping_what_is_wrong_and_how_to_fix_it():
    """A request file may name a feature of up to its 1 MiB cap: the error printed it whole on one line."""
    from unlearning.errors import MAX_MESSAGE

    text = str(UnlearnError(f"unknown feature '{'x' * 900_000}' in revoke_features; choose from: age, sex"))
    assert len(text) <= MAX_MESSAGE + 40
    assert text.startswith("unknown feature 'xxx") and text.endswith("; choose from: age, sex")
    assert "characters cut" in text
    short = "unknown feature 'sexx' in revoke_features; choose from: age, sex"
    assert str(UnlearnError(short)) == short
