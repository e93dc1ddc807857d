"""The README and docs/ hold together: every relative link and #anchor resolves inside the
repository, no link leaves it except http(s) URLs, and headings form an outline (one title, no
skipped level) — a heading glued to a stray line of text or a section moved without its links
shows up here rather than as a dead link on the rendered page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])

# [text](target) and ![alt](target); the target ends at the first space (an optional "title").
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(path: Path, keep_code_spans: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked unless asked: a
    link or a `#` inside code is an example, not part of the page's structure."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line if keep_code_spans else re.sub(r"`[^`]*`", lambda m: " " * len(m.group()), line)))
    return out


def headings(path: Path) -> list[tuple[int, int, str]]:
    """(line number, level, text) of every ATX heading outside code blocks."""
    raw = path.read_text(encoding="utf-8").splitlines()
    found = []
    for number, _ in prose_lines(path):
        match = HEADING.match(raw[number - 1])
        if match:
            found.append((number, len(match.group(1)), match.group(2)))
    return found


def slug(text: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, every character but letters,
    digits, `_`, `-` and spaces removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a page; a repeated heading gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, _, text in headings(path):
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    return [(number, m.group(1)) for number, line in prose_lines(path) for m in LINK.finditer(line)]


def broken_link(page: Path, target: str) -> str | None:
    """Why `target` (a link on `page`) does not resolve inside the repository, or None."""
    if re.match(r"https?://", target):
        return None
    if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("/", "\\")):
        return "leaves the repository (only http(s) URLs may)"
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / unquote(path_part)).resolve() if path_part else page
    if not dest.is_relative_to(ROOT):
        return "points outside the repository"
    if not dest.exists():
        return f"{dest.relative_to(ROOT)} does not exist"
    if anchor:
        if dest.suffix != ".md":
            return "an anchor into a file that is not markdown"
        if anchor not in anchors(dest):
            return f"no heading with anchor #{anchor} in {dest.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    broken = [f"{page.name}:{n}: {t} — {why}" for n, t in links(page) if (why := broken_link(page, t))]
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_in_the_text_climbs_out_of_the_repository(page):
    """A path written as text (`../shared/docs/x.md`, not a link) is as dead for a reader of a
    clone as a broken link."""
    text = "\n".join(line for _, line in prose_lines(page, keep_code_spans=True))
    outside = [m for m in re.findall(r"(?<![\w.])\.\./[\w./-]+", text)
               if not (page.parent / m).resolve().is_relative_to(ROOT)]
    assert not outside, f"{page.name}: paths outside the repository: {outside}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_headings_form_an_outline(page):
    found = headings(page)
    assert found and found[0][1] == 1, f"{page.name}: the page starts without a # title"
    assert [n for n, level, _ in found if level == 1] == [found[0][0]], f"{page.name}: more than one # title"
    skips = [f"line {n}: level {level} after level {prev}" for (_, prev, _), (n, level, _)
             in zip(found, found[1:]) if level > prev + 1]
    assert not skips, f"{page.name}: heading levels skipped: {skips}"


def test_link_checker_catches_what_it_is_for(tmp_path):
    """The checker itself: a moved section's anchor, a missing file, a path out of the repository
    and a local file URL are each reported; a working anchor and a web URL are not."""
    page = ROOT / "README.md"
    assert broken_link(page, "#quickstart") is None
    assert broken_link(page, "https://example.org/x#y") is None
    assert "no heading" in broken_link(page, "#no-such-section")
    assert "does not exist" in broken_link(page, "docs/no-such-page.md")
    assert "outside" in broken_link(page, "../shared/docs/science.md")
    assert "leaves" in broken_link(page, "file:///etc/passwd")
    assert "leaves" in broken_link(page, "/work/handoff/x.txt")


def test_slugs_follow_github():
    assert slug("`comply` with a Dask task runner vs inline (`python -m bench.comply`)") == \
        "comply-with-a-dask-task-runner-vs-inline-python--m-benchcomply"
    assert slug("Adult, certified model (λ = 1e-3, budget 10 → ε = 1)") == "adult-certified-model-λ--1e-3-budget-10--ε--1"
