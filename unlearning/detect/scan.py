"""The detector registry and `scan_text`, which turns raw matches into safe findings.

Overlaps: when spans from different detectors overlap, one survives, chosen by detector priority
iban (50) > card (40) > secret (30) > email (20) > phone (10) > anything unregistered (0), then
confidence, then length. Checksummed, structured formats win over looser ones: a card number is
never also reported as a phone number, and an e-mail-looking `user:pw@host` inside a URL is the
secret detector's password. In a message a password found by its shape alone (`password`, unregistered)
loses every overlap, and the part of it the winner leaves is masked too (`find_in_message`).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from unlearning.detect.allowlist import Allowlist
from unlearning.detect.base import Detector, Finding, Match, resolve_overlaps
from unlearning.detect.cards import CardDetector
from unlearning.detect.emails import EmailDetector
from unlearning.detect.iban import IbanDetector, iban_starts
from unlearning.detect.masking import check_salt, fingerprint, mask
from unlearning.detect.phones import PhoneDetector
from unlearning.detect.secrets import PasswordShapeDetector, SecretDetector, TokenFormatDetector, glued_token_starts
from unlearning.errors import UnlearnError

DETECTORS: dict[str, Detector] = {
    d.name: d for d in (CardDetector(), SecretDetector(), EmailDetector(), PhoneDetector(), IbanDetector())
}


def register_detector(detector: Detector, replace: bool = False) -> None:
    """Add a detector (e.g. a wrapper around an optional back-end) to the registry."""
    if not isinstance(detector, Detector):
        raise UnlearnError("a detector needs a `name` and a `find(text) -> list[Match]` method")
    if detector.name in DETECTORS and not replace:
        raise UnlearnError(f"a detector named '{detector.name}' is already registered (pass replace=True)")
    DETECTORS[detector.name] = detector


def selected_detectors(names: Iterable[str] | None) -> list[Detector]:
    if names is None:
        return list(DETECTORS.values())
    names = list(names)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise UnlearnError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
    return [DETECTORS[n] for n in dict.fromkeys(names)]


def priorities() -> dict[str, int]:
    return {name: getattr(d, "priority", 0) for name, d in DETECTORS.items()}


def find_matches(text: str, detectors: Iterable[str] | None = None) -> list[Match]:
    """Every selected detector's matches with overlaps resolved, sorted by start. Raw positions."""
    matches = [m for d in selected_detectors(detectors) for m in d.find(text)]
    return resolve_overlaps(matches, priorities())


# A message's quoted values ('…', "…", `…`: what `!r` and the CLI's hints quote): a path there ends at the quote.
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"|`([^`\n]+)`")
# A path's parts are judged on their own too: quoted or not ("checkpoint /ckpt/4111111111111111 does not
# exist", argparse's "unrecognized arguments: --base /ckpt/…"), a number right after a '/' is no card or
# phone number to the detectors, which take it for a part of a URL or a file name.
_UNQUOTED_TOKEN = re.compile(r"[^\s'\"`]+")
_PATH_SEPARATORS = re.compile(r"[/\\]")
_PATH_PART = re.compile(r"[^/\\]+")
# Only the digit-based detectors miss a value after a '/'; a part with fewer digits than the shortest
# phone number holds neither, and is not scanned (a message may quote a path of a 1 MiB name).
_PART_MIN_DIGITS = 9
_UNQUOTED_SPILL = 24  # the rest of a phone or card number written with spaces: "+44 20 7946 0958"
_SPILL_STOP = re.compile(r"[\n/\\]")  # the line's end, or the path's next part ("/data/4111 1111 1111 1111/model")
MESSAGE_DETECTORS = tuple(DETECTORS)  # the built-in ones: stdlib only, fast, never failing on a message
# What judges a message, and each part of a path alone: the message quotes what the user gave,
# so no word next to a number excuses it as an order, invoice or ISBN ("id 555-123-4567", "order
# +44 20 7946 0958" given as a feature name), and no number next to it makes a card number one of a
# list ("4111111111111111 4012888888881881") or a phone number part of a run too long to be one ("+44 20
# 7946 0958 4012888888881881"). `unlearn scan` keeps both rules (DETECTORS).
_IN_MESSAGES = {"card": CardDetector(excused_by_words=False, excused_by_neighbours=False),
                "phone": PhoneDetector(excused_by_words=False, excused_by_neighbours=False)}
