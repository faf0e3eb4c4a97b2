"""Blind indexes: a keyed HMAC-SHA256 of a normalized identifier, for lookups and joins.

Equality lookups (``--subject``) and cross-agency joins run on the index, never on the
plaintext. The key belongs to the identifier's *domain* (every national id shares one key,
every account number another), not to a table, a topic or a subject: two agencies that write
the same person's id the same way get the same index, so their rows join; a per-subject or
per-table key would break exactly that. Normalization makes "1234 5678-9012" and
"123456789012" the same identifier before hashing.

The full 32-byte HMAC is kept: joins must not produce false matches, and the index is only
as revealing as equality itself (which is its purpose). Without the domain key an index
value says nothing about the identifier (HMAC is a PRF), so a database dump alone cannot be
brute-forced over the small space of national ids.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
_SEPARATORS = re.compile(r"[\s\-./_]+")


@dataclass(frozen=True, slots=True)
class BlindIndexKey:
    """The secret of one identifier domain. Its repr shows the domain, never the key."""

    domain: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"a blind-index key is {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"BlindIndexKey(domain={self.domain!r})"


def normalize(domain: str, value: object) -> bytes:
    """The canonical bytes of an identifier in ``domain``.

    Unicode NFKC, separators (space, hyphen, dot, slash, underscore) removed, upper case.
    This fits account numbers and IBANs ("DE89 3704 0044 0532 0130 00"), national ids
    ("756.1234.5678.97") and request ids alike.
    """
    text = str(value)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = _SEPARATORS.sub("", text).upper()
    if not text:
        raise ValueError(f"an empty {domain} identifier cannot be indexed")
    return text.encode("utf-8")


def blind_index(key: BlindIndexKey, value: object) -> bytes:
    """HMAC-SHA256(domain key, domain || 0x00 || normalized value): 32 bytes.

    The domain is inside the MAC input as well, so even two domains given the same key by
    mistake never produce the same index for the same text.
    """
    message = key.domain.encode("utf-8") + b"\x00" + normalize(key.domain, value)
    return hmac.digest(key.material, message, hashlib.sha256)


#: The identifier domain whose index key the message MAC key is derived from. Every worker
#: keyring holds it (the transaction schema's subject domain), and an HKDF label of its own
#: keeps the two keys independent: no MAC value is ever a blind index, or the reverse.
MESSAGE_MAC_DOMAIN = "account"
_MESSAGE_MAC_INFO = b"attest.message-mac.v1"


@dataclass(frozen=True, slots=True)
class MessageMacKey:
    """The key of ``events.message_mac``. Its repr never shows the key."""

    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"a message MAC key is {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return "MessageMacKey(...)"


def message_mac_key(index_key: BlindIndexKey) -> MessageMacKey:
    """HKDF-SHA256 of the ``MESSAGE_MAC_DOMAIN`` index key under a fixed label.

    Why keyed: the stored value only has to tell a redelivery (same bytes) from a replay on a
    reused offset, and the worker that compares holds its index keys anyway. An unkeyed
    SHA-256 of the message would let anyone holding a database dump test a guessed or
    captured Kafka message against every row, even after ``attest forget`` shredded the
    fields it carried; without the key a MAC says nothing.
    """
    if index_key.domain != MESSAGE_MAC_DOMAIN:
        raise ValueError(f"the message MAC key is derived from the {MESSAGE_MAC_DOMAIN!r} index key")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=_MESSAGE_MAC_INFO)
    return MessageMacKey(hkdf.derive(index_key.material))


def message_mac(key: MessageMacKey, message_sha256: bytes) -> bytes:
    """HMAC-SHA256(key, label || SHA-256 of the Kafka message bytes): 32 bytes.

    The MAC is over the message's SHA-256, which intake computes once per message and which
    is all storage is handed; HMAC of a collision-resistant digest tells the same bytes from
    other bytes exactly as well as HMAC of the bytes themselves.
    """
    if len(message_sha256) != hashlib.sha256().digest_size:
        raise ValueError("message_mac takes the 32-byte SHA-256 of the message")
    return hmac.digest(key.material, _MESSAGE_MAC_INFO + b"\x00" + message_sha256, hashlib.sha256)
