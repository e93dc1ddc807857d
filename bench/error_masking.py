"""Can an error message be masked by the detectors in one place without hiding what users need?

    python -m bench.error_masking                               # 10,000 generated values of each kind
    python -m bench.error_masking --messages cap/*.jsonl        # plus messages the test suite produced

A message quotes what the user gave (a feature, a model, a column, a method, a record id), and an
unknown name that holds a card number or an e-mail address was printed whole. Masking every message
with the detectors `unlearn scan` uses (unlearning.detect.DETECTORS) fixes that in one place — if
they leave alone what legitimate messages quote: run ids (32 hex), digests, data versions, git
commits, fingerprints, UUIDs, paths (also ones holding Unix times, job and step numbers, quoted or
not), ISO timestamps, request ids, version numbers, record ids, the numbers a message states and
the names users give (bench.names_and_passwords). This counts, per detector, the generated
legitimate values it flags (each inside a message template of the kind the CLI prints), the
secrets it finds when a message quotes one (card, e-mail, IBAN, AWS key, GitHub token, phone, also
inside a path, after a word in the same quote, glued to a word before or after it; and a password
with no keyword, which only a message's rule on its shape finds), what rules on a quoted name alone
would mask among names and passwords, and what a message costs to mask.

`--messages` reads JSON lines `{"kind", "msg", "test"}` — every UnlearnError message, argparse error
and option line one run of the tests raised (recorded by a pytest plugin that wraps
UnlearnError.__init__, argparse.ArgumentParser.error and flows.arguments.option_problems) — and
prints each one a detector flags, with its test, to be judged by hand (a test may quote a secret on
purpose), and how many of the values they quote each password rule would mask.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.generated import hexes, iso_timestamp, path, request_id, timestamp, version
from bench.names_and_passwords import PASSWORDS, RULES, legitimate_name, rule_table
from unlearning.detect import DETECTORS
from unlearning.detect.scan import MESSAGE_DETECTORS, find_in_message, find_matches
from unlearning.detect.secrets import PasswordShapeDetector

def record_id(rng: random.Random) -> str:
    return rng.choice([str(rng.randrange(48842)), f"P{rng.randrange(1000, 100000)}", f"r{rng.randrange(10 ** 5):05d}",
                       f"cat/{rng.randrange(10 ** 4):04d}.png", f"cust-{rng.randrange(10 ** 7)}",
                       str(uuid.UUID(int=rng.getrandbits(128))),
                       "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(20))])


def long_number(rng: random.Random) -> str:
    """Numeric ids of 11–13 digits (customer numbers): the cards and phones detectors' weak spot."""
    return str(rng.randrange(10 ** 10, 10 ** 13))


def numbered_path(rng: random.Random) -> str:
    """Paths whose parts hold long numbers: Unix times (s, ms), job and step numbers, date stamps."""
    t = timestamp(rng)
    numbered = [str(int(t.timestamp())), str(int(t.timestamp() * 1000)), f"checkpoint-{rng.randrange(10 ** 6)}",
                f"slurm-{rng.randrange(10 ** 7, 10 ** 8)}", f"{t:%Y%m%d-%H%M%S}", f"run_{t:%Y%m%d%H%M%S}",
                f"{t:%Y/%m/%d}", f"epoch={rng.randrange(100)}-step={rng.randrange(10 ** 6)}.ckpt",
                f"{rng.randrange(10 ** 8, 10 ** 9)}.log", f"{t:%Y-%m-%d_%H-%M-%S}"]
    parts = [rng.choice(["ckpt", "runs", "outputs", "logs", "home", "alice", "mlruns", str(rng.randrange(1, 40))])
             for _ in range(rng.randrange(1, 4))] + rng.sample(numbered, rng.randrange(1, 3))
    return rng.choice(["/", "./", "~/", "/mnt/"]) + "/".join(parts)