# And a password given as a name, with no keyword before it: a message's words are names, paths and numbers
# (unlearning.detect.secrets.PasswordShapeDetector); `unlearn scan` reads prose and data, and has none.
_PASSWORD_SHAPES = PasswordShapeDetector()
# A number, its digits grouped or not, also by a `+` or an area code ("tel+14155552671",
# "export(415) 555-2671"): glued to a letter or '_', only the card and phone detectors miss it.
_NUMBER = re.compile(r"[+(]?\d(?:[ ().\-/]{0,3}\d)*\)?")
_WORD_CHARACTER = re.compile(r"[^\W\d]")  # a letter or '_'
# A letters-and-digits word that is a digest: hex of a digest's length (MLflow run ids and DVC md5s are
# 32, sha256 64, fingerprints 24), or a UUID. A shorter hex word is the user's ("cafe4111111111111111.csv");
# a git short hash (12 at most) holds no 13-digit run.
_DIGEST = re.compile(r"(?<![^\W_])(?:[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"
                     r"|(?=[0-9]*[A-Fa-f])[0-9A-Fa-f]{24,})(?![^\W_])")


def find_in_message(text: str) -> list[Match]:
    """What the detectors find in an error message: in the whole text, and in each part of a path
    alone; and values glued to a letter or '_'.

    With no word or number next to a card or phone number excusing it (`_IN_MESSAGES`): "id column
    '4111 1111 1111 1111'", "id 555-123-4567" or "order '+44 20 7946 0958'" name another kind of number
    to the context-aware detectors, which let such numbers go, as they let go a card number between
    others; and words inside a quoted value excuse nothing either ('order +44 20 7946 0958' is what the
    user gave). A path's part alone, because a number right after a '/' is none to them
    ("/ckpt/4111111111111111"). Glued ("/data/card_4111111111111111.csv", "export4111111111111111_v2",
    "acctDE89370400440532013000", "keyAKIAIOSFODNN7EXAMPLE"), because they start a value only at a
    character that is no letter, digit or '_' (`_found_unglued`). And every other occurrence of a value
    found: a message may repeat it where no detector sees it. And pieces shaped as a password with no
    keyword (`_PASSWORD_SHAPES`), where no other match covers them. Overlaps resolved, sorted by start.
    """
    matches = (_found_alone(text, [(0, len(text)), *_path_spans(text, _quoted_spans(text))]) + _found_unglued(text)
               + _PASSWORD_SHAPES.find(text))
    matches += _repeats(text, matches)
    kept = resolve_overlaps(matches, priorities())
    return sorted(kept + _password_rests(kept, [m for m in matches if m.detector == _PASSWORD_SHAPES.name]),
                  key=lambda m: m.start)


def _password_rests(kept: list[Match], passwords: list[Match]) -> list[Match]:
    """The parts of password-shaped pieces that the `kept` matches (sorted, disjoint) leave uncovered: a
    password is found by its shape alone, and loses every overlap, but a value glued to it must not
    leave it printed ("Summer2024!4111111111111111": the card number is masked as one, the rest as a
    password)."""
    starts = [m.start for m in kept]
    rests = set()
    for password in passwords:
        at, i = password.start, max(0, bisect.bisect_right(starts, password.start) - 1)
        while i < len(kept) and kept[i].start < password.end:
            if kept[i].end > at:
                if kept[i].start > at:
                    rests.add((at, kept[i].start))
                at = kept[i].end
            i += 1
        if at < password.end:
            rests.add((at, password.end))
    return resolve_overlaps([Match(_PASSWORD_SHAPES.name, s, e, _PASSWORD_SHAPES.confidence) for s, e in rests])


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    quoted = []
    for q in _QUOTED.finditer(text):
        group = next(i for i in (1, 2, 3) if q.group(i) is not None)
        quoted.append(q.span(group))
    return quoted


