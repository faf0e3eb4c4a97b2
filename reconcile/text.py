"""Text comparison for matching: reference normalization and string-distance scores.

rapidfuzz does the string distance; the model's similarity (``inference.tasks``) is added by
the caller as a separate score, so these functions stay model-free and fast.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

_NON_ALNUM = re.compile(r"[^0-9A-Z]+")
NO_REFERENCE = frozenset({"", "NONREF", "NOTPROVIDED", "NONE"})
_LEGAL = re.compile(
    r"\b(GMBH|G M B H|AG|A G|INC|INCORPORATED|LTD|LIMITED|LLC|SARL|S A R L|BV|B V|OY|O Y|SPA|S P A|"
    r"KG|K G|SL|S L|SA|S A|AB|A B|NV|N V|PLC)\b"
)


def norm_reference(reference: str) -> str:
    """Upper case, letters and digits only; the ``NONREF`` placeholders become empty."""
    text = _NON_ALNUM.sub("", reference.upper())
    return "" if text in NO_REFERENCE else text


def norm_name(name: str) -> str:
    """A counterparty name without punctuation and legal-form suffixes, upper case."""
    text = re.sub(r"[^0-9A-Z]+", " ", name.upper().replace(".", "")).strip()
    return re.sub(r"\s+", " ", _LEGAL.sub(" ", text)).strip()


def references_compatible(a: str, b: str) -> bool:
    """Equal, or one a prefix of the other of at least 10 characters (a truncated field)."""
    if not a or not b:
        return False
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 10 and long.startswith(short)


def reference_score(a: str, b: str) -> float:
    """1.0 for compatible references, else normalized Levenshtein similarity; 0 if one is absent."""
    if not a or not b:
        return 0.0
    if references_compatible(a, b):
        return 1.0
    return float(Levenshtein.normalized_similarity(a, b))


def name_score(a: str, b: str) -> float:
    """Token-set similarity of two normalized names, in [0, 1]."""
    na, nb = norm_name(a), norm_name(b)
    if not na or not nb:
        return 0.0
    return max(fuzz.token_set_ratio(na, nb), fuzz.partial_ratio(na, nb)) / 100.0


def text_score(a: str, b: str) -> float:
    """Similarity of free remittance text, in [0, 1]."""
    if not a or not b:
        return 0.0
    return fuzz.token_set_ratio(a.upper(), b.upper()) / 100.0


def mentions(text: str, reference: str) -> bool:
    """Whether a remittance text lists ``reference`` (normalized, as a whole token)."""
    if not reference:
        return False
    return reference in {_NON_ALNUM.sub("", t) for t in text.upper().split()}
