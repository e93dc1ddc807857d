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


@pytest.mark.parametrize("change", ["altered", "renamed", "other key", "not sealed"])
def test_an_altered_renamed_or_foreign_escrow_does_not_open(change):
    sealed = escrow.seal(CONTENT, KEY, "m/run.bin")
    key, name = KEY, "m/run.bin"
    if change == "altered":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif change == "renamed":
        name = "m/other.bin"
    elif change == "other key":
        key = b"x" * 64
    else:
        sealed = b"plain text"
    with pytest.raises(UnlearnError):
        escrow.open_sealed(sealed, key, name)
