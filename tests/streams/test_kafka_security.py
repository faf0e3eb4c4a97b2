"""The Kafka client security builders (streams/kafka_security.py), as pure functions.

No broker: the embedded Tansu cannot serve TLS or SCRAM logins to these clients
(docs/operations.md, "What the embedded stack protects and what it does not"), so what is
checked here is what each client library is handed, and that the password stays out of
every repr and error message.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from config.settings import Settings
from streams.admin import kafka_config
from streams.errors import KafkaSecurityError
from streams.kafka_security import (
    KafkaSecurity,
    confluent_security,
    faust_credentials,
    load_kafka_security,
    read_password_file,
)

PASSWORD = "s3cret-Passw0rd-for-tests"
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUQ0xS7Y8n1Xx0dQeH8gNLVzZ1c1IwCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


def secret_file(tmp_path: Path, text: str = PASSWORD + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "kafka.password"
    path.write_text(text)
    path.chmod(mode)
    return path


def real_ca(tmp_path: Path) -> Path:
    """A real self-signed CA certificate (ssl must be able to load it)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attest-test-ca")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp_path / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def sasl_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "kafka_bootstrap": "kafka:9092",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_username": "attest-worker",
        "kafka_password_file": secret_file(tmp_path),
        "kafka_ca_file": real_ca(tmp_path),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# --- the defaults: the embedded stack's PLAINTEXT, nothing else -----------------------------


def test_plaintext_is_the_default_and_adds_no_login() -> None:
    security = load_kafka_security(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert security == KafkaSecurity()
    assert confluent_security(security) == {"security.protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None
    assert credentials_to_aiokafka_auth(faust_credentials(security)) == {
        "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("field", ["kafka_username", "kafka_password_file", "kafka_ca_file"])
def test_a_login_with_plaintext_is_refused_not_ignored(tmp_path: Path, field: str) -> None:
    value = "attest-worker" if field == "kafka_username" else secret_file(tmp_path)
    with pytest.raises(KafkaSecurityError, match=f"ATTEST_{field.upper()}.*PLAINTEXT"):
        load_kafka_security(Settings(**{field: value}))  # type: ignore[arg-type]


# --- SASL_SSL: one settings object, two client libraries ----------------------------------


def test_confluent_config_carries_the_scram_login_and_the_ca(tmp_path: Path) -> None:
    settings = sasl_settings(tmp_path)
    config = kafka_config(settings)  # what every confluent-kafka client of Attest is built from
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "attest-worker"
    assert config["sasl.password"] == PASSWORD
    assert config["ssl.ca.location"] == str(settings.kafka_ca_file)
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert config["bootstrap.servers"] == "kafka:9092"


def test_the_confluent_config_is_accepted_by_librdkafka(tmp_path: Path) -> None:
    """librdkafka itself parses every property (a misspelt one raises at construction)."""
    from confluent_kafka.admin import AdminClient

    AdminClient(kafka_config(sasl_settings(tmp_path)))


def test_faust_gets_the_same_login_over_tls(tmp_path: Path) -> None:
    settings = sasl_settings(tmp_path, kafka_sasl_mechanism="SCRAM-SHA-256")
    credentials = faust_credentials(load_kafka_security(settings))
    auth = credentials_to_aiokafka_auth(credentials)  # what Faust hands aiokafka
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_username"] == "attest-worker"
    assert auth["sasl_plain_password"] == PASSWORD
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert any(cert["subject"] == ((("commonName", "attest-test-ca"),),)
               for cert in context.get_ca_certs())


def test_without_a_ca_file_the_system_trust_store_is_used(tmp_path: Path) -> None:
    security = load_kafka_security(sasl_settings(tmp_path, kafka_ca_file=None))
    assert "ssl.ca.location" not in confluent_security(security)
    credentials = faust_credentials(security)
    assert credentials is not None and credentials.ssl_context is not None


def test_the_password_is_in_no_repr(tmp_path: Path) -> None:
    settings = sasl_settings(tmp_path)
    security = load_kafka_security(settings)
    credentials = faust_credentials(security)
    for text in (repr(security), str(security), repr(credentials), repr(settings)):
        assert PASSWORD not in text
    assert "attest-worker" in repr(security)


@pytest.mark.parametrize(("missing", "message"), [
    ("kafka_username", "needs ATTEST_KAFKA_USERNAME"),
    ("kafka_password_file", "needs ATTEST_KAFKA_PASSWORD_FILE"),
])
def test_sasl_ssl_needs_a_login(tmp_path: Path, missing: str, message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        load_kafka_security(sasl_settings(tmp_path, **{missing: None}))


def test_a_missing_ca_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KafkaSecurityError, match="ATTEST_KAFKA_CA_FILE"):
        load_kafka_security(sasl_settings(tmp_path, kafka_ca_file=tmp_path / "nope.crt"))


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text(CA_PEM)
    security = load_kafka_security(sasl_settings(tmp_path, kafka_ca_file=bad))
    with pytest.raises(KafkaSecurityError, match="cannot load the Kafka CA file"):
        faust_credentials(security)


def test_an_unknown_protocol_or_mechanism_is_not_a_setting() -> None:
    with pytest.raises(ValueError):
        Settings(kafka_security_protocol="SASL_PLAINTEXT")  # a login anyone on the wire can read
    with pytest.raises(ValueError):
        Settings(kafka_sasl_mechanism="PLAIN")


# --- the password file ------------------------------------------------------------------------


def test_the_password_file_is_read_without_its_newline(tmp_path: Path) -> None:
    assert read_password_file(secret_file(tmp_path)) == PASSWORD
    assert read_password_file(secret_file(tmp_path, PASSWORD + "\r\n", 0o400)) == PASSWORD
    assert read_password_file(secret_file(tmp_path, PASSWORD)) == PASSWORD


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = secret_file(tmp_path, mode=mode)
    with pytest.raises(KafkaSecurityError, match=f"readable by others \\(mode {mode:04o}\\)") as err:
        read_password_file(path)
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("\n", "is empty"),
    ("one\ntwo\n", "more than one line"),
    ("x" * 5000, "longer than 4096 bytes"),
])
def test_a_bad_password_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        read_password_file(secret_file(tmp_path, text))


def test_a_missing_or_linked_or_non_regular_password_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KafkaSecurityError, match="cannot read"):
        read_password_file(tmp_path / "absent")
    link = tmp_path / "link"
    link.symlink_to(secret_file(tmp_path))
    with pytest.raises(KafkaSecurityError, match="cannot read"):
        read_password_file(link)  # O_NOFOLLOW: a link may point anywhere
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(KafkaSecurityError, match="not a regular file"):
        read_password_file(folder)


def test_the_file_is_read_when_a_client_is_made(tmp_path: Path) -> None:
    """A rotated password is picked up by the next client without a restart of the settings."""
    settings = sasl_settings(tmp_path)
    assert settings.kafka_password_file is not None
    os.chmod(settings.kafka_password_file, 0o600)
    settings.kafka_password_file.write_text("rotated\n")
    assert kafka_config(settings)["sasl.password"] == "rotated"
