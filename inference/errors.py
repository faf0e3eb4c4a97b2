"""Errors of the model pool. Agents catch ``InferenceError`` and keep their event.

None of these means the event is bad: a timeout or a closed pool is a reason to retry or
hold the stream, never to dead-letter. ``ModelLoadError`` is a configuration problem found
at start-up (a missing folder, a precision the device cannot run).
"""

from __future__ import annotations

from config.errors import AttestError


class InferenceError(AttestError):
    """Base of every model-pool error."""


class InferenceTimeout(InferenceError):
    """A request did not get its result within its timeout; the caller still owns its event."""


class ModelLoadError(InferenceError):
    """The model could not be loaded, or the device/precision combination cannot run it."""


class PoolClosed(InferenceError):
    """The pool is closing or closed (or was never started) and takes no new work."""
