"""Time and deadlines of the request ledger (unlearning.compliance.ledger; compliance.md, "Deadlines
and records"): timestamps read exactly as written, and the deadline policies.

- GDPR art. 12(3), the default: one calendar month after the day of receipt — the same day-of-month
  in the next month, or its last day when that day does not exist (31 Jan → 28/29 Feb); extendable
  "by two further months", i.e. up to three months after receipt, with reasons, before the first
  deadline passes.
- `days=N` (45 for CCPA): N calendar days after the day of receipt, extendable once by up to N more.
The day of receipt is read in the time zone the `received` timestamp was given in; a request is
overdue from the day after its deadline, in that same zone.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from unlearning.errors import UnlearnError


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_timestamp(value: str | date | datetime, what: str = "timestamp") -> datetime:
    """An aware datetime from an ISO 8601 date or timestamp; no time zone means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise UnlearnError(f"{what} '{value}' is not an ISO 8601 date or timestamp; "
                               "write e.g. 2026-01-31 or 2026-01-31T14:05:00+01:00") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def add_months(day: date, months: int) -> date:
    """The same day-of-month `months` later, or that month's last day (31 Jan + 1 → 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class DeadlinePolicy:
    """`months`: GDPR art. 12(3), 1 month + up to 2 more; `days`: N days + up to N more (CCPA: 45)."""

    unit: str  # "months" | "days"
    n: int
    extension: int  # how far (same unit) the deadline may be pushed beyond the first one

    @classmethod
    def gdpr(cls) -> DeadlinePolicy:
        return cls("months", 1, 2)

    @classmethod
    def days(cls, n: int) -> DeadlinePolicy:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 366:
            raise UnlearnError(f"deadline days must be a whole number from 1 to 366, not {n!r}")
        return cls("days", n, n)

    @classmethod
    def from_dict(cls, data: dict) -> DeadlinePolicy:
        return cls(data["unit"], int(data["n"]), int(data["extension"]))

    def to_dict(self) -> dict:
        return {"unit": self.unit, "n": self.n, "extension": self.extension}

    def _after(self, day: date, amount: int) -> date:
        return add_months(day, amount) if self.unit == "months" else day + timedelta(days=amount)

    def deadline(self, received: datetime) -> date:
        return self._after(received.date(), self.n)

    def latest(self, received: datetime) -> date:
        """The furthest an extension may push the deadline."""
        return self._after(received.date(), self.n + self.extension)

    def describe(self) -> str:
        if self.unit == "months":
            return (f"{self.n} calendar month{'s' * (self.n > 1)} after receipt (GDPR art. 12(3)), extendable by "
                    f"up to {self.extension} more months with reasons")
        return f"{self.n} days after receipt, extendable by up to {self.extension} more days with reasons"


def local_date(moment: datetime, like: datetime) -> date:
    """The calendar date of `moment` in the time zone of `like` (the receipt)."""
    return moment.astimezone(like.tzinfo).date()
