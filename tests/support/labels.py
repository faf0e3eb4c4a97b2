"""Reading model labels in tests: the service's keyring, every source field allowed.

Labels are sealed (``inference.labels``); a test that checks what the model said opens them
as the access service would, with the state folder's ``keyring.json`` (every tier's private
key) and a decision that allows the fields the model read.
"""

from __future__ import annotations

from collections.abc import Mapping

from access.policy import AccessDecision, AccessReason
from config.settings import Settings
from inference.labels import OpenedLabel
from protection.keyring_sources import keyring_path, load_keyring_file
from protection.tiers import FieldSpec
from storage.inferences import read_labels


def allow_all(typ: str, specs: tuple[FieldSpec, ...]) -> Mapping[str, AccessDecision]:
    """A decision allowing every field (the policy is not what these tests check)."""
    return {s.name: AccessDecision(s, "test", True, AccessReason.GRANTED, 1) for s in specs}


def opened_labels(settings: Settings, event_id: str) -> list[OpenedLabel]:
    """The labels stored for ``event_id``, opened with the service keyring."""
    keyring = load_keyring_file(keyring_path(settings.state_dir))
    return read_labels(settings.database_url, event_id, keyring, allow_all)
