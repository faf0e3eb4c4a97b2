"""The Kafka client security builders (streams/kafka_security.py).

The embedded Tansu cannot serve TLS or SCRAM logins to these clients (docs/operations.md,
"What the embedded stack protects and what it does not"), so the builders are tested as pure
functions (what each client library is handed; the password in no repr or error), and on the
wire against a loopback TLS listener standing in for a broker: confluent-kafka and Faust's
aiokafka send their first Kafka request only inside a TLS session whose certificate chains to
ATTEST_KAFKA_CA_FILE and names the host, and nothing to a broker another CA signed. The SCRAM
exchange itself needs a real SASL_SSL broker (docker-compose's), which does not run here.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
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
from tests.support.waiting import wait_for

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


# --- on the wire: both client libraries speak TLS to a broker they can verify, and only then -


def issue_server_cert(tmp_path: Path, ca_dir: Path) -> tuple[Path, Path]:
    """A CA (written to ca_dir/ca.crt) and a certificate for localhost it signed: (cert, key)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wire-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_dir.mkdir(exist_ok=True)
    (ca_dir / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsListener:
    """A loopback TLS server standing in for a broker: it records, per connection, the API key
    of the first Kafka request that arrived inside TLS, or "refused" when the handshake failed.
    (It answers nothing, so each client gives up; what it sent first is what is checked.)"""

    def __init__(self, cert: Path, key: Path) -> None:
        import socket
        import threading

        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.seen: list[object] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import struct

        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    head = b""
                    while len(head) < 6:
                        chunk = tls.recv(6 - len(head))
                        if not chunk:
                            break
                        head += chunk
                    self.seen.append(struct.unpack(">ih", head)[1] if len(head) == 6 else "closed")
            except (ssl.SSLError, OSError):
                self.seen.append("refused")

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


API_VERSIONS = 18  # the first request of every Kafka client on a new connection


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[TlsListener, Path]]:
    cert, key = issue_server_cert(tmp_path, tmp_path / "trusted")
    listener = TlsListener(cert, key)
    yield listener, tmp_path / "trusted" / "ca.crt"
    listener.close()


def wire_settings(tmp_path: Path, port: int, ca_file: Path) -> Settings:
    return sasl_settings(tmp_path, kafka_bootstrap=f"localhost:{port}", kafka_ca_file=ca_file)


def test_confluent_clients_speak_kafka_only_inside_verified_tls(
        tmp_path: Path, tls_broker: tuple[TlsListener, Path]) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    listener, ca_file = tls_broker
    admin = AdminClient({**kafka_config(wire_settings(tmp_path, listener.port, ca_file)),
                         "log_level": 0, "socket.timeout.ms": 2000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    assert API_VERSIONS in listener.seen  # a TLS handshake it verified, then Kafka inside it


def test_confluent_clients_refuse_a_broker_their_ca_did_not_sign(
        tmp_path: Path, tls_broker: tuple[TlsListener, Path]) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    listener, _ = tls_broker
    (tmp_path / "other").mkdir()
    issue_server_cert(tmp_path / "other", tmp_path / "other-ca")
    admin = AdminClient({**kafka_config(wire_settings(tmp_path, listener.port,
                                                      tmp_path / "other-ca" / "ca.crt")),
                         "log_level": 0, "socket.timeout.ms": 2000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    assert listener.seen and API_VERSIONS not in listener.seen  # no byte of Kafka was sent


@pytest.mark.parametrize("trusted", [True, False])
def test_faust_aiokafka_speaks_kafka_only_inside_verified_tls(
        tmp_path: Path, tls_broker: tuple[TlsListener, Path], trusted: bool) -> None:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    listener, ca_file = tls_broker
    if not trusted:
        (tmp_path / "other").mkdir()
        issue_server_cert(tmp_path / "other", tmp_path / "other-ca")
        ca_file = tmp_path / "other-ca" / "ca.crt"
    settings = wire_settings(tmp_path, listener.port, ca_file)
    auth = credentials_to_aiokafka_auth(faust_credentials(load_kafka_security(settings)))

    async def connect() -> None:
        client = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                     request_timeout_ms=2000, **auth)
        try:
            await asyncio.wait_for(client.start(), 6)
        finally:
            await client.close()

    with pytest.raises(Exception):  # noqa: B017 - nothing answers; what was sent is checked
        asyncio.run(connect())
    wait_for(lambda: listener.seen, 10, "the listener to record the connection")
    if trusted:
        assert API_VERSIONS in listener.seen
    else:
        assert listener.seen and API_VERSIONS not in listener.seen
