"""Passwords, API keys and tokens: known token formats, keyword assignments, entropy after keywords.

1. Known formats, reported wherever they appear (confidence 1.0): AWS access key ids
   (`AKIA…`/`ASIA…` + 16), GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`),
   Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`) and webhooks, Stripe secret/restricted
   keys (`sk_live_`, `sk_test_`, `rk_…`), Google API keys (`AIza` + 35), OpenAI-style `sk-…` keys
   (0.9, token-shaped only), PEM private-key blocks (whole block), JWTs (`eyJ….eyJ….sig`).
2. Keyword assignments: a password word (`password`, `passwd`, `pwd`, `pw`, `pass`, `passphrase`,
   `passcode`; `Passwort`, `Kennwort`, `mot de passe`, `contraseña`, `senha`, `wachtwoord`, `hasło`,
   `lösenord`, `salasana`) or a key word (`secret`, `token`, `api_key`, `access_key`, `private_key`,
   `client_secret`, `auth_token`, …), possibly the last part of a longer identifier
   (`DB_PASSWORD`, `spring.datasource.password`, `x-api-key`, `dbPassword`), then `:`, `=`, `:=`,
   `=>`, `==`, in prose `is`/`was` ("the password for the wifi is …"; also `ist`, `war`, `lautet`,
   `est`, `es`, `era`, `é`, `jest`, `är`), or nothing but a space
   ("auth token 3f9a…", "with password Xy9!…", confidence 0.75); also `--password x`,
   `<password>x</password>`, `scheme://user:x@host`, `Bearer x`, `Basic x` when x decodes to
   `user:password`, and on a command line `-p x`/`-px` next to a `-u`/`--user` flag on the same line
   (without one, `-p` is a port) or `curl -u user:x`. The span is the value alone.
3. Gates on the value: placeholders are never secrets (`********`, `<password>`, `${DB_PASSWORD}`,
   `${API_KEY:?unset}`, `$(cmd)`, `{{ vault.pw }}`, `changeme`, `required`, `os.environ[…]`,
   paths); after a key word the value must look like a token — 10+ characters from a token
   alphabet, Shannon entropy ≥ 3 bits/char (a little less for 10–12 characters), not a plain
   word — so "a token of my love" and "the secret is out" stay prose; after a password word
   anything password-like counts, but in prose (`is`) or after a bare `:` a plain word only counts
   when it ends the line or field. With no operator at all, a key word needs a token of 16+
   characters and a password word (not `pass`, which is English first) letters mixed with digits.
4. In an error message only (`PasswordShapeDetector`, not `unlearn scan`): a password with no keyword,
   by its shape — a piece of a word (split at spaces, quotes, `/`, `\\`, `_`, `=`, `-`) of 8–64
   characters with an ASCII capital, small letter, digit and one of `! # $ % & ? ~ ^ |` (or its
   full-width form), an `@` not before a digit nor before a small-letter word that ends the piece nor in
   a URL's authority, or a lone `*` between letters or digits, not URL-encoded (`Tr0ub4dor&3`,
   `Summer2024!`, `P@ssw0rd2024` given as a feature name); or a passphrase joined by `-`, `.` or `_`
   (`Horse-battery-Staple42`, also glued to small letters behind: `Horse-battery-Staple42abc.csv`).
   Reported as detector `password` (masked as a secret), which loses every overlap; what the winner
   leaves of it is masked on its own.
"""

from __future__ import annotations

import base64
import math
import re
import string
from collections import Counter

from unlearning.detect.base import Match, resolve_overlaps, search_windows, windows_around

