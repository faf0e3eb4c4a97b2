"""Blind indexes: keyed, per domain, equal for equal identifiers however they are written."""

from __future__ import annotations

import hashlib
import os

import pytest

from protection.blind_index import BlindIndexKey, blind_index, normalize
from scenarios.government import SOCIAL_SECURITY, TAX_BUREAU, people, written

NATIONAL = BlindIndexKey("national_id", bytes(range(32)))
ACCOUNT = BlindIndexKey("account", bytes(range(32, 64)))


@pytest.mark.parametrize(("a", "b"), [
    ("1234 5678 9012", "1234-5678-9012"),
    ("123456789012", " 1234.5678.9012 "),
    ("de89 3704 0044 0532 0130 00", "DE89370400440532013000"),
    ("ＡＢ１２３", "ab123"),  # full-width forms (NFKC)
])
def test_spellings_of_one_identifier_share_an_index(a: str, b: str) -> None:
    assert normalize("x", a) == normalize("x", b)
    assert blind_index(NATIONAL, a) == blind_index(NATIONAL, b)


def test_different_identifiers_differ() -> None:
    assert blind_index(NATIONAL, "123456789012") != blind_index(NATIONAL, "123456789013")


def test_the_index_is_keyed_per_domain() -> None:
    value = "123456789012"
    digest = blind_index(NATIONAL, value)
    assert len(digest) == 32
    assert digest != hashlib.sha256(value.encode()).digest()  # not an unkeyed hash
    assert digest != blind_index(BlindIndexKey("national_id", os.urandom(32)), value)
    assert digest != blind_index(ACCOUNT, value)
    # The domain is inside the MAC: the same key used for two domains still separates them.
    assert digest != blind_index(BlindIndexKey("account", NATIONAL.material), value)
    assert blind_index(NATIONAL, value) == digest  # deterministic


def test_the_same_person_joins_across_agencies() -> None:
    for person in people(20, seed=1):
        at_tax = written(person.national_id, TAX_BUREAU)
        at_social = written(person.national_id, SOCIAL_SECURITY)
        assert at_tax != at_social
        assert blind_index(NATIONAL, at_tax) == blind_index(NATIONAL, at_social)


def test_empty_identifiers_and_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        blind_index(NATIONAL, " - . ")
    with pytest.raises(ValueError):
        BlindIndexKey("national_id", b"short")
    assert NATIONAL.material.hex() not in repr(NATIONAL)