def glued_number(rng: random.Random) -> str:
    """Names and paths with a number glued to a letter or '_' (the message masking unglues them to find a
    card or phone number there): Unix times, date stamps, job and step numbers, versions, hex digests."""
    t = timestamp(rng)
    name = rng.choice([f"run_{int(t.timestamp() * 1000)}", f"export{int(t.timestamp())}_v{rng.randrange(1, 9)}",
                       f"model_{t:%Y%m%d%H%M%S}", f"ckpt_step{rng.randrange(10 ** 7)}", f"job{rng.randrange(10 ** 8)}",
                       f"sha256_{hexes(rng, 64)}", f"run{hexes(rng, 32)}", f"{hexes(rng, 32)}_model",
                       f"v{rng.randrange(1, 9)}_{hexes(rng, 40)}", f"fp{hexes(rng, 24)}", f"dvc_{hexes(rng, 32)}.dir",
                       f"DETECT-{t:%Y%m%dT%H%M%S%f}", f"batch{t:%Y%m%d}_{rng.randrange(10 ** 6):06d}"])
    return rng.choice(["", "/data/", "./mlruns/", "~/exports/"]) + name + rng.choice(["", ".csv", ".log", "/model"])


def glued_long_number(rng: random.Random) -> str:
    """Numeric ids of 11–13 digits glued to a word ("cust_…", "acct…"): `long_number` glued."""
    return rng.choice(["cust_", "acct", "user", "id_", "customer"]) + long_number(rng)


def experiment_id(rng: random.Random) -> str:
    """MLflow experiment ids as a database store (this project's sqlite) numbers them: small integers;
    alone, in a path, glued."""
    return experiment_id_in(rng, str(rng.randrange(10 ** 4)))


def file_store_experiment_id(rng: random.Random) -> str:
    """MLflow experiment ids as a file store numbers them: 18 random digits
    (mlflow.utils.name_utils._generate_unique_integer_id), 1 in 260 of them Luhn-valid with a 16–19-digit
    card issuer's prefix; alone, in a path, glued."""
    digits = str(uuid.UUID(int=rng.getrandbits(128)).int)[-18:].lstrip("0")
    return experiment_id_in(rng, digits + "".join(str(rng.randrange(10)) for _ in range(18 - len(digits))))


def experiment_id_in(rng: random.Random, number: str) -> str:
    return rng.choice([number, f"./mlruns/{number}/{uuid.UUID(int=rng.getrandbits(128)).hex}/artifacts",
                       f"experiment_{number}", f"exp{number}"])


def numbers_side_by_side(rng: random.Random) -> str:
    """Numbers a message lists with spaces between them (record ids, counts, sizes, a shape, Unix times,
    numeric ids): card windows of a run split at its spaces, with no neighbour excusing one in a message."""
    def numbers(make) -> str:
        return " ".join(make() for _ in range(rng.randrange(2, 7)))
    return rng.choice([numbers(lambda: str(rng.randrange(48842))),
                       numbers(lambda: str(rng.randrange(10 ** rng.randrange(1, 7)))),
                       numbers(lambda: str(rng.choice([32, 64, 128, 256, 512, 784, 1024, 2048, 4096, 60000]))),
                       numbers(lambda: str(int(timestamp(rng).timestamp()))), numbers(lambda: long_number(rng))])


def stated_number(rng: random.Random) -> str:
    return rng.choice([f"{rng.randrange(10 ** 7)} records", f"{rng.uniform(0, 100):.2f} %", f"ε = {rng.uniform(0, 10):.6f}",
                       f"{rng.randrange(10 ** 10)} bytes", f"{rng.uniform(0, 1e4):.1f} s", f"seed {rng.randrange(2 ** 32)}",
                       f"127.0.0.1:{rng.randrange(1024, 65536)}", f"{rng.randrange(1, 13)}/{rng.randrange(1, 29)}",
                       f"{int(timestamp(rng).timestamp())}", f"{int(timestamp(rng).timestamp() * 1000)}"])


EXPERIMENT_MESSAGES = ["experiment id '{v}' does not exist", "run artifacts under {v} are missing",
                       "experiment {v} has no run named 'train'"]
