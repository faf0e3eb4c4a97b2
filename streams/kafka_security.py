"""How every Kafka client Attest makes proves who it is and checks who the broker is.

One place, two builders: ``confluent_security`` for the confluent-kafka (librdkafka) clients
(producers, the CLI's readers, the admin client, the log probe) and ``faust_credentials`` for
the Faust workers (aiokafka underneath). Both take a ``KafkaSecurity`` read once from the
settings by ``load_kafka_security``, so the two client libraries can never disagree about the
protocol, the mechanism, the login or the CA.

Why this shape:

- The password is read from a FILE (``ATTEST_KAFKA_PASSWORD_FILE``), never from an
  environment variable's value or a command line, which other processes and ``docker
  inspect`` can read. The file must be a regular file that no group or other user can read
  (0600 or 0400), as with every other key file of Attest.
- ``PLAINTEXT`` is for the embedded development broker only (loopback, no users, see
  docs/operations.md). ``SASL_SSL`` with SCRAM is what a deployment uses: the broker's
  certificate is checked against ``ATTEST_KAFKA_CA_FILE`` (or the system's trust store) and
  its host name, and the password never crosses the wire (SCRAM proves knowledge of it).
  SASL without TLS is not offered: it would authenticate a connection anyone can read.
- A login set while the protocol is ``PLAINTEXT`` is refused rather than silently unused.
- ``KafkaSecurity``'s repr leaves the password out, and so does Faust's ``SASLCredentials``.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from config.settings import Settings
from streams.errors import KafkaSecurityError

if TYPE_CHECKING:
    from faust.auth import SASLCredentials

PLAINTEXT = "PLAINTEXT"
SASL_SSL = "SASL_SSL"
Protocol = Literal["PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]


@dataclass(frozen=True)
class KafkaSecurity:
    """The security settings of every Kafka client of one process (the password kept out of repr)."""

    protocol: Protocol = PLAINTEXT
    mechanism: Mechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None


def read_password_file(path: Path) -> str:
    """The password in ``path``: one line, a trailing newline dropped.

    Refused (``KafkaSecurityError``) when the file is missing, not a regular file, readable
    by group or others, empty or more than one line. The mode is checked on the open file,
    so it is the file that was read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KafkaSecurityError(
            f"cannot read the Kafka password file {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise KafkaSecurityError(f"the Kafka password file {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_mode & 0o077:
            raise KafkaSecurityError(
                f"the Kafka password file {path} is readable by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); make it 0600 (chmod 600 {path})")
        raw = handle.read(4097)
    if len(raw) > 4096:
        raise KafkaSecurityError(f"the Kafka password file {path} is longer than 4096 bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KafkaSecurityError(f"the Kafka password file {path} is not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password:
        raise KafkaSecurityError(f"the Kafka password file {path} is empty")
    if "\n" in password or "\r" in password:
        raise KafkaSecurityError(f"the Kafka password file {path} holds more than one line")
    return password


def load_kafka_security(settings: Settings) -> KafkaSecurity:
    """Check the ``ATTEST_KAFKA_*`` security settings together and read the password file.

    Raises ``KafkaSecurityError`` with the one setting to fix when they do not fit together.
    """
    protocol = settings.kafka_security_protocol
    login = {
        "ATTEST_KAFKA_USERNAME": settings.kafka_username,
        "ATTEST_KAFKA_PASSWORD_FILE": settings.kafka_password_file,
        "ATTEST_KAFKA_CA_FILE": settings.kafka_ca_file,
    }
    if protocol == PLAINTEXT:
        given = [name for name, value in login.items() if value]
        if given:
            raise KafkaSecurityError(
                f"{', '.join(given)} set while ATTEST_KAFKA_SECURITY_PROTOCOL is PLAINTEXT, "
                "which sends no login and checks no certificate; set it to SASL_SSL")
        return KafkaSecurity()
    if not settings.kafka_username:
        raise KafkaSecurityError("ATTEST_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs ATTEST_KAFKA_USERNAME")
    if settings.kafka_password_file is None:
        raise KafkaSecurityError(
            "ATTEST_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs ATTEST_KAFKA_PASSWORD_FILE "
            "(a 0600 file holding the password; never the password itself)")
    ca_file = settings.kafka_ca_file
    if ca_file is not None and not ca_file.is_file():
        raise KafkaSecurityError(f"ATTEST_KAFKA_CA_FILE {ca_file} is not a readable file")
    return KafkaSecurity(
        protocol=SASL_SSL,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_username,
        password=read_password_file(settings.kafka_password_file),
        ca_file=ca_file,
    )


def confluent_security(security: KafkaSecurity) -> dict[str, object]:
    """The librdkafka properties for ``security`` (merged into every confluent-kafka client)."""
    if security.protocol == PLAINTEXT:
        return {"security.protocol": "PLAINTEXT"}
    config: dict[str, object] = {
        "security.protocol": SASL_SSL,
        "sasl.mechanism": security.mechanism,
        "sasl.username": security.username,
        "sasl.password": security.password,
        # librdkafka's default since 1.9, stated: the certificate must name the broker's host.
        "ssl.endpoint.identification.algorithm": "https",
    }
    if security.ca_file is not None:
        config["ssl.ca.location"] = str(security.ca_file)
    return config


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: the broker's certificate checked against the CA and its host name,
    TLS 1.2 at least."""
    try:
        context = ssl.create_default_context(
            cafile=str(security.ca_file) if security.ca_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(f"cannot load the Kafka CA file {security.ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def faust_credentials(security: KafkaSecurity) -> SASLCredentials | None:
    """Faust's ``broker_credentials`` for ``security`` (None for PLAINTEXT: Faust's default).

    Faust hands them to aiokafka (``credentials_to_aiokafka_auth``): SASL_SSL because a TLS
    context is given, the SCRAM mechanism, the login.
    """
    if security.protocol == PLAINTEXT:
        return None
    from faust.auth import SASLCredentials

    return SASLCredentials(
        username=security.username,
        password=security.password,
        ssl_context=tls_context(security),
        mechanism=security.mechanism,
    )
