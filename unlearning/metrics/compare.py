"""Gaps to the retrained model (science.md §5: every metric is read beside retraining's value)."""

from __future__ import annotations

import math

from unlearning.errors import UnlearnError

# SalUn's "Avg. Gap": the four output-level metrics, all in percent. The feature metrics (DA, LP,
# NMI, F1) get their own gap_<key> but are left out of the average by default: DA, NMI and F1 live
# in [0, 1] and would be drowned by percent-scale gaps, and keeping the literature's definition keeps
# the average comparable with published tables. Pass `average_over` to change it.
AVG_GAP_KEYS = ("ua", "ra", "ta", "mia_efficacy")


def compare_to_retrain(
    rows: list[dict],
    keys: tuple[str, ...] | None = None,
    reference: str = "retrain",
    average_over: tuple[str, ...] = AVG_GAP_KEYS,
) -> list[dict]:
    """Copies of `rows`, each with gap_<key> = |value − reference value| for every key and
    avg_gap = mean of the gaps over `average_over` (lower = closer to retraining).

    rows: dicts with a "method" name and numeric metrics; exactly one has method == `reference`.
    keys: metrics to compare (default: every numeric entry of the reference row). A NaN value gives
    a NaN gap, which propagates to avg_gap.
    """
    refs = [r for r in rows if r.get("method") == reference]
    if len(refs) != 1:
        raise UnlearnError(f"need exactly one row with method '{reference}' to compare against, found {len(refs)}")
    ref = refs[0]
    if keys is None:
        keys = tuple(k for k, v in ref.items() if k != "method" and isinstance(v, (int, float)) and not isinstance(v, bool))
    missing = [k for k in (*keys, *average_over) if k not in ref]
    if missing:
        raise UnlearnError(f"reference row '{reference}' lacks metrics {missing}")
    out = []
    for row in rows:
        absent = [k for k in (*keys, *average_over) if k not in row]
        if absent:
            raise UnlearnError(f"row '{row.get('method')}' lacks metrics {absent}")
        gaps = {k: abs(float(row[k]) - float(ref[k])) for k in dict.fromkeys((*keys, *average_over))}
        new = dict(row)
        new.update({f"gap_{k}": gaps[k] for k in keys})
        new["avg_gap"] = math.fsum(gaps[k] for k in average_over) / len(average_over) if average_over else math.nan
        out.append(new)
    return out
