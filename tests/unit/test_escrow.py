"""The audit escrow (unlearning.compliance.escrow): sealed at rest under a key derived from the
signing key; an altered, renamed or foreign file does not open."""

from __future__ import annotations

import pytest
import torch

from unlearning.compliance import escrow
from unlearning.errors import UnlearnError

KEY = b"k" * 64
CONTENT = {"requests": ["R-1"], "secrets": [{"value": "4532 0173 9184 2651", "prefix": "my card is "}],
           "X": torch.arange(6.0).reshape(2, 3)}


def test_a_sealed_escrow_opens_with_its_key_and_name_and_hides_its_values():
    sealed = escrow.seal(CONTENT, KEY, "m/run.bin")
    assert b"4532" not in sealed and b"my card" not in sealed
    opened = escrow.open_sealed(sealed, KEY, "m/run.bin")
    assert opened["secrets"] == CONTENT["secrets"] and torch.equal(opened["X"], CONTENT["X"])
    assert escrow.escrow_key(KEY) != KEY[:32] and len(escrow.escrow_key(KEY)) == 32


@pytest.mark.parametrize("change", ["altered", "renamed", "other key", "not sealed", "cut short"])
def test_an_altered_renamed_or_foreign_escrow_does_not_open(change):
    sealed = escrow.seal(CONTENT, KEY, "m/run.bin")
    key, name = KEY, "m/run.bin"
    if change == "altered":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif change == "renamed":
        name = "m/other.bin"
    elif change == "other key":
        key = b"x" * 64
    elif change == "cut short":  # within the nonce: the cipher raised a plain ValueError, which stopped every audit
        sealed = sealed[:len(escrow.MAGIC) + 4]
    else:
        sealed = b"plain text"
    with pytest.raises(UnlearnError):
        escrow.open_sealed(sealed, key, name)


def test_an_audit_refuses_escrows_none_of_which_opens_under_a_key_that_signed_no_certificate(tmp_path, monkeypatch):
    """AES-GCM cannot tell an altered file from another key: with another project's key every escrow
    would read as altered, fail its requests and be deleted. None opening and no certificate signed
    with the key is refused (nothing changed); with the project's key an altered one is set aside."""
    from tasks import audit
    from tasks.certificates import CERTIFICATES
    from unlearning.compliance import signing

    monkeypatch.setenv(signing.KEY_ENV, "a" * 64)
    project_key = signing.signing_key(tmp_path)
    path = audit.escrow_file(tmp_path, "m", "run-1")
    audit.write_private(path, escrow.seal(CONTENT, project_key, audit.escrow_name(path)))
    signing.write_signed(tmp_path / CERTIFICATES / "R-1.json", signing.sign({"request": {"id": "R-1"}}, project_key))

    monkeypatch.setenv(signing.KEY_ENV, "b" * 64)  # another project's key
    with pytest.raises(UnlearnError, match="no certificate of this project was signed with this signing key"):
        audit.open_held_escrows(tmp_path, [path])
    assert path.exists()

    monkeypatch.setenv(signing.KEY_ENV, "a" * 64)
    sealed = path.read_bytes()
    path.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))  # one byte altered, under the project's key
    assert audit.open_held_escrows(tmp_path, [path]) == ([], [audit.escrow_name(path)])
