"""bench.tabular's table cells: seconds, speed-ups and the markdown table around them."""

from __future__ import annotations

def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # "|Z|" must not split a cell
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def seconds_text(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def seconds_with_fastest(median: float, fastest: float) -> str:
    """'median (fastest)' when the two differ enough to show the machine was busy."""
    return seconds_text(median) + (f" ({seconds_text(fastest)})" if fastest < 0.67 * median else "")


def speedup_text(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}×" if x >= 10 else f"{x:.2g}×"
