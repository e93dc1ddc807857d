"""Legitimate values a message quotes — timestamps, request ids, paths, version strings, hex digests —
generated for the masking benches (bench.error_masking, bench.names_and_passwords), which count what
the detectors would wrongly mask in them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

HEX = "0123456789abcdef"


def hexes(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HEX) for _ in range(n))


def timestamp(rng: random.Random) -> datetime:
    return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 40 * 365.25 * 86400))


def iso_timestamp(rng: random.Random) -> str:
    t = timestamp(rng)
    return rng.choice([t.isoformat(), t.isoformat(timespec="seconds"), t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       t.strftime("%Y-%m-%d %H:%M:%S UTC"), t.date().isoformat(),
                       t.astimezone(timezone_of(rng)).isoformat(timespec="milliseconds")])


def timezone_of(rng: random.Random):
    from datetime import timezone

    return timezone(timedelta(minutes=rng.choice([-480, -300, 0, 60, 120, 330, 540, 600])))


def request_id(rng: random.Random) -> str:
    t = timestamp(rng)
    return rng.choice([f"{rng.choice(['DEMO', 'DETECT', 'COMPLY', 'BATCH'])}-{t:%Y%m%dT%H%M%S%f}",
                       f"REQ-{rng.randrange(10 ** 6):06d}", f"GDPR-{t:%Y}-{rng.randrange(10 ** 5):05d}",
                       f"R{rng.randrange(1, 10 ** 4)}", f"ticket-{rng.randrange(10 ** 8)}",
                       f"dsar_{t:%Y%m%d}_{rng.randrange(1000):03d}"])


def path(rng: random.Random) -> str:
    words = ["data", "adult", "shakespeare", "mlflow", "artifacts", ".unlearn", "requests", "escrow", "tmp",
             "home", "alice", "work", "project", "pytest-of-root", f"pytest-{rng.randrange(200)}", "ws0",
             hexes(rng, 32), f"v{rng.randrange(1, 40)}", "models", "cat", "images"]
    parts = [rng.choice(words) for _ in range(rng.randrange(2, 8))]
    name = rng.choice([f"{request_id(rng)}.yaml", "records.csv", "schema.json", "certificate.json", "ledger.db",
                       f"{rng.randrange(10 ** 4):04d}.png", "model.pt", f"{hexes(rng, 30)}", "corpus.txt"])
    return rng.choice(["/", "", "./", "~/"]) + "/".join(parts + [name])


def version(rng: random.Random) -> str:
    a, b, c = rng.randrange(10), rng.randrange(40), rng.randrange(200)
    return rng.choice([f"{a}.{b}.{c}", f"v{rng.randrange(1, 500)}", f"{a}.{b}.{c}+g{hexes(rng, 7)}",
                       f"{a}.{b}.{c}.dev{rng.randrange(50)}", f"version {rng.randrange(1, 500)}"])
