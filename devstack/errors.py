"""Errors of the embedded stack, each with a message an operator can act on."""

from __future__ import annotations

from config.errors import AttestError


class DevStackError(AttestError, RuntimeError):
    """The embedded stack could not be started, reached or stopped."""


class ComponentStartError(DevStackError):
    """A component (broker or database) failed to start; its log path is in the message."""
