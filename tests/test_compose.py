"""docker-compose.yml and Dockerfile stay consistent with the settings (no services needed).

Every ``ATTEST_*`` variable the compose file sets must be a real setting (a typo would be
silently ignored by pydantic-settings), and each service's configuration must validate.
A service's env files (``env_file``, never committed) are read from their committed
``*.example`` twins. Only ``migrate`` connects to Postgres as the owner; the worker and the
access service use their own least-privilege logins, which the ``logins`` service creates.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
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
LOGINS_SQL = ROOT / "compose" / "logins.sql"
MAKE_SECRETS = ROOT / "compose" / "make-secrets.sh"
PREFIX = "ATTEST_"
OWNER = "attest"  # POSTGRES_USER: a superuser in the postgres image


def load_compose() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    return compose


def env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file") or []
    return [files] if isinstance(files, str) else [f if isinstance(f, str) else f["path"] for f in files]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as compose reads an env file."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value for key, value in pairs}


def service_env(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a dict; compose allows a mapping or a KEY=VALUE list.

    A bare ``KEY`` (passed through from the host) maps to None. Its env files come first
    (read from their committed ``.example`` twins); ``environment`` overrides them, as in compose.
    """
    merged: dict[str, str | None] = {}
    for name in env_files(service):
        merged.update(read_env_file(ROOT / f"{name}.example"))
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {**merged, **{key: value for key, value in pairs}}
    return {**merged, **{key: None if value is None else str(value) for key, value in env.items()}}


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
    assert pg["POSTGRES_USER"] == OWNER
    logins = {"migrate": OWNER, "worker": "attest_worker", "access": "attest_access"}
    for name, login in logins.items():
        env = attest_env(services[name])
        url = urlsplit(env["ATTEST_DATABASE_URL"] or "")
        assert url.hostname == "postgres", name
        assert url.username == login, name
        assert url.password, name  # a placeholder here; compose/make-secrets.sh makes real ones
        assert url.path.lstrip("/") == pg["POSTGRES_DB"], name
    assert attest_env(services["access"])["ATTEST_ACCESS_DATABASE_URL"] == attest_env(
        services["access"])["ATTEST_DATABASE_URL"]


# --- database logins: only migrate is the owner ---------------------------------------------


def database_logins(service: dict[str, Any]) -> set[str]:
    """Every database login a service's configuration names (URLs, PGUSER)."""
    env = service_env(service)
    found = {urlsplit(value).username or "" for key, value in env.items()
             if key.endswith("DATABASE_URL") and value}
    return found | ({env["PGUSER"] or ""} if "PGUSER" in env else set())


def test_no_service_but_migrate_and_logins_uses_the_owner() -> None:
    services = load_compose()["services"]
    owners = {name for name, svc in services.items() if OWNER in database_logins(svc)}
    # logins runs psql as the owner to create the logins; it runs no Attest code.
    assert owners == {"migrate", "logins"}
    assert services["logins"]["image"].startswith("postgres:")
    assert not attest_env(services["logins"])
    for name, service in services.items():
        if attest_env(service) and name != "migrate":
            assert database_logins(service) and OWNER not in database_logins(service), name
            assert service.get("env_file"), f"{name} must take its database URL from an env file"


def test_no_password_is_committed_in_the_compose_file() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        env = service.get("environment") or {}
        env = dict(item.split("=", 1) for item in env) if isinstance(env, list) else env
        for key, value in env.items():
            assert "PASSWORD" not in key or key.endswith("_FILE"), (name, key)
            if key.endswith("DATABASE_URL"):
                assert urlsplit(str(value)).password is None, (name, key)
    for example in (ROOT / "compose" / "secrets").glob("*.env.example"):
        for key, value in read_env_file(example).items():
            secret = urlsplit(value).password if "://" in value else value
            assert secret == "CHANGE-ME" or "PASSWORD" not in key and "://" not in value, (example, key)


def test_the_logins_service_runs_after_migrate_and_before_the_services() -> None:
    services = load_compose()["services"]
    logins = services["logins"]
    assert logins["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert logins["entrypoint"][0] == "psql" and "ON_ERROR_STOP=1" in logins["entrypoint"]
    sql_config = load_compose()["configs"][logins["configs"][0]["source"]]
    assert (ROOT / sql_config["file"]).resolve() == LOGINS_SQL
    assert logins["configs"][0]["target"] == logins["entrypoint"][-1]
    assert {"WORKER_DB_PASSWORD", "ACCESS_DB_PASSWORD", "PGPASSWORD"} <= set(service_env(logins))
    for name in ("worker", "access"):
        assert services[name]["depends_on"]["logins"]["condition"] == "service_completed_successfully"


def test_logins_sql_gives_each_login_its_group_only() -> None:
    sql = LOGINS_SQL.read_text()
    grants = set(re.findall(r"(?m)^GRANT (\w+) TO (\w+);", sql))
    assert grants == {("attest_app", "attest_worker"), ("attest_access_service", "attest_access")}
    for login in ("attest_worker", "attest_access"):
        alter = re.search(rf"ALTER ROLE {login} WITH ([^;]+);", sql)
        assert alter, login
        assert all(word in alter.group(1) for word in (
            "LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", "NOBYPASSRLS", "PASSWORD :'"))
    assert "NOINHERIT" in re.search(r"CREATE ROLE attest_access_service [^']+", sql).group(0)
    assert "\\getenv" in sql  # passwords from the environment, on no command line


def test_env_files_are_never_committed_or_built_in() -> None:
    services = load_compose()["services"]
    names = {name for service in services.values() for name in env_files(service)}
    assert names
    tracked = subprocess.run(["git", "ls-files", "compose"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in names:
        assert name not in tracked, name
        assert (ROOT / f"{name}.example").is_file(), name
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{name} is not ignored by git"
    dockerignore = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert "compose/secrets" in dockerignore


def test_make_secrets_writes_consistent_private_files(tmp_path: Path) -> None:
    subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path)], check=True, capture_output=True)
    files = {path.name: read_env_file(path) for path in tmp_path.glob("*.env")}
    for path in tmp_path.glob("*.env"):
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert set(files[path.name]) == set(read_env_file(
            ROOT / "compose" / "secrets" / f"{path.name}.example")), path.name
    owner = files["postgres.env"]["POSTGRES_PASSWORD"]
    assert len(owner) >= 32
    assert files["logins.env"]["PGPASSWORD"] == owner
    assert urlsplit(files["migrate.env"]["ATTEST_DATABASE_URL"]).password == owner
    worker = urlsplit(files["worker.env"]["ATTEST_DATABASE_URL"])
    access = urlsplit(files["access.env"]["ATTEST_DATABASE_URL"])
    assert worker.password == files["logins.env"]["WORKER_DB_PASSWORD"] != owner
    assert access.password == files["logins.env"]["ACCESS_DB_PASSWORD"] != owner
    assert len({owner, worker.password, access.password}) == 3
    # The worker's file holds no other login's password.
    assert owner not in (tmp_path / "worker.env").read_text()
    again = subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path)], capture_output=True, check=False)
    assert again.returncode != 0  # never overwrites
    assert read_env_file(tmp_path / "postgres.env")["POSTGRES_PASSWORD"] == owner


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