_NOT_TOKEN_CHAR = r"(?![A-Za-z0-9_\-])"
# a JWT after its `eyJ`: header, payload and signature segments
_JWT_REST = r"[A-Za-z0-9_\-]{8,}+\.eyJ[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]{16,}+" + _NOT_TOKEN_CHAR
# Each pattern starts with its literal prefix, which lets `re` skip ahead fast; the left boundary
# (no token character right before) is checked in Python instead of by a leading lookbehind. A format
# whose alphabet is narrower than a token's ends where its alphabet does: an AWS key glued to lower-case
# letters ("/x/AKIAIOSFODNN7EXAMPLEabc.csv") or a GitHub token to '_' or '-' ("ghp_…_v2") is one; an AWS
# key's fixed length says where it ends before digits glued behind ("/data/AKIAIOSFODNN7EXAMPLE1.csv").
TOKEN_FORMATS: tuple[tuple[str, re.Pattern, float], ...] = tuple(
    (name, re.compile(pattern), confidence)
    for name, pattern, confidence in (
        ("aws_access_key_id", r"(?:AKIA|ASIA)[0-9A-Z]{16}(?=[0-9]*+(?![0-9A-Z]))", 1.0),
        ("github_token", r"gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9])", 1.0),
        ("github_pat", r"github_pat_[A-Za-z0-9_]{50,255}(?![A-Za-z0-9_])", 1.0),
        ("slack_token", r"xox[bpars]-[A-Za-z0-9\-]{10,250}" + _NOT_TOKEN_CHAR, 1.0),
        ("slack_webhook", r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}", 1.0),
        ("stripe_key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,99}" + _NOT_TOKEN_CHAR, 1.0),
        ("google_api_key", r"AIza[0-9A-Za-z_\-]{35}" + _NOT_TOKEN_CHAR, 1.0),
        ("openai_key", r"sk-(?:proj-)?[A-Za-z0-9_\-]{20,200}" + _NOT_TOKEN_CHAR, 0.9),
        ("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{1,16384}?"
                        r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", 1.0),
        # Possessive (a segment's characters exclude its dot: giving some back never helps), and
        # started only where no token character comes before its `eyJ`: in a run of `eyJeyJ…` every
        # `eyJ` would start it and read the run to its end — quadratic (64 KiB took 3 s, 1 MiB
        # minutes). One glued to a word in front is looked for by `glued_jwt_starts`.
        ("jwt", r"eyJ(?<![A-Za-z0-9_\-]eyJ)" + _JWT_REST, 1.0),
    )
)  # fmt: skip
# The formats whose prefix no word ends with: an error message unglues one glued to a word in front
# ("keyAKIAIOSFODNN7EXAMPLE", unlearning.detect.scan). Not Stripe's or OpenAI's: "task_test_…",
# "disk-Backup-2024-…" end words with `sk_test_` and `sk-`.
GLUED_FORMATS = frozenset({"aws_access_key_id", "github_token", "github_pat", "slack_token", "google_api_key", "jwt"})
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "_-")
_NEEDS_TOKEN_SHAPE = {"openai_key"}  # "sk-learn-contrib-…" is a package name, not a key

# English first, then the words people paste in other languages (de, fr, es, pt, nl, pl, sv, fi).
PASSWORD_WORDS = (
    r"pass(?:word|wd|phrase|code)?|pwd|pw"
    r"|passwort|kennwort|mot de passe|contrase[ñn]a|senha|wachtwoord|has[łl]o|l[öo]senord|salasana"
)
KEY_WORDS = (
    r"secret|token|api[_\-]?key|apikey|(?:access|secret|private|signing|encryption|master|app|client)[_\-]?key"
)
# The keyword ends the identifier and starts a word, a camelCase hump, or — for the long, unambiguous
# words only — may be glued to a prefix (`PGPASSWORD`, `csrftoken`; but `bypass`, `compass` are not).
_KEYWORD = (
    r"(?:(?<![A-Za-z0-9])|(?<=[a-z0-9])(?=[A-Z])|(?=(?i:passw(?:or)?d|secret|token)))"
    r"(?P<kw>(?i:" + PASSWORD_WORDS + "|" + KEY_WORDS + r"))(?![A-Za-z0-9])"
)
_PROSE_VERBS = "is|was|ist|lautet|war|est|es|era|é|jest|är"  # "Mein Passwort ist …", "mi contraseña es …"
_OPERATOR = (
    r"(?P<op>[\"'\]]{0,2}[ \t]*(?::=|=>|==|=|:)[ \t]*"
    r"|[ \t]+(?:(?:for|of|to|on)[ \t]+(?:[\w'@.\-]+[ \t]+){0,4}?)?(?i:" + _PROSE_VERBS + r")(?:[ \t]*:)?[ \t]+"
    r"|[ \t]+)"  # no operator at all ("auth token 3f9a…", "with password Xy9!…"): strictest gates
)
_VALUE = r"""(?P<value>"[^"\n]{1,256}"|'[^'\n]{1,256}'|`[^`\n]{1,256}`|[^\s"'`<>,;]{1,256})"""
_ASSIGNMENT = re.compile(_KEYWORD + _OPERATOR + _VALUE)
_FLAG = re.compile(r"(?<![\w\-])--(?:[A-Za-z0-9]+-)*(?P<kw>(?i:" + PASSWORD_WORDS + "|" + KEY_WORDS
                   + r"))[ \t]+(?P<value>[^\s\-][^\s]{0,255})")
