"""Operator-facing errors, each with its own documented exit code (docs/operations.md).

A script driving ``attest replay`` or ``attest status`` can tell a typo in a topic name
from an outage by the exit code alone, without parsing the message.
"""

from __future__ import annotations

from enum import IntEnum

from config.errors import AttestError


class ExitCode(IntEnum):
    """Exit codes of ``attest replay``, ``attest dlq`` and ``attest status``."""

    OK = 0
    ERROR = 1  # any other one-sentence operator error
    USAGE = 2  # bad option combination (Typer's own usage errors use 2 too)
    UNKNOWN_TOPIC = 3
    OFFSET_OUT_OF_RANGE = 4
    BAD_TIME = 5
    BROKER_UNREACHABLE = 6
    DATABASE_UNREACHABLE = 7
    UNHEALTHY = 8  # `attest status`: everything reachable, but something is wrong
    UNKNOWN_EVENT = 9
    AUDIT_UNAVAILABLE = 10  # the operator action's audit record could not be written
    ACCESS_REFUSED = 11  # the access service refused: no usable token, or no role with the permission
    SERVICE_UNREACHABLE = 12  # the access service (attest serve) could not be reached
    KEY_STILL_NEEDED = 13  # `attest keys retire-kek`: wrapping keys are still sealed to it
    INTERRUPTED = 130


class OperationsError(AttestError, RuntimeError):
    """Base of operator errors; ``exit_code`` is what the CLI exits with."""

    exit_code: ExitCode = ExitCode.ERROR


class SelectionError(OperationsError):
    """Options that do not describe one selection (e.g. --from-offset without --partition)."""

    exit_code = ExitCode.USAGE


class UnknownTopic(OperationsError):
    exit_code = ExitCode.UNKNOWN_TOPIC


class OffsetOutOfRange(OperationsError):
    exit_code = ExitCode.OFFSET_OUT_OF_RANGE


class BadTime(OperationsError):
    exit_code = ExitCode.BAD_TIME


class UnknownEvent(OperationsError):
    exit_code = ExitCode.UNKNOWN_EVENT


class AuditUnavailable(OperationsError):
    """The operator action was not started because its audit record could not be sent."""

    exit_code = ExitCode.AUDIT_UNAVAILABLE


class ActionRefused(OperationsError):
    """An operator action refused before it changed anything: a bad argument, a key this host
    does not hold, or an audit record that could not be sent (exit 1, one sentence)."""


class AccessRefused(OperationsError):
    """The access service refused the person (no usable token, or a role without the permission)."""

    exit_code = ExitCode.ACCESS_REFUSED


class AccessServiceUnreachable(OperationsError):
    """The access service that decides the action could not be reached, so nothing was done."""

    exit_code = ExitCode.SERVICE_UNREACHABLE
