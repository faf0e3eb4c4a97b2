"""docker-compose.yml and Dockerfile stay consistent with the settings (no services needed).

Every ``ATTEST_*`` variable the compose file sets must be a real setting (a typo would be
silently ignored by pydantic-settings), and each service's configuration must validate.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from config.settings import Settings, setting_env_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PREFIX = "ATTEST_"


def load_compose() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    return compose


def service_env(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a dict; compose allows a mapping or a KEY=VALUE list.

    A bare ``KEY`` (passed through from the host) maps to None.
    """
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def attest_env(service: dict[str, Any]) -> dict[str, str | None]:
    return {k: v for k, v in service_env(service).items() if k.startswith(PREFIX)}


def unknown_attest_vars(compose: dict[str, Any]) -> dict[str, set[str]]:
    """Per service, the ATTEST_* names that are not settings (empty when all is well)."""
    valid = setting_env_names()
    unknown = {
        name: set(attest_env(service)) - valid for name, service in compose["services"].items()
    }
    return {name: bad for name, bad in unknown.items() if bad}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def services_with_attest_env() -> list[str]:
    return [name for name, svc in load_compose()["services"].items() if attest_env(svc)]


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]) -> Settings:
    """Build Settings the way a container does: from the process environment only."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(key, value)
    return Settings()


# --- docker-compose.yml -------------------------------------------------------------------


def test_required_services_exist() -> None:
    services = load_compose()["services"]
    assert {"kafka", "postgres", "migrate", "worker"} <= set(services)


def test_every_attest_variable_is_a_setting() -> None:
    compose = load_compose()
    assert any(attest_env(svc) for svc in compose["services"].values())
    assert unknown_attest_vars(compose) == {}


def test_unknown_variable_check_catches_a_typo() -> None:
    """The check above is not vacuous: a misspelt setting in any service is reported."""
    compose = load_compose()
    compose["services"]["worker"]["environment"] = {
        **service_env(compose["services"]["worker"]),
        "ATTEST_KAFKA_BOOTSRAP": "kafka:9092",
    }
    compose["services"]["migrate"]["environment"] = ["ATTEST_LOGLEVEL=info"]
    unknown = unknown_attest_vars(compose)
    assert "ATTEST_KAFKA_BOOTSRAP" in unknown.get("worker", set())
    assert "ATTEST_LOGLEVEL" in unknown.get("migrate", set())


def test_migrate_and_worker_commands() -> None:
    services = load_compose()["services"]
    assert command_of(services["migrate"]) == ["db", "upgrade"]
    assert command_of(services["worker"]) == ["worker"]


def test_attest_services_get_their_configuration() -> None:
    services = load_compose()["services"]
    for name in ("migrate", "worker"):
        env = attest_env(services[name])
        assert {"ATTEST_KAFKA_BOOTSTRAP", "ATTEST_DATABASE_URL"} <= set(env), name
    assert not attest_env(services["kafka"])
    assert not attest_env(services["postgres"])


def test_startup_order() -> None:
    services = load_compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["migrate"]["condition"] == "service_completed_successfully"
    assert worker_deps["kafka"]["condition"] in {"service_healthy", "service_started"}
    assert "pg_isready" in json.dumps(services["postgres"]["healthcheck"]["test"])


@pytest.mark.parametrize("service_name", services_with_attest_env())
def test_service_environment_validates(
    monkeypatch: pytest.MonkeyPatch, service_name: str
) -> None:
    env = attest_env(load_compose()["services"][service_name])
    settings = settings_from_env(monkeypatch, env)
    # Every variable was actually picked up (none silently ignored) and parsed.
    picked = {f"{PREFIX}{name.upper()}" for name in settings.model_fields_set}
    assert picked == {key for key, value in env.items() if value is not None}
    assert settings.kafka_bootstrap == env["ATTEST_KAFKA_BOOTSTRAP"]
    assert settings.database_url == env["ATTEST_DATABASE_URL"]


def test_bootstrap_is_a_kafka_advertised_listener() -> None:
    services = load_compose()["services"]
    advertised = service_env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"] or ""
    addresses = {listener.split("://", 1)[1] for listener in advertised.split(",")}
    for name in ("migrate", "worker"):
        bootstrap = attest_env(services[name])["ATTEST_KAFKA_BOOTSTRAP"] or ""
        assert set(bootstrap.split(",")) <= addresses, name


def test_database_url_matches_postgres_service() -> None:
    services = load_compose()["services"]
    pg = service_env(services["postgres"])
    for name in ("migrate", "worker"):
        url = urlsplit(attest_env(services[name])["ATTEST_DATABASE_URL"] or "")
        assert url.hostname == "postgres", name
        assert url.username == pg["POSTGRES_USER"], name
        assert url.password == pg["POSTGRES_PASSWORD"], name
        assert url.path.lstrip("/") == pg["POSTGRES_DB"], name


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


def last(instruction: str) -> str:
    values = [args for keyword, args in dockerfile_instructions() if keyword == instruction]
    assert values, f"Dockerfile has no {instruction}"
    return values[-1]


def test_dockerfile_entrypoint_is_attest() -> None:
    assert json.loads(last("ENTRYPOINT")) == ["attest"]
    assert json.loads(last("CMD")) == ["worker"]


def test_dockerfile_runs_as_non_root() -> None:
    user = last("USER").split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_base_and_install() -> None:
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms and all(args.split()[0] == "python:3.11-slim" for args in froms)
    runs = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN")
    assert re.search(r"pip install [^&]*--extra-index-url [^&]* \.(\s|$)", runs)
    assert "https://download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip() for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".attest", ".git"} <= patterns
