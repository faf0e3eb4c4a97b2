"""Errors of the Kafka layer."""

from __future__ import annotations

from config.errors import AttestError


class StreamsError(AttestError, RuntimeError):
    """Base of Kafka-side failures."""


class BrokerUnavailable(StreamsError):
    """The broker cannot be reached or refused an admin request."""


class KafkaSecurityError(StreamsError):
    """The Kafka security settings do not fit together, or the password file is unsafe."""
