"""`unlearn scan FILE` (tasks.scan.scan_path): a file is read as UTF-8 text exactly as written."""

from __future__ import annotations

import pytest

from tasks.scan import scan_path
from unlearning.errors import UnlearnError

CARD = "4556737586899855"  # a test number (Luhn-valid)
SALT = b"s" * 32


def test_a_text_file_is_scanned_and_its_byte_order_mark_is_no_content(tmp_path):
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text(f"name,card\nJo,{CARD}\n", encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    found = [scan_path(p, SALT) for p in (plain, marked)]
    assert [f["detector"] for f in found[0]] == ["card"]
    assert [f["location"]["column"] for f in found[0]] == [f["location"]["column"] for f in found[1]] == [4]


@pytest.mark.parametrize("content", [b"\x7fELF\x02\x01\x01\x00\x00" + CARD.encode(),  # binary: NUL bytes
                                     f"name,card\nJos\xe9,{CARD}\n".encode("latin-1")])  # another encoding
def test_a_file_that_is_not_utf8_text_is_refused_not_reported_clean(tmp_path, content):
    """It was read with replacement characters: a binary file (a Parquet table, a model) reported
    "0 finding(s)" of what it may hold compressed or in another encoding."""
    path = tmp_path / "blob.bin"
    path.write_bytes(content)
    with pytest.raises(UnlearnError, match=r"'blob.bin' is not UTF-8 text \(byte \d+: .*\).*save it as UTF-8") as err:
        scan_path(path, SALT)
    assert CARD not in str(err.value) and "\n" not in str(err.value)
