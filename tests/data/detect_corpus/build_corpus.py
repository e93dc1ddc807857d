"""Build the labelled detector corpus: hand-written cases plus seeded synthetic ones.

Cases are written with inline marks, `⟦card:4111 1111 1111 1111⟧`, which `parse_marked` turns
into plain text and expected spans. `build_corpus()` is deterministic; `corpus.json` beside this
file is its snapshot (a test keeps the two in step). Regenerate with

    .venv/bin/python -m tests.data.detect_corpus.build_corpus

Every value here is fictional: generated at random with valid checksums, or a published test
value. Synthetic positives are drawn in the formats people really paste — cards per issuer with
spaces, dashes or nothing; IBANs with computed check digits, spaced or compact; phone numbers per
country; keys in their vendors' formats — and hard negatives in the shapes that fool detectors.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import uuid
from pathlib import Path

import yaml

from unlearning.detect.cards import luhn_valid
from unlearning.detect.iban import iban_check_digits, iban_valid

HERE = Path(__file__).resolve().parent
HANDWRITTEN = (HERE / "handwritten.yaml", HERE / "heldout.yaml", HERE / "heldout2.yaml", HERE / "heldout3.yaml")
CORPUS = HERE / "corpus.json"
SEED = 20240917
_MARK = re.compile(r"⟦(?P<detector>[a-z]+):(?P<value>.*?)⟧", re.DOTALL)

FIRST = ["anna", "jonas", "maria", "li", "tomasz", "fatima", "oliver", "chloe", "mateo", "aiko", "noah",
         "ines", "ravi", "sofia", "lukas", "emma", "kwame", "elena", "pierre", "yuki"]
LAST = ["novak", "becker", "lopez", "wei", "kowalski", "haddad", "smith", "martin", "rossi", "tanaka",
        "obrien", "silva", "patel", "moreau", "schmidt", "jansen", "mensah", "ivanova", "dubois", "kim"]
DOMAINS = ["example.com", "mail.example.org", "acme-corp.co.uk", "uni-heidelberg.de", "startup.io",
           "posteo.net", "example.fr", "web.example.es", "consulting.com.au", "firma.nl"]


# ---------------------------------------------------------------- marks
def parse_marked(marked: str) -> tuple[str, list[dict]]:
    """Plain text and expected spans from a text with ⟦detector:value⟧ marks."""
    out, expected, pos = [], [], 0
    for m in _MARK.finditer(marked):
        out.append(marked[pos:m.start()])
        start = sum(map(len, out))
        out.append(m.group("value"))
        expected.append({"detector": m.group("detector"), "start": start, "end": start + len(m.group("value"))})
        pos = m.end()
    out.append(marked[pos:])
    return "".join(out), expected


def mark(detector: str, value: str) -> str:
    return f"⟦{detector}:{value}⟧"


# ---------------------------------------------------------------- cards
CARD_PREFIXES = [  # (issuer, prefix, length, grouping)
    ("visa", "4", 16, (4, 4, 4, 4)), ("visa", "4", 13, (4, 4, 5)), ("visa", "4", 19, (4, 4, 4, 4, 3)),
    ("mastercard", "51", 16, (4, 4, 4, 4)), ("mastercard", "55", 16, (4, 4, 4, 4)),
    ("mastercard", "2221", 16, (4, 4, 4, 4)), ("mastercard", "2720", 16, (4, 4, 4, 4)),
    ("amex", "34", 15, (4, 6, 5)), ("amex", "37", 15, (4, 6, 5)),
    ("discover", "6011", 16, (4, 4, 4, 4)), ("discover", "65", 16, (4, 4, 4, 4)), ("discover", "644", 16, (4, 4, 4, 4)),
    ("diners", "36", 14, (4, 6, 4)), ("diners", "300", 14, (4, 6, 4)),
    ("jcb", "3530", 16, (4, 4, 4, 4)), ("jcb", "3589", 16, (4, 4, 4, 4)),
    ("unionpay", "62", 16, (4, 4, 4, 4)), ("unionpay", "62", 19, (6, 13)),
    ("maestro", "6759", 16, (4, 4, 4, 4)), ("maestro", "5018", 16, (4, 4, 4, 4)),
]  # fmt: skip


def luhn_complete(rng: random.Random, prefix: str, length: int, valid: bool = True) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    checks = [d for d in string.digits if luhn_valid(body + d) == valid]
    return body + rng.choice(checks)


def grouped(digits: str, groups: tuple[int, ...], sep: str) -> str:
    parts, pos = [], 0
    for g in groups:
        parts.append(digits[pos:pos + g])
        pos += g
    return sep.join(parts)


def card_value(rng: random.Random, i: int) -> str:
    _, prefix, length, groups = CARD_PREFIXES[i % len(CARD_PREFIXES)]
    digits = luhn_complete(rng, prefix, length)
    return grouped(digits, groups, [" ", "-", ""][(i // len(CARD_PREFIXES) + i) % 3])


CARD_TEMPLATES = [
    ("prose", "Please charge the deposit to my credit card {v}, expiry 04/27. Thanks, {name}"),
    ("prose", "I paid with {v} last Tuesday but the refund never arrived."),
    ("log", "2024-05-14T09:12:33Z INFO checkout.payment user_id=4821 pan={v} amount=129.99 EUR status=approved"),
    ("log", "[2023-11-02 17:45:10,231] ERROR gateway: declined card {v} (insufficient funds) order=88213"),
    ("config", '{{"customer": "C-20931", "card_number": "{v}", "exp": "11/26", "cvc": "***"}}'),
    ("csv", "1042,{Name},{v},2027-03,DE"),
    ("csv", "\"{Name}\";\"{v}\";\"VISA\";\"approved\""),
    ("chat", "[10:42] {name}: ok use my card {v} for the tickets"),
    ("chat", "{name}: sure it's {v} exp 09/28, cvv I'll text you"),
    ("email", "Hi,\nthe payment failed again. My card: {v}\nCould you retry?\n{Name}"),
    ("prose", "Card holder {Name}, number {v} 12/25, billing address on file."),
    ("log", "payment_method=card last_attempt=2024-02-29 card={v} retries=3"),
]


# ---------------------------------------------------------------- IBAN
IBAN_FORMATS = {  # country: BBAN layout, "9" digit, "A" upper letter, "X" alphanumeric
    "DE": "999999999999999999", "GB": "AAAA99999999999999", "FR": "9999999999XXXXXXXXXXX99",
    "NL": "AAAA9999999999", "ES": "99999999999999999999", "IT": "A9999999999XXXXXXXXXXXX",
    "BE": "999999999999", "CH": "99999XXXXXXXXXXXX", "AT": "9999999999999999", "PL": "999999999999999999999999",
    "SE": "99999999999999999999", "NO": "99999999999", "DK": "99999999999999", "IE": "AAAA99999999999999",
    "PT": "999999999999999999999", "FI": "99999999999999", "LU": "999XXXXXXXXXXXXX",
}  # fmt: skip


def iban_value(rng: random.Random, i: int) -> str:
    country = sorted(IBAN_FORMATS)[i % len(IBAN_FORMATS)]
    alphabet = {"9": string.digits, "A": string.ascii_uppercase, "X": string.ascii_uppercase + string.digits}
    bban = "".join(rng.choice(alphabet[c]) for c in IBAN_FORMATS[country])
    compact = country + iban_check_digits(country, bban) + bban
    return compact if i % 3 == 2 else " ".join(compact[k:k + 4] for k in range(0, len(compact), 4))


IBAN_TEMPLATES = [
    ("prose", "Please transfer the deposit to {v} (account holder {Name}) by Friday."),
    ("config", '{{"payee": "{Name}", "iban": "{v}", "currency": "EUR"}}'),
    ("csv", "INV-2024-0113;{Name};{v};1.250,00;EUR"),
    ("chat", "{name}: my iban is {v} thx!!"),
    ("email", "Bank details\nBeneficiary: {Name}\nIBAN: {v}\nBIC: DEUTDEFFXXX"),
    ("log", "2024-03-03 08:00:01 INFO sepa.batch payout=312.40 to={v} ref=SALARY-MAR"),
]


# ---------------------------------------------------------------- phones
def _d(rng: random.Random, n: int, first: str = string.digits) -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def phone_value(rng: random.Random, i: int) -> str:
    nxx = lambda: _d(rng, 3, "23456789")  # noqa: E731 - NANP area/exchange codes start with 2-9
    shapes = [
        lambda: f"+1 ({nxx()}) {nxx()}-{_d(rng, 4)}", lambda: f"({nxx()}) {nxx()}-{_d(rng, 4)}",
        lambda: f"{nxx()}-{nxx()}-{_d(rng, 4)}", lambda: f"{nxx()}.{nxx()}.{_d(rng, 4)}",
        lambda: f"+1 {nxx()} {nxx()} {_d(rng, 4)}", lambda: f"1-800-{nxx()}-{_d(rng, 4)}",
        lambda: f"+44 20 {_d(rng, 4)} {_d(rng, 4)}", lambda: f"020 {_d(rng, 4)} {_d(rng, 4)}",
        lambda: f"07{_d(rng, 3)} {_d(rng, 6)}", lambda: f"+44 7{_d(rng, 3)} {_d(rng, 6)}",
        lambda: f"+49 30 {_d(rng, 8)}", lambda: f"030 {_d(rng, 8)}", lambda: f"+49 171 {_d(rng, 7)}",
        lambda: f"0171 {_d(rng, 7)}", lambda: f"030/{_d(rng, 8)}",
        lambda: "+33 " + _d(rng, 1, "1234567") + "".join(f" {_d(rng, 2)}" for _ in range(4)),
        lambda: "0" + _d(rng, 1, "1234567") + "".join(f" {_d(rng, 2)}" for _ in range(4)),
        lambda: "0" + _d(rng, 1, "1234567") + "".join(f".{_d(rng, 2)}" for _ in range(4)),
        lambda: f"+31 6 {_d(rng, 8)}", lambda: f"06-{_d(rng, 8)}", lambda: f"+31 20 {_d(rng, 3)} {_d(rng, 4)}",
        lambda: f"+34 6{_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)}",
        lambda: f"+39 06 {_d(rng, 4)} {_d(rng, 4)}", lambda: f"+39 3{_d(rng, 2)} {_d(rng, 3)} {_d(rng, 4)}",
        lambda: f"+91 9{_d(rng, 4)} {_d(rng, 5)}", lambda: f"+61 2 {_d(rng, 4)} {_d(rng, 4)}",
        lambda: f"04{_d(rng, 2)} {_d(rng, 3)} {_d(rng, 3)}", lambda: f"+81 3-{_d(rng, 4)}-{_d(rng, 4)}",
        lambda: f"03-{_d(rng, 4)}-{_d(rng, 4)}", lambda: f"+55 11 9{_d(rng, 4)}-{_d(rng, 4)}",
        lambda: f"+4420{_d(rng, 8)}", lambda: f"+1{nxx()}{nxx()}{_d(rng, 4)}",
        lambda: f"0044 20 {_d(rng, 4)} {_d(rng, 4)}", lambda: f"+44 (0)20 {_d(rng, 4)} {_d(rng, 4)}",
    ]  # fmt: skip
    return shapes[i % len(shapes)]()


PHONE_TEMPLATES = [
    ("prose", "You can reach me on {v} after six, or leave a message."),
    ("log", "2024-05-14 10:22:01 WARN sms.send to={v} status=queued attempt=2"),
    ("csv", "17,{Name},{v},Berlin"),
    ("chat", "{name}: new number {v} save it pls"),
    ("email", "Best regards,\n{Name}\nSales Manager\nT: {v}"),
    ("config", '{{"name": "{Name}", "phone": "{v}", "opt_in": true}}'),
    ("prose", "For urgent matters call {v} (24/7 hotline)."),
]


# ---------------------------------------------------------------- emails
def email_value(rng: random.Random, i: int) -> str:
    first, last, domain = rng.choice(FIRST), rng.choice(LAST), DOMAINS[i % len(DOMAINS)]
    shapes = [f"{first}.{last}", f"{first[0]}.{last}", f"{first}{last}{rng.randrange(10, 99)}",
              f"{first}_{last}+news", f"{first.capitalize()}.{last.capitalize()}", f"{last}-{first}"]
    return f"{shapes[i % len(shapes)]}@{domain}"


EMAIL_TEMPLATES = [
    ("prose", "If you have questions, write to {v} and mention your booking."),
    ("email", "From: {Name} <{v}>\nTo: ⟦email:support@example.net⟧\nSubject: refund"),
    ("log", "2024-01-09T11:02:55Z INFO auth.login ok user={v} ip=10.0.3.7 ua=Mozilla/5.0"),
    ("csv", "id,name,email\n88,{Name},{v}"),
    ("config", '{{"owner": "{v}", "notify": true, "retries": 3}}'),
    ("chat", "{name}: mail me at {v}, my phone is dead"),
    ("prose", "Send the signed contract to mailto:{v} before the 30th."),
]


# ---------------------------------------------------------------- secrets
def _token(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def password_value(rng: random.Random, i: int) -> str:
    words = ["Sunflower", "dragon", "Marmalade", "tiger", "Winter", "Falcon", "purple", "Harbour"]
    shapes = [
        lambda: f"{rng.choice(words)}#{rng.randrange(1990, 2030)}",
        lambda: f"{rng.choice(words).lower()}{rng.randrange(10, 999)}",
        lambda: _token(rng, 12, string.ascii_letters + string.digits + "!#$%*@^_+-"),
        lambda: f"{rng.choice(words)}{rng.randrange(1, 99)}!",
        lambda: "".join(rng.choice(string.digits) for _ in range(8)),
        lambda: f"Tr0ub4dor&{rng.randrange(1, 9)}",
    ]
    return shapes[i % len(shapes)]()


PASSWORD_TEMPLATES = [
    ("config", "database:\n  host: db.internal\n  user: app\n  password: {v}\n  port: 5432"),
    ("config", "DB_HOST=db.internal\nDB_PASSWORD={v}\nDB_POOL=10"),
    ("config", '{{"username": "{name}", "password": "{v}", "remember": true}}'),
    ("log", "2024-06-01 12:00:03 DEBUG connect(host='db', user='app', passwd='{v}')"),
    ("chat", "{name}: the wifi password is {v}"),
    ("prose", "Note to self: my bank password is {v} — change it after the holidays."),
    ("code", "conn = psycopg2.connect(host=\"db\", user=\"app\", password=\"{v}\")"),
    ("log", "GET /login?user={name}&pwd={v}&next=/home HTTP/1.1 200"),
    ("cli", "$ mysql --host db.internal --user root --password {v} shop"),
    ("config", "<datasource>\n  <user>app</user>\n  <password>{v}</password>\n</datasource>"),
    ("chat", "{name}: pw: {v}"),
    ("prose", "The password for the staff room PC was {v}, written on a sticky note."),
]


def token_value(rng: random.Random, i: int) -> tuple[str, str]:
    """(template, value) for a known-format key or a keyword-gated random token."""
    b64 = string.ascii_letters + string.digits
    jwt_part = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")  # noqa: E731
    pem_body = "\n".join(_token(rng, 64, b64 + "+/") for _ in range(4))
    shapes = [
        ("config", "[default]\naws_access_key_id = {v}\nregion = eu-west-1",
         "AKIA" + _token(rng, 16, string.ascii_uppercase + string.digits)),
        ("config", "export GITHUB_TOKEN={v}", "ghp_" + _token(rng, 36)),
        ("log", "git clone https://{v}@github.com/acme/private.git",
         "github_pat_" + _token(rng, 22) + "_" + _token(rng, 59)),
        ("config", "SLACK_BOT_TOKEN={v}",
         f"xoxb-{_d(rng, 11)}-{_d(rng, 12)}-{_token(rng, 24)}"),
        ("code", "stripe.api_key = \"{v}\"", "sk_live_" + _token(rng, 24)),
        ("config", "maps:\n  key: {v}", "AIza" + _token(rng, 35, b64 + "_-")),
        ("log", "Authorization: Bearer {v}",
         jwt_part({"alg": "HS256", "typ": "JWT"}) + "." + jwt_part({"sub": str(rng.randrange(10**6)), "name": rng.choice(FIRST)})
         + "." + _token(rng, 43, b64 + "_-")),
        ("config", "deploy_key: |\n  {v}",
         "-----BEGIN OPENSSH PRIVATE KEY-----\n  " + pem_body.replace("\n", "\n  ") + "\n  -----END OPENSSH PRIVATE KEY-----"),
        ("config", "api_key: {v}", _token(rng, 32, "0123456789abcdef")),
        ("config", "CLIENT_SECRET='{v}'", _token(rng, 40, b64)),
        ("log", "curl -H 'x-api-key: {v}' https://api.example.com/v1/items", _token(rng, 28, b64)),
        ("chat", "{name}: the api token is {v} dont share", _token(rng, 20, b64)),
        ("code", "SECRET_KEY = '{v}'", _token(rng, 50, b64 + "!@#%^&*(-_=+)")),
        ("config", "OPENAI_API_KEY=\"{v}\"", "sk-proj-" + _token(rng, 48, b64)),
        ("log", "Authorization: Bearer {v}", _token(rng, 32, b64)),
    ]
    return shapes[i % len(shapes)]


# ---------------------------------------------------------------- hard negatives
def isbn13(rng: random.Random) -> str:
    body = "978" + _d(rng, 9)
    check = (10 - sum(int(d) * (3 if k % 2 else 1) for k, d in enumerate(body)) % 10) % 10
    return body + str(check)


def isbn10(rng: random.Random) -> str:
    body = _d(rng, 9)
    check = sum((10 - k) * int(d) for k, d in enumerate(body)) % 11
    check = (11 - check) % 11
    return body + ("X" if check == 10 else str(check))


def negative_texts(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for i in range(12):  # Luhn-invalid numbers with every card cue present
        _, prefix, length, groups = CARD_PREFIXES[i % len(CARD_PREFIXES)]
        digits = luhn_complete(rng, prefix, length, valid=False)
        out.append(("prose", f"My Visa card number is {grouped(digits, groups, ' -'[i % 2])}, please charge it."))
    for i in range(10):  # Luhn-valid, no issuer prefix
        digits = luhn_complete(rng, rng.choice(["1", "7", "8", "9", "0"]), rng.choice([13, 16, 19]))
        cue = ["Loyalty card no.", "tracking", "parcel", "member id", "Bonus card"][i % 5]
        out.append(("log", f"{cue} {grouped(digits, (4,) * (len(digits) // 4) + ((len(digits) % 4,) if len(digits) % 4 else ()), ' ' if i % 2 else '')} registered"))
    for i in range(5):  # a valid card number glued into a longer digit run
        digits = luhn_complete(rng, "4", 16)
        out.append(("log", f"batch={digits}{_d(rng, 4)} rows=512" if i % 2 else f"serial {_d(rng, 3)}{digits} ok"))
    for _ in range(6):
        out.append(("prose", f"ISBN {isbn13(rng)[:3]}-{rng.randrange(0, 9)}-{_d(rng, 3)}-{_d(rng, 5)}-{rng.randrange(10)} (paperback)"))
    for _ in range(4):
        out.append(("csv", f"title,isbn13,isbn10\nHamlet,{isbn13(rng)},{isbn10(rng)}"))
    for _ in range(6):
        u = uuid.UUID(int=rng.getrandbits(128), version=4)
        out.append(("log", f"2024-04-01T10:00:00Z INFO request_id={u} trace={_token(rng, 16, '0123456789abcdef')} latency_ms=123"))
    for _ in range(5):
        out.append(("log", f"commit {_token(rng, 40, '0123456789abcdef')}\nAuthor: CI Bot\nDate:   Mon Mar 4 10:00:00 2024 +0100"))
    for _ in range(4):
        out.append(("config", f"md5: {_token(rng, 32, '0123456789abcdef')}\nsha256: {_token(rng, 64, '0123456789abcdef')}"))
    for _ in range(5):  # well-formed but wrong IBAN check digits
        country = rng.choice(sorted(IBAN_FORMATS))
        bban = "".join(rng.choice(string.digits) for _ in IBAN_FORMATS[country])
        compact = country + iban_check_digits(country, bban) + bban
        while iban_valid(compact):
            compact = compact[:2] + f"{rng.randrange(100):02d}" + compact[4:]
        out.append(("prose", f"IBAN: {' '.join(compact[k:k + 4] for k in range(0, len(compact), 4))}"))
    for _ in range(5):
        ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
        out.append(("log", f"{ip} - - [10/Oct/2023:13:55:36 +0200] \"GET /index.html HTTP/1.1\" 200 {rng.randrange(100, 99999)}"))
    for _ in range(5):
        out.append(("prose", f"Order #{_d(rng, 3)}-{_d(rng, 7)}-{_d(rng, 7)} shipped on {rng.randrange(1, 28)}.0{rng.randrange(1, 9)}.2024 "
                             f"to ZIP {_d(rng, 5)}-{_d(rng, 4)}, total ${rng.randrange(10, 2000)}.{_d(rng, 2)}"))
    for _ in range(4):
        out.append(("log", f"ts={rng.randrange(1_600_000_000_000, 1_800_000_000_000)} event=click user={rng.randrange(10**6)} "
                           f"session={_token(rng, 24, '0123456789abcdef')}"))
    return out


# ---------------------------------------------------------------- assembly
def fill(rng: random.Random, template: str, value: str, detector: str) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return template.format(v=mark(detector, value), name=first, Name=f"{first.capitalize()} {last.capitalize()}")


def synthetic_cases(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    marked: list[tuple[str, str, str]] = []  # (id, context, marked text)
    for detector, count, value_of, templates in (
        ("card", 60, card_value, CARD_TEMPLATES),
        ("iban", 34, iban_value, IBAN_TEMPLATES),
        ("phone", 68, phone_value, PHONE_TEMPLATES),
        ("email", 42, email_value, EMAIL_TEMPLATES),
        ("secret", 48, password_value, PASSWORD_TEMPLATES),
    ):
        for i in range(count):
            context, template = templates[i % len(templates)]
            marked.append((f"gen-{detector}-{i:03d}", context, fill(rng, template, value_of(rng, i), detector)))
    for i in range(30):
        context, template, value = token_value(rng, i)
        marked.append((f"gen-token-{i:03d}", context, fill(rng, template, value, "secret")))
    for i, (context, text) in enumerate(negative_texts(rng)):
        marked.append((f"gen-neg-{i:03d}", context, text))
    return [_case(case_id, context, text) for case_id, context, text in marked]


def handwritten_cases(paths: tuple[Path, ...] = HANDWRITTEN) -> list[dict]:
    entries = [e for path in paths for e in yaml.safe_load(path.read_text(encoding="utf-8"))]
    return [_case(e["id"], e.get("context", "prose"), e["text"]) for e in entries]


def _case(case_id: str, context: str, marked: str) -> dict:
    text, expected = parse_marked(marked)
    return {"id": case_id, "context": context, "text": text, "expected": expected}


def build_corpus(seed: int = SEED) -> list[dict]:
    return handwritten_cases() + synthetic_cases(seed)


def main() -> None:
    corpus = build_corpus()
    CORPUS.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    positives = sum(len(c["expected"]) for c in corpus)
    print(f"wrote {CORPUS.name}: {len(corpus)} texts, {positives} expected findings")


if __name__ == "__main__":
    main()
