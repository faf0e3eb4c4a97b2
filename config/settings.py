"""The one typed settings object. Every knob is an ``ATTEST_*`` environment variable.

No other module reads the environment: callers receive a ``Settings`` and pass it on.
When the broker or database address is not set explicitly, the addresses recorded by
``attest dev up`` in the state folder are used, so a newcomer never has to export them.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"


class Settings(BaseSettings):
    """Attest configuration. Field names map to ``ATTEST_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="ATTEST_", extra="ignore")

    # --- where things are -------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/attest",
        description="SQLAlchemy/libpq URL of the Postgres database.",
    )
    state_dir: Path = Field(
        Path(".attest"), description="Folder for the embedded stack, keys and local state."
    )

    # --- Kafka client security (streams/kafka_security.py, docs/operations.md) ----------
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="PLAINTEXT: the embedded development broker only (loopback, no login). "
                    "SASL_SSL: TLS with a SCRAM login, what docker-compose's Kafka requires.",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism of the Kafka login (SASL_SSL only)."
    )
    kafka_username: str | None = Field(
        None, description="The Kafka principal this process logs in as (SASL_SSL only)."
    )
    kafka_password_file: Path | None = Field(
        None, description="File holding the Kafka password, 0600 (never the password itself)."
    )
    kafka_ca_file: Path | None = Field(
        None, description="PEM CA certificate(s) the broker's certificate must chain to "
                          "(unset: the system's trust store)."
    )

    # --- topics ---------------------------------------------------------------------
    app_id: str = Field("attest", description="Faust application id (the consumer group).")
    topic_prefix: str = Field("attest.", description="Prefix of every Kafka topic name.")
    partitions: int = Field(4, ge=1, description="Partitions of the event topics.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of new topics.")

    # --- consumer behaviour -----------------------------------------------------------
    session_timeout_s: float = Field(
        6.0,
        gt=0,
        description="Consumer group session timeout. Tansu's join waits about half of it.",
    )
    heartbeat_interval_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")
    batch_size: int = Field(500, ge=1, description="Most events an agent handles in one batch.")
    freshness_from_create_time: bool = Field(
        True,
        description="Judge issued_at by the producer's CreateTime where the broker stamps no "
                    "LogAppendTime (the embedded Tansu); false: by the worker's clock there.",
    )
    fetch_max_wait_ms: int = Field(
        20, ge=1, le=5000,
        description="Longest a worker's fetch waits at the broker for data (Faust's own is 1500).",
    )
    intake_consumer: Literal["batch", "faust"] = Field(
        "batch",
        description="How intake reads its topics: batch (librdkafka hands over whole batches; "
                    "streams/batch_consumer.py) or faust (Faust's per-message stream, the "
                    "first wave's path, kept as the benchmark's baseline).",
    )
    intake_concurrency: int = Field(
        1, ge=1, le=16,
        description="Batches intake works on at once. On the batch consumer (the default) "
                    "offsets still move in the order read; with ATTEST_INTAKE_CONSUMER=faust, "
                    "batches of one partition may then commit out of order.",
    )
    enrichment_concurrency: int = Field(
        1, ge=1, le=8,
        description="Batches each enrichment agent works on at once: above 1 the model can "
                    "classify one while another is looked up, sealed and stored (order does not "
                    "matter to enrichment; every result is idempotent). 2 gained nothing on two "
                    "CPU cores, where the model already uses both; for GPU hosts.",
    )
    batch_within_s: float = Field(
        0.02, gt=0,
        description="Longest wait for a batch's first record when nothing is queued (the batch "
                    "consumer hands over what is queued at once); with ATTEST_INTAKE_CONSUMER="
                    "faust, longest wait to fill a batch.",
    )
    db_retry_max_s: float = Field(
        30.0, gt=0, description="Cap of the backoff while the database is unreachable."
    )

    # --- verification ---------------------------------------------------------------
    max_event_bytes: int = Field(
        64 * 1024, ge=256, description="Larger messages are dead-lettered as too_large."
    )
    max_clock_skew_s: float = Field(
        300.0, gt=0,
        description="issued_at further than this from when the message reached the broker is stale.",
    )
    registry_refresh_s: float = Field(
        2.0, gt=0, description="How often workers reload the key registry from Postgres."
    )
    keyring_refresh_s: float = Field(
        30.0, gt=0,
        description="How often workers re-read worker-keyring.json to seal under a rotated "
                    "tier key (a rotation or forget also makes them re-read at their next batch).",
    )
    seen_cache_size: int = Field(
        200_000, ge=0, description="event_ids kept in memory for the fast replay check (~145 bytes each)."
    )

    # --- encryption on the wire (nested JWT, docs/events.md) -----------------------------
    intake_keys_path: Path | None = Field(
        None, description="Folder of Attest's intake keys (private P-256 JWKs, 0600) that "
        "producers encrypt to; default: <state_dir>/intake-keys.",
    )
    encrypted_sources: str = Field(
        "", description="Removed: must stay unset. Which events must arrive encrypted is a flag "
        "of each signing key in the registry (`attest keys require-encryption KID`), which the "
        "worker, `attest replay` and `attest dlq retry` all honour; any value is refused so a "
        "deployment that set it learns that instead of silently losing the rule.",
    )

    @field_validator("encrypted_sources")
    @classmethod
    def _encrypted_sources_removed(cls, value: str) -> str:
        """Refuse the old per-process rule loudly: ignored, it would fail open.

        It lived in whichever process ran intake, so a replay from an operator's shell that
        lacked it stored what the worker refused (review finding). The registry decides now.
        """
        if value.strip():
            raise ValueError(
                "ATTEST_ENCRYPTED_SOURCES was removed: require encryption per signing key with "
                "`attest keys require-encryption KID` (docs/events.md, \"Which keys must "
                "encrypt\"), then unset the variable")
        return value

    # --- topic retention (docs/operations.md) ------------------------------------------
    intake_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=-1,
        description="retention.ms of new intake topics (-1: forever). Replays, `dlq retry` and "
        "the log probe need the original there; keep it >= the dead-letter retention.",
    )
    dead_letter_retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=-1, description="retention.ms of a new dead-letter topic.",
    )
    audit_retention_ms: int = Field(
        -1, ge=-1, description="retention.ms of a new audit topic (-1: forever; published "
        "checkpoints are read back from it by `attest audit verify`).",
    )

    # --- worker -----------------------------------------------------------------------
    worker_web_port: int = Field(6066, ge=0, description="Faust web port (metrics, health).")
    enrichment_web_port: int = Field(
        6067, ge=0, description="Web port (metrics) of the enrichment stage's process."
    )
    worker_web_enabled: bool = Field(True, description="Serve the worker's web endpoint (/metrics).")
    worker_web_host: str = Field(
        "127.0.0.1", description="Where `attest status` reaches the worker's web endpoint."
    )
    worker_web_bind: str = Field(
        "127.0.0.1",
        description="Address the worker's web endpoint (/metrics, /health) listens on; "
                    "0.0.0.0 exposes it on every interface (docker-compose, for Prometheus).",
    )
    status_max_lag: int = Field(
        10_000, ge=0, description="`attest status` fails when a partition lags more than this."
    )
    log_level: Literal["debug", "info", "warn", "error", "crit"] = Field(
        "warn", description="Worker log level."
    )

    # --- inference (the shared model pool) -------------------------------------------
    model_dir: Path | None = Field(
        None, description="Local Hugging Face model folder; unset: the bundled all-MiniLM-L6-v2."
    )
    inference_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA when present."
    )
    inference_precision: Literal["fp32", "int8", "fp16"] = Field(
        "fp32", description="int8: dynamic quantization (CPU only); fp16: half precision (GPU only)."
    )
    inference_max_batch: int = Field(64, ge=1, description="Most texts per model call.")
    inference_max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a request waits for others to fill a batch."
    )
    inference_queue_size: int = Field(
        4096, ge=1, description="Pending texts before callers are made to wait (backpressure)."
    )
    inference_timeout_s: float = Field(30.0, gt=0, description="Per-request inference timeout.")
    inference_cache_size: int = Field(
        20_000, ge=0, description="Embeddings kept by content hash (0 disables the cache)."
    )
    inference_threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default).")

    # --- audit trail --------------------------------------------------------------------
    audit_checkpoint_every: int = Field(
        1000, ge=1, description="Sign a checkpoint of the audit chain after this many records."
    )
    audit_checkpoint_interval_s: float = Field(
        60.0, gt=0, description="...or after this many seconds with new records."
    )
    audit_signers_dir: Path | None = Field(
        None, description="Folder of this installation's audit-signing keys, one private JWK per "
        "component (worker.jwk, operator.jwk), 0600 (unset: <state dir>/audit-signers)."
    )
    audit_public_key: str | None = Field(
        None, description="The public JWK `attest audit verify` trusts for checkpoint signatures: "
        "a file's path or the JSON itself (unset: the key pinned by `attest audit pin`)."
    )

    # --- reconciliation (docs/reconciliation.md) -----------------------------------------
    recon_amount_tolerance: float = Field(
        0.05, ge=0, description="Amounts agree within this absolute difference (rounding)."
    )
    recon_amount_tolerance_pct: float = Field(
        0.5, ge=0, description="...or within this percentage of the amount (FX), whichever is larger."
    )
    recon_date_window_days: int = Field(
        4, ge=0, description="Value dates agree within this many calendar days (weekends, holidays)."
    )
    recon_window_days: int = Field(
        10, ge=1, description="A record waits this long past its value date before it becomes a break."
    )
    recon_accept_score: float = Field(
        0.80, ge=0, le=1, description="Matches scoring at least this are matched without an analyst."
    )
    recon_suggest_score: float = Field(
        0.55, ge=0, le=1, description="...at least this are suggested to an analyst; below, not proposed."
    )
    recon_max_group: int = Field(4, ge=2, le=8, description="Most records subset-sum groups on one side.")
    recon_fuzzy: bool = Field(True, description="Run the fuzzy stage (text similarity).")
    recon_model_similarity: bool = Field(
        True, description="The fuzzy stage also asks the model pool (else string distance only)."
    )

    # --- access service (identity, policy, approvals, reads) ------------------------------
    oidc_issuer: str = Field(
        "urn:attest:local-issuer",
        description="The iss every access token must carry (default: the built-in issuer).",
    )
    oidc_jwks: str | None = Field(
        None, description="The issuer's JWKS: a file or an https URL (unset: the built-in issuer's)."
    )
    oidc_audience: str = Field("attest-access", description="The aud every access token must carry.")
    access_url: str = Field(
        "http://127.0.0.1:8650", description="Where clients (attest query/access) reach the service."
    )
    access_host: str = Field("127.0.0.1", description="Address `attest serve` listens on.")
    access_port: int = Field(8650, ge=0, le=65535, description="Port `attest serve` listens on.")
    access_policies: str = Field(
        "government,finance", description="Policies the service loads at start (bundled names or paths)."
    )
    access_database_url: str | None = Field(
        None, description="The service's own database login (unset: ATTEST_DATABASE_URL)."
    )
    access_lookups_per_minute: int = Field(
        30, ge=1, description="Reads by identifier (blind-index lookups) per person per minute."
    )
    access_request_max_days: float = Field(
        30.0, gt=0, description="Longest an access request (and its approvals) may stay valid."
    )

    # --- embedded stack ---------------------------------------------------------------
    dev_kafka_port: int = Field(
        19092, ge=0, description="Preferred port of the embedded broker (0: any free port)."
    )
    dev_postgres_port: int = Field(
        15432, ge=0, description="Preferred port of the embedded Postgres (0: any free port)."
    )
    dev_postgres_auth: Literal["trust", "scram-sha-256"] = Field(
        "scram-sha-256", description="Authentication of a newly initialised embedded Postgres: "
        "scram-sha-256 gives every login a generated password kept 0600 in the state folder; "
        "trust (no passwords) is for throwaway local runs only. A cluster keeps what it was "
        "initialised with."
    )

    @property
    def service_key_path(self) -> Path:
        """Attest's own Ed25519 key (signs audit checkpoints), created 0600 on first use."""
        return self.state_dir / "service-key.jwk"

    def audit_signer_key_path(self, component: str) -> Path:
        """The private audit-signing key of ``component`` (``worker``, ``operator``), 0600."""
        return (self.audit_signers_dir or self.state_dir / "audit-signers") / f"{component}.jwk"

    @property
    def keys_dir(self) -> Path:
        """Private signing keys made by ``attest keys generate`` (files 0600)."""
        return self.state_dir / "keys"

    @property
    def intake_keys_dir(self) -> Path:
        """Attest's intake keys (``attest keys intake-key generate``; files 0600)."""
        return self.intake_keys_path or self.state_dir / "intake-keys"

    def topic(self, suffix: str) -> str:
        """The full topic name for a logical topic (``transactions`` -> ``attest.transactions``)."""
        return f"{self.topic_prefix}{suffix}"