# The tag prefix is one flat class (a nested `(?:[a-z]+[_.]?)*` backtracks exponentially).
_XML = re.compile(r"<(?P<tag>[A-Za-z0-9_.\-:]{0,64}?(?P<kw>(?i:" + PASSWORD_WORDS + "|" + KEY_WORDS
                  + r")))>(?P<value>[^<\n]{1,256})</(?P=tag)>")
_URL_PASSWORD = re.compile(r"://[^\s:/@]{0,64}:(?P<value>[^\s@/]{1,128})@")  # redis://:pw@host too
_BEARER = re.compile(r"(?<![A-Za-z])(?i:bearer)[ \t]+(?P<value>[A-Za-z0-9_\-.~+/]{10,}=*)")
# HTTP basic credentials: base64 of "user:password" (checked by decoding, so "basic 1234…" is not one).
_BASIC = re.compile(r"(?<![A-Za-z])(?i:basic)[ \t]+(?P<value>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")
# Command lines: `-p VALUE`/`-pVALUE` is a password only when the same command names a user with
# `-u`/`--user` (docker login, mysql); without one, `-p` is a port (ssh, psql) or a path.
# `curl -u user:password` carries it after the colon.
_SHORT_PASSWORD_FLAG = re.compile(r"(?<![\w\-])-p[ \t]*(?P<value>[^\s\-][^\s]{0,255})")
_USER_FLAG = re.compile(r"(?<![\w\-])(?:-u|--user(?:name)?)(?:[ \t]+|=)[^\s\-]")
_USER_COLON_PASSWORD = re.compile(
    r"(?<![\w\-])(?:-u|--user)(?:[ \t]+|=)[^\s:\-][^\s:]{0,63}:(?P<value>[^\s\"']{1,128})")
_PORT_LIKE = re.compile(r"[\d:.]+")  # "-p 8080:80", "-p 2222"

PLACEHOLDER_WORDS = frozenset(
    "none null nil undefined empty required optional true false yes no string str redacted hidden "
    "masked secret secrets password passwords passwd pwd token tokens key changeme change_me example "
    "sample test dummy placeholder todo tbd n/a na unset notset default foo bar baz bearer basic "
    "incorrect invalid wrong expired reset missing same different correct strong weak ok".split()
)
_PLACEHOLDER_SHAPES = re.compile(
    r"<[^>]*>|\[[^\]]*\]|\{[^}]*\}|\$\{[^}]*\}|\$\([^)]*\)|%\(\w+\)s|%s|\{\{.*\}\}|\$[A-Z_][A-Z0-9_]*"
)
_CODE_REFERENCE = re.compile(
    r"(?i:os\.environ|os\.getenv|getenv|process\.env|env\[|env\(|vault:|secrets\.|settings\.|config\.)"
    r"|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*[(\[]"  # a call or subscript: input(...), request.args[...]
    r"|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$"  # an attribute path: self.password
)
_NAMES_ITSELF = re.compile(r"(?i)[a-z_\-]*(?:password|passwd|secret|token|key|example|placeholder|here)[a-z_\-]*")
_PATH = re.compile(r"(?:/|~/|\./|\.\./|[A-Za-z]:\\)")
_TOKEN_ALPHABET = re.compile(r"[^\s\"'`<>]+")  # one printable run: Django keys carry !@#%^&*()
_KEYWORD_STEM = re.compile(  # every keyword (and `basic`, `-p`, `-u`) contains one
    r"pass|pwd|pw|secret|token|key|bearer|basic|kennwort|contrase|senha|wachtwoord|has[łl]o|senord|salasana"
    r"|-[pu][ \t=]|--user"
)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_WINDOW_BEFORE, _WINDOW_AFTER = 64, 400  # longest identifier prefix; keyword + operator + value
_NEXT_QUERY_FIELD = re.compile(r"&[A-Za-z_][\w.\-]*=")  # "pwd=x&user=bob": the value stops at "&user="
_FIELD_END = re.compile(r"[ \t]*(?:$|[,;}\]\"'#]|//)", re.MULTILINE)
TOKEN_MIN_LENGTH, PASSWORD_MIN_LENGTH, ENTROPY_BITS = 10, 4, 3.0
UNMARKED_TOKEN_MIN_LENGTH = 16
FORMAT, ASSIGNED, PROSE, UNMARKED = 1.0, 0.95, 0.85, 0.75