# Each legitimate kind: its generator and messages of the shape the CLI prints around it.
KINDS = {
    "run id (32 hex)": (lambda rng: uuid.UUID(int=rng.getrandbits(128)).hex,
                        ["run {v} of model 'adult' has no certificate", "runs:/{v}/model is not in the registry",
                         "the audit run {v} found 2 requests' secrets"]),
    "sha256 digest": (lambda rng: hexes(rng, 64),
                      ["artifact hash sha256:{v} does not match the file", "certificate digest {v} differs",
                       "signed with another key (key id '{v}'; this key's id is {v})"]),
    "data version (md5.dir)": (lambda rng: hexes(rng, 32) + ".dir",
                               ["data version {v} is not in the DVC cache", "dataset 'adult' at {v}: 3 records missing"]),
    "git commit (40 hex)": (lambda rng: hexes(rng, 40),
                            ["model trained at commit {v}, code is at {v}", "unlearn (unlearnflow) 0.4.0, commit {v}"]),
    "fingerprint (24 hex)": (lambda rng: hexes(rng, 24),
                             ["allowlist entry '{v}' is not a fingerprint of this project's salt",
                              "secret with fingerprint {v} is not in the escrow"]),
    "UUID": (lambda rng: str(uuid.UUID(int=rng.getrandbits(128))),
             ["flow run {v} failed", "token file for run {v} is missing"]),
    "path": (path, ["file '{v}' not found: give an existing file", "cannot write {v}: permission denied",
                    "{v}: not a table (.csv/.parquet)"]),
    "ISO timestamp": (iso_timestamp, ["request 'R1': its deadline {v} has passed; an extension must be asked before it",
                                      "certificate signed at {v} by key 'k1'", "received {v}, completed {v}"]),
    "request id": (request_id, ["request '{v}' is completed: only an open request can be extended",
                                "request id '{v}' was already used for a different request",
                                "ledger entry 12 receives request '{v}' a second time"]),
    "version number": (version, ["this project was written by unlearnflow {v}; upgrade to read it",
                                 "model 'adult' {v} is not the production version"]),
    "record id": (record_id, ["1 record ids are not in dataset 'adult' ('{v}'); use values of its id column 'record_id'",
                              "id '{v}' in images.npz is empty or has a comma"]),
    "numeric id (11-13 digits)": (long_number, ["1 record ids are not in dataset 'people' ('{v}'); use values of its "
                                                "id column 'customer'", "record {v} was erased by request 'R7'"]),
    "number glued to a word (name, path, digest)": (glued_number, [
        "checkpoint {v} does not exist: pass a directory written by save_pretrained",
        "data file '{v}' not found; check the path given with --file", "unknown model '{v}'"]),
    "numeric id glued to a word (11-13 digits)": (glued_long_number, [
        "1 record ids are not in dataset 'people' ('{v}')", "record {v} was erased by request 'R7'"]),
    "MLflow experiment id (database store)": (experiment_id, EXPERIMENT_MESSAGES),
    "MLflow experiment id (file store, 18 digits)": (file_store_experiment_id, EXPERIMENT_MESSAGES),
    "numbers side by side (ids, counts, sizes, Unix times; new)": (numbers_side_by_side, [
        "1 record ids are not in dataset 'people' ({v}); use values of its id column 'person'",
        "expected {v} rows per batch, got 3", "record ids '{v}' were erased by request 'R7'"]),
    "stated number": (stated_number, ["the table holds {v}, more than the 1000000 a request may name",
                                      "--max-age must be a positive number of days, got '{v}'"]),
    "path holding numbers": (numbered_path, ["checkpoint {v} does not exist: pass a directory written by save_pretrained",
                                             "data file '{v}' not found; check the path given with --file",
                                             "unrecognized arguments: --base {v}"]),
    "name (feature, column, model, dataset)": (legitimate_name, [
        "unknown feature '{v}' in revoke_features; valid features: age, sex, race",
        "target column '{v}' not found; columns are: record_id, age, income",
        "unknown model '{v}': no registered version with alias 'production' — train one with `unlearn train {v}`"]),
}