def _with_dev_stack(settings: Settings) -> Settings:
    """Fill unset addresses from the state folder's stack file written by ``attest dev up``."""
    stack_file = settings.state_dir / STACK_FILE
    unset = {"kafka_bootstrap", "database_url"} - settings.model_fields_set
    if "database_url" in unset and "access_database_url" not in settings.model_fields_set:
        # The access service's own login on the same embedded server (never another server's).
        unset.add("access_database_url")
    if not unset or not stack_file.is_file():
        return settings
    try:
        stack = json.loads(stack_file.read_text())
    except (OSError, ValueError):
        return settings
    update = {name: stack[name] for name in unset if isinstance(stack.get(name), str) and stack[name]}
    return settings.model_copy(update=update) if update else settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings: environment first, then the dev stack, then defaults."""
    return _with_dev_stack(Settings())


#: Environment variables that carry key material for the environment keyring provider
#: (docs/security.md). They are secrets, not settings: never logged, never in Settings' repr.
SECRET_ENV_PREFIXES = ("ATTEST_KEK_", "ATTEST_BLIND_INDEX_")


def secret_environ() -> dict[str, str]:
    """The ``ATTEST_KEK_*`` / ``ATTEST_BLIND_INDEX_*`` variables, for the keyring provider."""
    return {k: v for k, v in os.environ.items() if k.startswith(SECRET_ENV_PREFIXES)}


def setting_env_names() -> set[str]:
    """Every environment variable name that is a real setting (used to check docker-compose)."""
    return {f"ATTEST_{name.upper()}" for name in Settings.model_fields}
