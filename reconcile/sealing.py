"""Sealing the matcher's own data: pending state, amounts and details of matches and breaks.

The worker must reopen its pending state after a restart, but it holds no tier private key
(it seals events it can never read back). So reconciliation data is sealed with a key the
worker does hold: HKDF-SHA256 of the ``account`` blind-index key with a purpose label of its
own. HKDF gives an independent key (it is never used as an HMAC key for indexes), and nobody
without the worker's keys can read the state in Postgres. The price: whoever holds the
worker's keyring (the worker, and the report run beside it) can read pending amounts, which
the worker sees in every event anyway. docs/reconciliation.md gives the reasoning.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"attest.reconcile.state.v1"
_VERSION = b"\x01"


class StateKey:
    """An AES-256-GCM key for reconciliation data; its repr never shows the key."""

    def __init__(self, material: bytes) -> None:
        if len(material) != 32:
            raise ValueError("a reconciliation state key is 32 bytes")
        self._aead = AESGCM(material)

    def __repr__(self) -> str:
        return "StateKey(...)"

    @classmethod
    def derive(cls, index_key_material: bytes) -> StateKey:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
        return cls(hkdf.derive(index_key_material))

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Version byte, 96-bit random nonce, ciphertext and tag; ``context`` is bound as AAD."""
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """Raises ``cryptography.exceptions.InvalidTag`` on a wrong key, context or tampering."""
        if sealed[:1] != _VERSION:
            raise ValueError("unknown reconciliation seal version")
        return self._aead.decrypt(sealed[1:13], sealed[13:], context)