def _path_spans(text: str, quoted: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans of each part of a path, in the `quoted` spans or not, with digits enough for a card or
    phone number."""
    parts = [part for start, end in quoted if _PATH_SEPARATORS.search(text, start, end)
             for part in _path_parts(text, start, end)]
    return parts + [part for token in _UNQUOTED_TOKEN.finditer(text) if _PATH_SEPARATORS.search(token.group())
                    for part in _path_parts(text, token.start(), token.end(), spill=_UNQUOTED_SPILL)]


def _path_parts(text: str, start: int, end: int, spill: int = 0) -> list[tuple[int, int]]:
    """Spans of the parts of the path text[start:end] with digits enough for a card or phone number.
    The last runs on up to `spill` characters past `end`, to the line's end or the path's next part: a
    path not quoted ends at a space to the tokenizer, a card number's groups do not
    ("--base /ckpt/4111 1111 1111 1111")."""
    spans = [(part.start(), part.end()) for part in _PATH_PART.finditer(text, start, end)]
    if spans and spill and spans[-1][1] == end:
        stop = _SPILL_STOP.search(text, end, end + spill)
        spans[-1] = (spans[-1][0], stop.start() if stop else min(end + spill, len(text)))
    return [(s, e) for k, (s, e) in enumerate(spans)
            if sum(c.isdigit() for c in text[s:e]) >= _PART_MIN_DIGITS and not _experiment_folder(text, spans, k)]


# The folders MLflow keeps an experiment's runs in, named by the experiment's id: `mlruns/<id>/<run id>/`
# in a file store, `mlflow-artifacts:/<id>/<run id>/` behind a tracking server.
_EXPERIMENT_FOLDER_PARENTS = frozenset({"mlruns", "mlflow-artifacts:"})


def _experiment_folder(text: str, parts: list[tuple[int, int]], k: int) -> bool:
    """Whether the k-th of a path's `parts` is an MLflow experiment's folder: digits only, right under
    `mlruns/`. A file store's experiment ids are 18 random digits, 1 in 260 a card number as far as its
    digits tell; a card number the user typed lands there only if MLflow made it an experiment's id."""
    start, end = parts[k]
    return k > 0 and text[start:end].isdigit() and text[slice(*parts[k - 1])] in _EXPERIMENT_FOLDER_PARENTS


def _found_alone(text: str, spans: list[tuple[int, int]], detectors: Iterable[Detector] | None = None
                 ) -> list[Match]:
    """Matches in each span of `text` judged alone by `detectors` (None: a message's), at the span's first
    occurrence: `_repeats` finds the others (a 1 MiB name may spell one path part 100,000 times)."""
    if detectors is None:
        detectors = [_IN_MESSAGES.get(name, DETECTORS[name]) for name in MESSAGE_DETECTORS]
    out = []
    for value, start in {text[s:e]: s for s, e in reversed(spans)}.items():
        found = (m for detector in detectors for m in detector.find(value))
        out += [replace(m, start=m.start + start, end=m.end + start) for m in found] if start else list(found)
    return out


def _found_unglued(text: str) -> list[Match]:
    """Values glued to a letter or '_', found with a space put between the two: to the detectors, as to
    `unlearn scan`, "id4111111111111111" or "keyAKIAIOSFODNN7EXAMPLE" is an identifier, but a message
    quoting "/data/card_4111111111111111.csv" or "export4111111111111111_v2" prints what the user gave,
    and the digits are a card number as far as anyone can tell. Numbers are unglued on either side and
    judged by the card and phone detectors; the starts of IBANs and of known token formats in front,
    judged by the IBAN detector and the secret detector's formats, apart: an IBAN's check digits are a
    number glued to its country code. Only the values a space was put beside are kept (the others are
    the whole message's), and none inside a digest (`_hex_spans`)."""
    return [m for glue, detectors in _GLUES for m in _found_at_cuts(text, _glue_cuts(text, glue), detectors)]


def _found_at_cuts(text: str, cuts: list[int], detectors: tuple[Detector, ...]) -> list[Match]:
    """What `detectors` find beside a space put at each of the sorted `cuts` in `text`, judged
    as a message is, its path parts alone too; at the positions in `text`."""
    if not cuts:
        return []
    unglued = " ".join(text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]))
    spaces = [cut + i for i, cut in enumerate(cuts)]  # where the spaces stand in `unglued`
    put = set(spaces)
    found = _found_alone(unglued, [(0, len(unglued)), *_path_spans(unglued, _quoted_spans(unglued))], detectors)

    def original(position: int) -> int:
        return position - bisect.bisect_left(spaces, position)

    return [replace(m, start=original(m.start), end=original(m.end))
            for m in found if m.start - 1 in put or m.end in put]


