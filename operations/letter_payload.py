"""Showing a dead letter's payload: asked of the access service, never decided here.

A JWS signs but does not hide: a dead letter's bytes may carry restricted fields (accounts,
incomes) in clear. ``attest dlq show`` prints what the letter is (reason, origin, headers, the
claimed JWS header, size and SHA-256); the payload comes only from the access service
(``POST /v1/dead-letters/payload``), which authenticates the person's token, checks that a
role of theirs has ``dead_letters.payload``, and commits the ``dlq.payload_shown`` audit record
before it answers (access/letter_payloads.py). This module only carries the token and turns
the service's answer into an operator error with a documented exit code: there is no other
path to a payload, and no flag, file or variable of the caller's that could open one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from access.client import AccessClient, ServiceRefused, ServiceUnreachable, read_token
from access.errors import AccessError
from operations.errors import AccessRefused, AccessServiceUnreachable, ActionRefused, AuditUnavailable
from streams.dead_letters import StoredLetter
from streams.errors import BrokerUnavailable


def letter_digest(letter: StoredLetter) -> str:
    return hashlib.sha256(letter.value).hexdigest()


def fetch_payload(access_url: str, token_file: Path, partition: int, offset: int,
                  why: str) -> dict[str, Any]:
    """The service's answer for the letter at ``partition:offset`` (access/app.py,
    ``DeadLetterPayloadOut``), or an ``OperationsError`` naming why nothing is shown.

    Exit codes (docs/operations.md): 11 no usable token or no permission, 12 the service is
    unreachable, 10 the service could not commit the record, 6 the service cannot read the
    dead-letter topic, 1 anything else it refused (no letter there, no purpose).
    """
    try:
        token = read_token(token_file)
    except AccessError as exc:
        raise AccessRefused(f"{exc}; showing a payload needs your access token") from None
    try:
        with AccessClient(access_url, token) as client:
            return client.dead_letter_payload(partition, offset, why)
    except ServiceUnreachable as exc:
        raise AccessServiceUnreachable(f"nothing was shown: {exc}") from None
    except ServiceRefused as exc:
        if exc.status in (401, 403):
            raise AccessRefused(f"the access service refused: {exc}") from None
        if exc.status == 503:
            raise AuditUnavailable(f"nothing was shown: {exc}") from None
        if exc.status == 502:
            raise BrokerUnavailable(f"nothing was shown: {exc}") from None
        raise ActionRefused(f"the access service refused: {exc}") from None