# What a message should never print: one of each kind the detectors know, inside the same kind of message.
SECRETS = {
    "card": ["4111 1111 1111 1111", "4539148803436467", "5500-0000-0000-0004", "378282246310005"],
    "email": ["alice@example.com", "dana.whitfield@example.org", "bob+x@mail.co.uk"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"],
    "aws key": ["AKIAQ3EGRZ7T5XK2LW9M", "AKIAIOSFODNN7EXAMPLE"],
    "github token": ["ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6", "github_pat_" + "11ABCDEFG0" * 6],
    "phone": ["+44 20 7946 0958", "+1 (415) 555-2671", "(415) 555-2671", "+49 89 1234567"],
    # no keyword: only messages mask them, by their shape (bench.names_and_passwords measures the rule)
    "password, no keyword": ["Tr0ub4dor&3", "Summer2024!", "kX9#mQ2$vL7p", "Horse-battery-Staple42",
                             # whose only symbol is an `@`, a `*` or a full-width one (2026-12-07 08:00)
                             "P@ssw0rd2024", "Zx9@mQ2*vL7", "Passw0rd！2024"],
}
SITES = ["unknown feature '{v}' in revoke_features; valid features: age, sex, race",
         "unknown model '{v}': no registered version with alias 'production' — train one with `unlearn train {v}`",
         "target column '{v}' not found; columns are: record_id, age, income",
         "unknown method '{v}'; valid methods: auto, first_order, second_order",
         "dataset '{v}' not found in /tmp/p/data; run `unlearn data add {v}` first",
         "argument --scenario: invalid choice: '{v}' (choose from 'tabular', 'text', 'images')",
         "id column '{v}' not found; columns are: person, age, label",  # "id" names another kind of number
         "ledger entry 3: order '{v}' is not a request of this project",
         "unknown feature 'order {v}' in revoke_features; valid features: age, sex, race",  # a word inside the quote
         # unquoted paths: a number right after a '/' is none to the card and phone detectors
         "checkpoint /ckpt/{v} does not exist: pass a directory written by save_pretrained",
         "unrecognized arguments: --base /data/{v}/model",
         # not quoted, after a word that names another kind of number, and beside another number
         "id {v} is not a record of dataset 'people'", "records {v} 4012888888881881 are not in dataset 'people'",
         "records {v}-4012888888881881 are not in dataset 'people'"]  # joined by a dash
# Glued to a letter or '_': a number there is none to the card and phone detectors either. Also glued to
# letters that are hex digits, a word too short to be a digest (run ids and DVC md5s are 32 hex).
GLUED_SITES = ["data file '/data/card_{v}.csv' not found; check the path given with --file",
               "export{v}_v2 failed: [Errno 28] No space left on device",
               "data file '/data/cafe{v}.csv' not found; check the path given with --file",
               "unknown model 'bead{v}': no registered version with alias 'production'",
               "checkpoint /ckpt/e{v} does not exist: pass a directory written by save_pretrained",
               "data file '/x/{v}abc.csv' not found; check the path given with --file",
               "unknown feature 'acct{v}' in revoke_features; valid features: age, sex, race",  # glued in front
               # glued behind: to letters ("alice@example.comfoo") and to '_' and digits
               "unknown feature '{v}foo' in revoke_features; valid features: age, sex, race",
               "data file '/data/{v}_2024.csv' not found; check the path given with --file"]
# Glued to punctuation and a number: after a version's dot (a card number there is no decimal's fraction),
# after a doubled '+', and before a number and a file extension (a digit glued behind a card number, an
# IBAN or a key makes a longer value, no card's, IBAN or key: printed whole before 2026-12-07 07:00).
PUNCTUATION_SITES = ["unknown model 'v1.{v}': no registered version with alias 'production'",
                     "unknown feature '++{v}' in revoke_features; valid features: age, sex, race",
                     "data file '/data/{v}1.csv' not found; check the path given with --file"]
SITES += GLUED_SITES + PUNCTUATION_SITES


def flagged_by(text: str, quoted: bool = True) -> Counter:
    """Detector → matches in `text`: as errors are masked (find_in_message), or by `unlearn scan`'s rules."""
    found = find_in_message(text) if quoted else find_matches(text, MESSAGE_DETECTORS)
    return Counter(m.detector for m in found)


def legitimate_table(n: int, seed: int, quoted: bool) -> dict[str, Counter]:
    rng = random.Random(seed)
    counts = {}
    for kind, (make, templates) in KINDS.items():
        found = Counter()
        for _ in range(n):
            value = make(rng)
            found.update(flagged_by(rng.choice(templates).format(v=value), quoted))
        counts[kind] = found
    return counts


def secret_table(quoted: bool) -> dict[str, tuple[int, int]]:
    """Per secret kind: (messages whose secret the detectors cover entirely, messages)."""
    finder = find_in_message if quoted else (lambda text: find_matches(text, MESSAGE_DETECTORS))
    out = {}
    for kind, values in SECRETS.items():
        covered = total = 0
        for value in values:
            for site in SITES:
                text = site.format(v=value)
                spans = [(m.start, m.end) for m in finder(text)]
                starts = [i for i in range(len(text)) if text.startswith(value, i)]
                covered += all(any(s <= i and i + len(value) <= e for s, e in spans) for i in starts)
                total += 1
        out[kind] = (covered, total)
    return out


def captured_messages(paths: list[Path]) -> list[dict]:
    rows = []
    for p in paths:
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return rows


def seconds_per_message(messages: list[str]) -> float:
    start = time.perf_counter()
    for text in messages:
        find_in_message(text)
    return (time.perf_counter() - start) / max(1, len(messages))


def print_password_rules(n: int, seed: int) -> None:
    """bench.names_and_passwords: per rule, the legitimate names it would mask and the passwords it would catch."""
    masked, caught, examples = rule_table(n, seed)
    print(f"## Passwords given as a name, no keyword: what a rule on the quoted name alone would mask ({n} of each, "
          f"seed {seed})\n")
    print("| rule | legitimate names masked | " + " | ".join(PASSWORDS) + " |")
    print("|---|---:|" + "---:|" * len(PASSWORDS))
    for rule in RULES:
        print(f"| {rule} | {masked[rule]} | " + " | ".join(str(caught[rule][style]) for style in PASSWORDS) + " |")
    print("\nlegitimate names masked by the messages' rule (the last): " + ", ".join(examples) + "\n")


def print_rules_on_captured(messages: list[str]) -> None:
    """The password rules on the values the tests' messages quote: names no generator wrote."""
    from unlearning.detect.scan import _QUOTED  # what find_in_message judges alone

    values = {next(g for g in q.groups() if g is not None) for text in messages for q in _QUOTED.finditer(text)}
    print(f"\npassword rules on the {len(values)} distinct values the tests' messages quote:")
    for rule, test in RULES.items():
        hits = sorted(v for v in values if test(v))
        print(f"- {rule}: {len(hits)}" + (f" (e.g. {', '.join(repr(v) for v in hits[:3])})" if hits else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="generated values of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--messages", type=Path, nargs="*", default=[], help="JSON lines of captured messages")
    args = parser.parse_args(argv)
    detectors = [*DETECTORS, PasswordShapeDetector.name]  # the last: in messages only

    for quoted in (False, True):
        how = "as errors are masked (find_in_message)" if quoted else "whole message only (find_matches)"
        print(f"## Legitimate values in messages, {how}: flagged per detector ({args.n} of each kind, seed {args.seed})\n")
        print("| kind | " + " | ".join(detectors) + " | messages flagged |")
        print("|---|" + "---|" * (len(detectors) + 1))
        for kind, found in legitimate_table(args.n, args.seed, quoted).items():
            print(f"| {kind} | " + " | ".join(str(found[d]) for d in detectors) + f" | {sum(found.values())} |")
        print(f"\n## Secrets quoted in messages, {how}: covered whole by a detector's span\n")
        print("| secret kind | covered / messages |")
        print("|---|---|")
        for kind, (covered, total) in secret_table(quoted).items():
            print(f"| {kind} | {covered} / {total} |")
        print()

    print_password_rules(args.n, args.seed)
    rows = captured_messages(args.messages)
    if rows:
        unique = {r["msg"]: r for r in rows}
        hits = [(r, flagged_by(r["msg"])) for r in unique.values()]
        hits = [(r, f) for r, f in hits if f]
        print(f"## Messages the tests produced: {len(rows)} ({len(unique)} distinct), flagged: {len(hits)}\n")
        per = Counter()
        for _, f in hits:
            per.update(f)
        print("per detector: " + ", ".join(f"{d} {per[d]}" for d in detectors))
        for r, f in hits:
            print(f"- {dict(f)} [{r['kind']}] {r['test'].split(' ')[0]}: {r['msg'][:300]!r}")
        texts = list(unique)
        print_rules_on_captured(texts)
        print(f"\nmasking cost: {seconds_per_message(texts) * 1e6:.0f} µs per message (mean over {len(texts)}, "
              f"mean length {sum(map(len, texts)) / len(texts):.0f} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
