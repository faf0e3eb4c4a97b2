"""Errors of the Kafka layer."""

from __future__ import annotations


class StreamsError(RuntimeError):
    """Base of Kafka-side failures."""


class BrokerUnavailable(StreamsError):
    """The broker cannot be reached or refused an admin request."""
