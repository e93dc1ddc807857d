"""The one exception type for problems a user can cause and fix."""

import functools
import unicodedata
from collections.abc import Callable


class UnlearnError(ValueError):
    """Bad input: the message is one line saying what is wrong and how to fix it.

    The CLI prints it as-is and exits with code 2; nothing is written before it can be raised.
    What it prints is `shown(message)`: a value the message quotes that the detectors take for a
    card number, an e-mail address, an IBAN, a key, a phone number or, by its shape alone, a password
    is masked, never printed.
    """

    def __str__(self) -> str:
        # Kept: a flow's failure is shown by Prefect's state, its log and the CLI, and masking a
        # message that quotes a name of a request file's 1 MiB cap takes about a second.
        cached = self.__dict__.get("_shown")
        if cached is None or cached[0] is not self.args:
            cached = self._shown = (self.args, shown(super().__str__()))
        return cached[1]

    def __repr__(self) -> str:  # a traceback, a log line or a Prefect state may show the repr
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self):  # pickled (a Dask worker's error, a persisted state): the shown message only
        state = {k: v for k, v in self.__dict__.items() if k != "_shown"}
        return type(self), (str(self),), state or None


def shown(message: str) -> str:
    """What a message may print: secrets masked, control characters escaped, at most MAX_MESSAGE long."""
    return shortened(printable(masked(message)))


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """An exception as the one line kept or printed about a failure: the reason the ledger keeps for a
    failed request, a rolled-back or unpurged model version's tag and the certificate's entry, a
    task runner's warning. Masked as an UnlearnError's message is, because any exception may quote
    what the user gave (a KeyError of a column name, an OSError of a path, a client's error of an
    address) — and before it is cut, so that no cut leaves a secret's first digits whole. Its first
    line only: a library's later lines quote the input whole (pydantic's `input_value='Jane Doe, 12
    Elm Street'`), which no detector knows for personal data, and a ledger keeps its reasons for good.
    Control characters escaped, at most `limit` characters."""
    lines = masked(str(exc)).strip().splitlines()
    text = printable(" ".join(lines[0].split())) if lines else ""
    return text[:limit] or type(exc).__name__


def mask_in_place(exc: BaseException) -> None:
    """`exc`, and the exceptions it was raised from, with the text they carry masked in place (their
    type, errno and traceback unchanged): a Prefect task that fails records the exception's message
    in its run state and logs it with its chain into Prefect's database, where a library's error
    quoting a user's value (a path holding a card number) stayed whole. An UnlearnError shows itself
    masked already."""
    seen = set()
    while exc is not None and id(exc) not in seen and len(seen) < 16:
        seen.add(id(exc))
        if not isinstance(exc, UnlearnError):
            try:
                exc.args = tuple(masked(a) if isinstance(a, str) else a for a in exc.args)
                for name in ("filename", "filename2", "strerror"):
                    if isinstance(getattr(exc, name, None), str):
                        setattr(exc, name, masked(getattr(exc, name)))
            except (AttributeError, TypeError):
                pass  # an exception whose text cannot be set: left as it is
        exc = exc.__cause__ or exc.__context__


def masking_failures(fn: Callable) -> Callable:
    """`fn`, whose exception leaves it masked in place (mask_in_place): what a Prefect task or flow
    run that fails records of it (tasks.common.step, flows.runs.flow)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            mask_in_place(exc)
            raise
    return run


def masked(text: str) -> str:
    """`text` with every value the detectors of `unlearn scan` find replaced by its masked form.

    A message quotes what the user gave — a feature, a model, a column, a method, a record id — and an
    unknown name holding a card number or an e-mail address was printed whole on stderr, in Prefect's
    flow-run state and in the reason the ledger keeps. Masking every message in this one place leaves
    what users need: the detectors flagged none of 10,000 generated run ids, digests, data versions,
    commits, fingerprints, UUIDs, paths (also ones holding Unix times and job numbers), names with a
    number glued to them (`run_<Unix ms>`, `sha256_<hex>`), ISO timestamps, request ids, version
    numbers, record ids, the project's MLflow experiment ids or feature, column, model and dataset
    names in message templates, nor any of the 754 distinct messages the unit and CLI bad-input tests
    raise (`python -m bench.error_masking`). A card or phone number glued to a letter or '_'
    (`/data/card_4111111111111111.csv`) is masked too, as is an IBAN or a key glued to a word in front
    (`keyAKIAIOSFODNN7EXAMPLE`), and no word or number next to a card or phone number excuses it
    (`id 555-123-4567`, `4111111111111111 4012888888881881`). 86 of 10,000 random 11–13-digit numeric ids
    (87 glued to a word) are also valid card numbers, and show only their last 4 digits, as do 30 in
    10,000 of an MLflow file store's 18-digit experiment ids in the benchmark's messages (a folder of
    digits right under `mlruns/` is printed as written). A password with no keyword given as a name
    is not masked: no rule measured there tells it from legitimate names.
    """
    if _masker is None:  # not reached: the package's __init__ sets it right after importing this module
        raise RuntimeError("unlearning.errors: no masker set (import the unlearning package)")
    return _masker(text)


# The detectors raise UnlearnError themselves, so this module cannot import them (the library has no
# import loops): the unlearning package's __init__ hands them over once, as the function below.
_masker: Callable[[str], str] | None = None


def mask_messages_with(masker: Callable[[str], str]) -> None:
    global _masker
    _masker = masker


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
