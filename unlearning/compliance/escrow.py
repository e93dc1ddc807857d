"""The audit escrow: what a later audit needs of a request's removed data, sealed at rest.

A text audit measures each removed secret's exposure in the production model and in a model
retrained on the current data; an image audit needs the forgotten images. Both are gone from the
data once the request is processed (the superseded data version is purged), so the request keeps
them here, "beyond use" (ICO): encrypted, read by nothing but the audit that covers the request,
and deleted when that audit completes.

Sealing: AES-256-GCM under a key derived from the project's signing key by HKDF-SHA256 (its own
`info`, so the escrow key is neither the signing key nor the ledger key), with a fresh 96-bit nonce
per file and the file's name (model and run) as associated data: a sealed file moved under another
name, or altered, does not open. Format: MAGIC | nonce | ciphertext+tag.
"""

from __future__ import annotations

import io
import os

import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from unlearning.compliance.signing import SEALED_PREFIX
from unlearning.errors import UnlearnError

MAGIC = SEALED_PREFIX  # one definition: signing.py (no torch) recognises sealed files by it
INFO = b"unlearnflow.audit-escrow/1"
NONCE_BYTES = 12


def escrow_key(signing_key: bytes) -> bytes:
    """The 256-bit escrow key, derived from the project's signing key (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(bytes(signing_key))


def seal(content: dict, signing_key: bytes, name: str) -> bytes:
    """`content` (plain values and tensors) encrypted and authenticated, bound to `name`."""
    buffer = io.BytesIO()
    torch.save(content, buffer)
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(escrow_key(signing_key)).encrypt(nonce, buffer.getvalue(), name.encode())


def open_sealed(sealed: bytes, signing_key: bytes, name: str) -> dict:
    """The content `seal` sealed under `name`; UnlearnError when the file was altered, renamed or
    sealed with another key."""
    if not sealed.startswith(MAGIC):
        raise UnlearnError(f"audit escrow {name} is not a sealed escrow file: it was altered")
    nonce, body = sealed[len(MAGIC):len(MAGIC) + NONCE_BYTES], sealed[len(MAGIC) + NONCE_BYTES:]
    try:
        plain = AESGCM(escrow_key(signing_key)).decrypt(nonce, body, name.encode())
    except (InvalidTag, ValueError):  # ValueError: cut short (the nonce or the tag is incomplete)
        raise UnlearnError(f"audit escrow {name} does not open with this project's key: altered, renamed "
                           "or sealed under another signing key") from None
    return torch.load(io.BytesIO(plain), weights_only=True)