def _number_glue(text: str) -> list[int]:
    """Where a letter or '_' touches a number with digits enough for a card or phone number."""
    cuts = []
    for number in _NUMBER.finditer(text):
        start, end = number.span()
        if sum(c.isdigit() for c in number.group()) < _PART_MIN_DIGITS:
            continue
        cuts += [start] if start and _WORD_CHARACTER.match(text, start - 1) else []
        cuts += [end] if _WORD_CHARACTER.match(text, end) else []
    return cuts


# What a token format takes for the middle of a word when it comes right before the token: a letter, '_'
# or '-' ("ab-AKIAIOSFODNN7EXAMPLE").
_TOKEN_GLUE = re.compile(r"[^\W\d]|-")


def _value_start_glue(text: str) -> list[int]:
    """Where a letter, '_' or '-' touches the start of an IBAN of a known country or of a token of a
    distinctive format in front ("acctDE89370400440532013000", "tokenghp_…", "ab-AKIA…")."""
    starts = iban_starts(text) + glued_token_starts(text)
    return [at for at in starts if at and _TOKEN_GLUE.match(text, at - 1)]


# Each glue, with the detectors that judge what ungluing it shows: for a token, its format alone (a space
# put after a keyword would make an assignment of what follows it: "passwordDE12").
_GLUES: tuple[tuple[Callable[[str], list[int]], tuple[Detector, ...]], ...] = (
    (_number_glue, (_IN_MESSAGES["card"], _IN_MESSAGES["phone"])),
    (_value_start_glue, (IbanDetector(), TokenFormatDetector())))


def _glue_cuts(text: str, glue: Callable[[str], list[int]]) -> list[int]:
    """The cuts `glue` finds in `text` outside digests (`_hex_spans`); sorted."""
    cuts = sorted(set(glue(text)))
    if not cuts:
        return cuts
    hexes = _hex_spans(text)
    if not hexes:
        return cuts
    starts = [s for s, _ in hexes]
    return [c for c in cuts if not _inside(hexes, starts, c)]


