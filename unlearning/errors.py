"""The one exception type for problems a user can cause and fix."""

import unicodedata


class UnlearnError(ValueError):
    """Bad input: the message is one line saying what is wrong and how to fix it.

    The CLI prints it as-is and exits with code 2; nothing is written before it can be raised.
    """

    def __str__(self) -> str:
        return shortened(printable(super().__str__()))


# A message quotes what the user gave (a feature, a class, a model name): a request file may hold a
# name of up to its 1 MiB cap, which used to be printed whole on one line. The middle goes; the start
# (what is wrong) and the end (how to fix it) stay.
MAX_MESSAGE = 2000


def shortened(text: str, limit: int = MAX_MESSAGE) -> str:
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} … [{len(text) - 2 * keep} characters cut] … {text[-keep:]}"


def printable(text: str) -> str:
    """`text` with control characters written as escapes: a message quotes what the user gave
    (a channel, a label, a record id), and an ESC in it would otherwise reach the terminal as a
    command (colours, cursor moves, a rewritten line above the error). Format characters too (Cf:
    a right-to-left override U+202E shows the rest of the line reversed). A line break too: the
    message is one line, also when it quotes a feature or model name written with "\\n" in a request."""
    return "".join(escaped(c) for c in text)


def escaped(c: str) -> str:
    category = unicodedata.category(c)
    if c == "\t" or category not in ("Cc", "Cf", "Cs", "Zl", "Zp"):  # Cs: a lone surrogate of an undecodable name
        return c
    if category == "Cc":
        return repr(c)[1:-1]
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"