def shannon_entropy(value: str) -> float:
    """Bits per character of the value's own character distribution."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values()) if n else 0.0


def is_placeholder(value: str) -> bool:
    """A stand-in for a secret rather than a secret: stars, templates, env lookups, paths, words."""
    low = value.lower()
    return (
        len(set(low)) <= 1
        or "***" in value or "…" in value or "..." in value or "xxxx" in low
        or low in PLACEHOLDER_WORDS
        or bool(_PLACEHOLDER_SHAPES.fullmatch(value))
        or bool(_CODE_REFERENCE.match(value))
        or bool(_NAMES_ITSELF.fullmatch(value))
        or bool(_PATH.match(value))
        or low.startswith(("your", "http://", "https://", "${", "$(", "{{"))  # "${API_KEY:?must be set}"
    )


def looks_like_token(value: str) -> bool:
    """Random-looking enough to be a key: token alphabet, length, entropy, not a plain word."""
    if len(value) < TOKEN_MIN_LENGTH or not _TOKEN_ALPHABET.fullmatch(value):
        return False
    floor = min(ENTROPY_BITS, math.log2(len(value)) - 0.6)  # short strings cannot reach 3 bits/char
    return shannon_entropy(value) >= floor and _mixed(value)


def _mixed(value: str) -> bool:
    """Has a digit, or capitals after the first letter: random strings almost always do, words rarely."""
    return any(c.isdigit() for c in value) or (any(c.isupper() for c in value[1:]) and any(c.islower() for c in value))


def _fully_mixed(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isupper() for c in value) and any(c.islower() for c in value)


def looks_like_password(value: str) -> bool:
    """Not a plain word: a digit, a symbol or a capital after the first letter."""
    return len(value) >= PASSWORD_MIN_LENGTH and (
        not value.isalpha() or any(c.isupper() for c in value[1:])
    )


class SecretDetector:
    name = "secret"
    priority = 30

    def find(self, text: str) -> list[Match]:
        windows = keyword_windows(text)
        matches = (format_matches(text) + self._assignments(text, windows) + self._wrapped(text, windows)
                   + self._basic_auth(text, windows) + self._command_line(text, windows))
        return resolve_overlaps(matches)

    def _assignments(self, text: str, windows: list[tuple[int, int]]) -> list[Match]:
        out = []
        for m in search_windows(_ASSIGNMENT, text, windows):
            start, end = _unquoted_span(m, text)
            value = text[start:end]
            confidence = _assignment_confidence(m, value, text, end)
            if confidence:
                out.append(Match(self.name, start, end, confidence))
        return out

    def _wrapped(self, text: str, windows: list[tuple[int, int]]) -> list[Match]:
        """Flags, XML elements, URL userinfo and bearer headers: the delimiters say where the value is."""
        out = []
        for pattern, password_kind in ((_FLAG, None), (_XML, None), (_URL_PASSWORD, True), (_BEARER, False)):
            found = pattern.finditer(text) if pattern is _URL_PASSWORD else search_windows(pattern, text, windows)
            for m in found:
                start, end = _unquoted_span(m, text)
                value = text[start:end]
                is_password = password_kind if password_kind is not None else _is_password_word(m.group("kw"))
                ok = (len(value) >= PASSWORD_MIN_LENGTH if is_password else looks_like_token(value))
                if ok and not is_placeholder(value) and not is_placeholder(m.group("value")):
                    out.append(Match(self.name, start, end, ASSIGNED))
        return out


    def _basic_auth(self, text: str, windows: list[tuple[int, int]]) -> list[Match]:
        return [Match(self.name, *m.span("value"), ASSIGNED)
                for m in search_windows(_BASIC, text, windows) if _decodes_to_credentials(m.group("value"))]

    def _command_line(self, text: str, windows: list[tuple[int, int]]) -> list[Match]:
        out = []
        for m in search_windows(_SHORT_PASSWORD_FLAG, text, windows):
            if _USER_FLAG.search(_line_of(text, m.start())) and _flag_value_ok(m.group("value")):
                out.append(Match(self.name, *m.span("value"), ASSIGNED))
        for m in search_windows(_USER_COLON_PASSWORD, text, windows):
            start, end = _unquoted_span(m, text)
            if _flag_value_ok(text[start:end]):
                out.append(Match(self.name, start, end, ASSIGNED))
        return out


def format_matches(text: str) -> list[Match]:
    """Tokens of the known formats (1.): reported wherever they appear, after no token character."""
    return [
        Match(SecretDetector.name, m.start(), m.end(), confidence)
        for kind, pattern, confidence in TOKEN_FORMATS
        for m in pattern.finditer(text)
        if (m.start() == 0 or text[m.start() - 1] not in _TOKEN_CHARS)
        and (kind not in _NEEDS_TOKEN_SHAPE or _fully_mixed(m.group()))
    ]


class TokenFormatDetector:
    """The secret detector's known formats alone, without its keyword rules: what an error message
    looks for where it put a space between a token and the word glued in front (unlearning.detect.scan),
    a space that would make an assignment of what follows a keyword ("passwordDE12": "password DE12")."""

    name = SecretDetector.name
    priority = SecretDetector.priority

    def find(self, text: str) -> list[Match]:
        return format_matches(text)


def glued_token_starts(text: str) -> list[int]:
    """Where a token of a `GLUED_FORMATS` format starts right after a token character, which
    `SecretDetector` takes for the middle of a longer word."""
    return [m.start() for kind, pattern, _ in TOKEN_FORMATS if kind in GLUED_FORMATS and kind != "jwt"
            for m in pattern.finditer(text) if m.start() and text[m.start() - 1] in _TOKEN_CHARS] + glued_jwt_starts(text)


_WORD = re.compile(r"[A-Za-z0-9_\-]+")
_JWT_AT = re.compile(r"eyJ" + _JWT_REST)


def glued_jwt_starts(text: str) -> list[int]:
    """JWTs glued to a word in front ("tokeneyJhbGci…"): tried once per word, at its first `eyJ`
    after its first character (a JWT's own segments start with `eyJ` too), so that the text is read
    a bounded number of times whatever it holds."""
    out = []
    for word in _WORD.finditer(text):
        inner = text.find("eyJ", word.start() + 1, word.end())
        if inner > 0 and _JWT_AT.match(text, inner):
            out.append(inner)
    return out


def _decodes_to_credentials(value: str) -> bool:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    user, colon, password = decoded.partition(":")
    return bool(colon and user and password) and decoded.isprintable()


def _line_of(text: str, offset: int) -> str:
    end = text.find("\n", offset)
    return text[text.rfind("\n", 0, offset) + 1:end if end >= 0 else len(text)]


def _flag_value_ok(value: str) -> bool:
    return len(value) >= PASSWORD_MIN_LENGTH and not _PORT_LIKE.fullmatch(value) and not is_placeholder(value)


def keyword_windows(text: str) -> list[tuple[int, int]]:
    """Stretches of text around every keyword stem, where assignments can be.

    Case-insensitive patterns crawl in `re` (1 s for 5 MB); one case-sensitive pass over the
    lower-cased text finds the stems fast, and the full patterns then run on these windows only.
    """
    low = text.lower()
    if len(low) != len(text):  # a character whose lower case is longer would shift offsets
        low = text.translate(_ASCII_LOWER)
    return windows_around(_KEYWORD_STEM.finditer(low), _WINDOW_BEFORE, _WINDOW_AFTER)


def _is_password_word(keyword: str) -> bool:
    return re.fullmatch(PASSWORD_WORDS, keyword, re.IGNORECASE) is not None


def _unquoted_span(m: re.Match, text: str) -> tuple[int, int]:
    """The value's span without its quotes, or, unquoted, without trailing sentence punctuation."""
    start, end = m.span("value")
    if text[start] in "\"'`" and end - start >= 2 and text[end - 1] == text[start]:
        return start + 1, end - 1
    next_field = _NEXT_QUERY_FIELD.search(text, start, end)
    end = next_field.start() if next_field else end
    while end > start and text[end - 1] in ".:)]}?":  # "!" stays: "Summer2024!" is a common password
        end -= 1
    return start, end


def _assignment_confidence(m: re.Match, value: str, text: str, end: int) -> float:
    if not value or is_placeholder(value) or is_placeholder(m.group("value").strip("\"'`")):
        return 0.0
    op = m.group("op").strip()
    quoted = text[m.start("value")] in "\"'`"
    password = _is_password_word(m.group("kw"))
    if not op:  # keyword, spaces, value: only unmistakable values
        return UNMARKED if _unmarked_value_ok(value, m.group("kw")) else 0.0
    prose = re.fullmatch(_PROSE_VERBS, op.lower().rstrip(":").strip()) is not None or " " in op
    if not password:
        return (PROSE if prose else ASSIGNED) if looks_like_token(value) else 0.0
    if prose:
        return PROSE if looks_like_password(value) else 0.0
    bare_colon = op.endswith(":") and not quoted
    if bare_colon and not looks_like_password(value):
        return ASSIGNED if len(value) >= PASSWORD_MIN_LENGTH and _FIELD_END.match(text, end) else 0.0
    return ASSIGNED if len(value) >= PASSWORD_MIN_LENGTH else 0.0


def _unmarked_value_ok(value: str, keyword: str) -> bool:
    if not _is_password_word(keyword):
        return len(value) >= UNMARKED_TOKEN_MIN_LENGTH and looks_like_token(value)
    if keyword.lower() == "pass":  # English first: "pass along!", "pass over_"
        return False
    return len(value) >= PASSWORD_MIN_LENGTH and any(c.isalpha() for c in value) and any(c.isdigit() for c in value)


# --- a password with no keyword, in an error message only (unlearning.detect.scan.find_in_message) --------
# A message quotes what the user gave, and a password given as a name has no keyword before it. What is
# masked is a piece of a word — split at spaces, quotes, path separators and `_ = -` — of 8–64 characters
# holding an ASCII capital, small letter, digit and one of these symbols, none of it URL-encoded (`%3D`).
# bench.names_and_passwords measured the symbols: `- _ . / : @ + = ( ) [ ] { } < >` are in the names users
# give (`Llama-3.1-8B-Instruct`, `mAP@0.5:0.95`, `Qwen2.5-0.5B`), `*` in masked values (`@` and `*` count
# where guarded, below); and the pieces (`R&D_Spend_2023` → `R&D`, `Spend`, `2023`; `CPU%_p95`).
PASSWORD_SYMBOLS = "!#$%&?~^|！＃＄％＆？～＾｜"  # and their full-width forms (a CJK keyboard's `！`)
# `@` and `*` count only where names and masked values do not put them (bench.names_and_passwords measured
# the guards): an `@` after a letter or digit, not before a digit (`Precision@10`, `mAP@0.5:0.95`), another
# `@` (a mangled C++ symbol, `start@@3PAEA`) nor a small-letter word ending the piece (an MLflow alias:
# `models:/Adult2024@production`; a decorator, a host), and not in a URL's authority (`password_shaped`); a
# lone `*` between letters or digits in a piece with no bracket (masked values star runs: `****1234`,
# `j***@e******.com`; code multiplies: `20*np.log10(np.abs(H`). `+ = . , ; :` stay out: versions, file
# names, key=value, lists and times put them in names (`1.9.0.dev0+Unknown`, `Report2023.xlsx`, `12:30:00`).
_GUARDED_AT = re.compile(r"(?<=[A-Za-z0-9])[@＠](?![0-9０-９@＠]|[a-z]+$)")
_LONE_STAR = re.compile(r"(?<=[A-Za-z0-9])[*＊](?=[A-Za-z0-9])")
_BRACKET = re.compile(r"[()\[\]{}]")
PASSWORD_LENGTH = (8, 64)
_PIECE_SEPARATORS = "\\s'\"`/\\\\_=\\-"
# At a piece's start only (a position inside one fails the lookbehind at once), with a symbol among its
# first 64 characters: only candidates reach Python, and a 1 MiB word is read once.
_PASSWORD_PIECE = re.compile(rf"(?<![^{_PIECE_SEPARATORS}])(?=[^{_PIECE_SEPARATORS}]{{8}})"
                             rf"(?=[^{_PIECE_SEPARATORS}]{{0,63}}?[{re.escape(PASSWORD_SYMBOLS)}@＠*＊])"
                             rf"[^{_PIECE_SEPARATORS}]++")
_QUERY_KEY = re.compile(r"[&?][A-Za-z_]\w*$")  # "?page=2&PerPage=50": a URL query's next key, before its '='
_URL_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_LEADING, _TRAILING = "([{<,;:", ")]}>,;:."


def password_shaped(value: str, url_authority: bool = False) -> bool:
    """An ASCII capital, small letter, digit and password symbol (or a guarded `@`, `*`), 8–64 characters,
    not URL-encoded. In a URL's authority (after `//`) an `@` ends the user info, which the secret detector
    judges (`://user:password@host`): counted there, it would mask the host and port as the password's rest."""
    low, high = PASSWORD_LENGTH
    return (low <= len(value) <= high and any(c in string.ascii_uppercase for c in value)
            and any(c in string.ascii_lowercase for c in value) and any(c in string.digits for c in value)
            and (any(c in PASSWORD_SYMBOLS for c in value) or _has_guarded_symbol(value, at=not url_authority))
            and not _URL_ENCODED.search(value))


def _has_guarded_symbol(value: str, at: bool = True) -> bool:
    """An `@` (if `at`) or a lone `*` placed as a password puts it, not as a name, a masked value or code does."""
    return (at and _GUARDED_AT.search(value) is not None) or (_LONE_STAR.search(value) is not None
                                                              and _BRACKET.search(value) is None)


# A passphrase joined by `-`, `.` or `_` (`Horse-battery-Staple42`) has no symbol but its joiner, which model,
# package and column names use too. bench.names_and_passwords measured what tells it apart: three or more
# words of 3+ letters, one Capitalised after one in small letters (names capitalise every word or the first:
# `Meta-Llama-3-70B`, `Sentence_case`, `cutlass.Float16`), and 1–4 digits glued to the last (`Staple42`),
# the end of the word or before 2+ small letters glued behind (`/x/Staple42abc.csv`, left printed): not one
# letter (`torch.ao.nn.quantized.Conv1d`) nor a capital (`pandas.errors.Pandas4Warning`).
# Started only where no letter and joiner come before (a position inside a chain fails the lookbehinds at
# once) and read possessively: a 1 MiB chain is read once.
_PASSPHRASE = re.compile(r"(?<![A-Za-z0-9])(?<![A-Za-z][\-._])[A-Za-z]++(?:[\-._][A-Za-z]++)*+\d{1,4}+"
                         r"(?=[a-z]{2,}+(?![A-Za-z0-9])|(?![A-Za-z0-9]))")
_JOINERS = re.compile(r"[\-._]")
PASSPHRASE_WORDS = 3


def passphrase_shaped(value: str) -> bool:
    """Three or more words of 3+ ASCII letters joined by `-`, `.` or `_`, a Capitalised one after one in small
    letters, 1–4 digits glued to the last word of 3+ letters, 8–64 characters in all."""
    low, high = PASSWORD_LENGTH
    words = _JOINERS.split(value.rstrip(string.digits))
    if not low <= len(value) <= high or len(words[-1]) < 3 or sum(len(w) >= 3 for w in words) < PASSPHRASE_WORDS:
        return False
    first_small = next((i for i, w in enumerate(words) if len(w) >= 3 and w.islower()), len(words))
    return any(len(w) >= 3 and w[0].isupper() and w[1:].islower() for w in words[first_small + 1:])


class PasswordShapeDetector:
    """Pieces of a message shaped as a password with no keyword (`Tr0ub4dor&3`, `Summer2024!`,
    `kX9#mQ2$vL7p`, `P@ssw0rd2024` given as a feature name), and passphrases joined by `-`, `.` or `_`
    (`Horse-battery-Staple42`, glued to small letters behind or not): for messages only, whose words are
    names, paths and numbers; prose and data (`unlearn scan`) hold such pieces for other reasons."""

    name = "password"  # masked as a secret is (fixed width); no priority: every other match wins an overlap
    confidence = 0.6

    def find(self, text: str) -> list[Match]:
        out = []
        for piece in _PASSWORD_PIECE.finditer(text):
            start, end = piece.span()
            key = _QUERY_KEY.search(text, start, end)
            if key and text.startswith("=", end):
                end = key.start()
            while start < end and text[start] in _LEADING:
                start += 1
            while end > start and text[end - 1] in _TRAILING:
                end -= 1
            in_authority = piece.start() >= 2 and text.startswith("//", piece.start() - 2)  # scheme://user:pw@host
            if password_shaped(text[start:end], url_authority=in_authority):
                out.append(Match(self.name, start, end, self.confidence))
        out += [Match(self.name, *m.span(), self.confidence) for m in _PASSPHRASE.finditer(text)
                if passphrase_shaped(m.group())]
        return out