def _hex_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the digests in `text` (a run id, a commit, a fingerprint, a UUID): 1 in 3,000 sha256
    digests holds a run of 13–19 decimal digits that is a Luhn-valid card-shaped number."""
    return [d.span() for d in _DIGEST.finditer(text)]


def _inside(spans: list[tuple[int, int]], starts: list[int], position: int) -> bool:
    """Whether `position` falls strictly inside one of the disjoint sorted `spans`."""
    i = bisect.bisect_right(starts, position) - 1
    return i >= 0 and spans[i][0] < position < spans[i][1]


def _repeats(text: str, matches: list[Match]) -> list[Match]:
    """Every occurrence in `text` of the values `matches` cover, as a match of the same detector."""
    found = {text[m.start:m.end]: m for m in matches}
    return [replace(found[value], start=at, end=at + len(value)) for value, at in _occurrences(text, list(found))]


def _occurrences(text: str, values: list[str]) -> list[tuple[str, int]]:
    """(value, where) of each occurrence of `values` in `text`. In one pass over the text, with a regex
    shaped as the values' trie: a message of 1 MiB may hold 58,000 distinct card numbers, and looking
    for each in the whole text took 36 s. A trie too deep for the regex compiler (values prefixes of one
    another hundreds of times over) is looked for value by value."""
    if len(values) < 2:
        return [(value, at) for value in values for at in _starts(text, value)]
    try:
        with _cyclic_gc_paused():
            pattern = re.compile(f"(?=({_trie_pattern(values)}))", re.DOTALL)
    except (RecursionError, re.error):
        return [(value, at) for value in values for at in _starts(text, value)]
    return [(m.group(1), m.start()) for m in pattern.finditer(text)]


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (if on) while `re` compiles a values' trie: its parser allocates
    millions of lists for the 61,000 card numbers of a 1 MiB message, none of them in a cycle, and the
    collections it set off took half the compile and grew with the pattern (1.2 s → 2.4 s for 64,000)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _starts(text: str, value: str) -> Iterable[int]:
    at = text.find(value)
    while at >= 0:
        yield at
        at = text.find(value, at + len(value))


def _trie_pattern(values: Iterable[str]) -> str:
    """A regex matching any of `values`, the longest first where several start at the same place: the
    values' trie, read off the sorted values (a trie of dicts took 180 MB and 2.2 s for the 61,000
    distinct card numbers of a 1 MiB message, growing faster than the values)."""
    ordered = sorted(set(values))
    return _range_pattern(ordered, 0, len(ordered), 0)


def _range_pattern(values: list[str], lo: int, hi: int, depth: int) -> str:
    """The trie pattern of the sorted values[lo:hi], which share their first `depth` characters, from there."""
    first, last = values[lo], values[hi - 1]
    shared = depth  # the range's common prefix is its first and last value's
    while shared < min(len(first), len(last)) and first[shared] == last[shared]:
        shared += 1
    ends_here = len(first) == shared  # a value that is the common prefix sorts first
    branches, at = [], lo + ends_here
    while at < hi:
        after = bisect.bisect_right(values, values[at][shared], at, hi, key=lambda value: value[shared])
        branches.append(_range_pattern(values, at, after, shared))
        at = after
    chain = re.escape(first[depth:shared])
    if not branches:
        return chain
    either = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return chain + (f"(?:{either})?" if ends_here else either)


def masked_message(text: str) -> str:
    """`text` with what `find_in_message` finds replaced by its masked form (unlearning.errors.masked)."""
    parts, end = [], 0
    for m in find_in_message(text):
        parts += [text[end:m.start], mask(text[m.start:m.end], m.detector)]
        end = m.end
    return "".join(parts) + text[end:]


def scan_text(text: str, salt: bytes, detectors: Iterable[str] | None = None,
              allowlist: Allowlist | None = None, *,
              min_confidence: float | Mapping[str, float] = 0.0) -> list[Finding]:
    """Findings in `text`, sorted by start.

    Allowlisted values and matches below `min_confidence` (one number, or one per detector name)
    are dropped after overlaps are resolved, so an allowlisted card does not resurface as the
    phone number it also resembles. E.g. `min_confidence={"card": 0.9}` reports only card
    numbers with a card word nearby.
    """
    check_salt(salt)
    findings = []
    for m in find_matches(text, detectors):
        if m.confidence < _threshold(min_confidence, m.detector):
            continue
        value = text[m.start:m.end]
        tag = fingerprint(value, m.detector, salt)
        if allowlist is not None and allowlist.allows(value, m.detector, tag):
            continue
        findings.append(Finding(m.detector, m.start, m.end, mask(value, m.detector), tag, m.confidence))
    return findings


def _threshold(min_confidence: float | Mapping[str, float], detector: str) -> float:
    if isinstance(min_confidence, Mapping):
        return float(min_confidence.get(detector, 0.0))
    return float(min_confidence)


# What record ids may not be: ids go whole into certificates, MLflow and the append-only ledger, which
# keep them for good (docs/compliance.md: "record ids and salted hashes, never personal values"). These
# detectors found nothing in 100,000 random ids (UUIDs, hex digests, 20-character tokens, customer
# numbers, 11–13-digit numbers); cards and phones flag about 1 % of long numeric ids and are left out.
PERSONAL_ID_DETECTORS = ("email", "iban", "secret")


def refuse_personal_ids(ids: Iterable[str], where: Callable[[int, str], str], fix: str,
                        kept: str = "record ids are kept whole in certificates and the append-only ledger") -> None:
    """UnlearnError (one line, no value printed) when a record id holds an e-mail address, an IBAN or
    a secret: `--id email` made the people's addresses the ids every erasure records for good; an image's
    path or an npz's ids likewise. `where(row, detector)` says which id (`row`: its 1-based position)
    holds what, `fix` what to give instead; `kept` why it may not (names that are not ids: class names)."""
    for row, value in enumerate(ids, start=1):
        found = find_matches(str(value), PERSONAL_ID_DETECTORS)
        if found:
            raise UnlearnError(f"{where(row, found[0].detector)}: {kept}; {fix}")


def refuse_personal_id_column(ids: Iterable[str], column: str) -> None:
    """refuse_personal_ids for a table's or text file's `--id` column."""
    refuse_personal_ids(ids, lambda row, detector: f"id column '{column}' holds personal data ({detector} in data "
                                                   f"row {row})",
                        "give a surrogate id column (e.g. a customer number), or leave out --id to have ids assigned")
