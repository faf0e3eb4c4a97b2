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
    # The audit stage runs apart, as its own Kafka principal (the only one reading audit).
    assert command_of(services["worker"]) == ["worker", "--role", "intake,enrichment,reconciliation"]
    assert command_of(services["audit-sink"]) == ["worker", "--role", "audit"]
    from streams.app import ROLES

    worker_roles = command_of(services["worker"])[2].split(",")
    assert sorted(worker_roles + ["audit"]) == sorted(ROLES)  # every stage runs somewhere


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
    assert settings.kafka_security_protocol == "SASL_SSL"


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
            # a password setting names a file, or is a Kafka FileConfigProvider reference
            assert ("PASSWORD" not in key or key.endswith("_FILE")
                    or re.fullmatch(r"\$\$\{file:/run/secrets/[\w-]+:[\w.]+\}", str(value))), (name, key)
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


# --- Kafka's door: SASL_SSL, mutual TLS for the broker's own listeners, ACLs -----------------

KAFKA_ACLS = ROOT / "compose" / "kafka-acls.sh"
KAFKA_FILES = {"kafka-admin.properties", "kafka-healthcheck.properties", "kafka-server-jaas.conf",
               "kafka-acls.sh"}
PRINCIPALS = {"attest-worker", "attest-sink", "attest-operator", "attest-access",
              "producer-transactions", "producer-documents", "producer-approvals"}


def kafka_listeners(compose: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """(listener name -> port, listener name -> security protocol) of the kafka service."""
    env = service_env(compose["services"]["kafka"])
    ports = {name: int(address.rsplit(":", 1)[1]) for name, address in
             (item.split("://", 1) for item in (env["KAFKA_LISTENERS"] or "").split(","))}
    protocols = dict(item.split(":", 1) for item in
                     (env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] or "").split(","))
    return ports, protocols


def published_container_ports(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes on the host (short or long syntax)."""
    ports = set()
    for item in service.get("ports") or []:
        target = item["target"] if isinstance(item, dict) else str(item).split(":")[-1]
        ports.add(int(str(target).split("/")[0]))
    return ports


def test_no_plaintext_kafka_listener_and_only_sasl_ssl_is_published() -> None:
    compose = load_compose()
    ports, protocols = kafka_listeners(compose)
    assert set(ports) == set(protocols)
    assert "PLAINTEXT" not in protocols.values() and "SASL_PLAINTEXT" not in protocols.values()
    published = published_container_ports(compose["services"]["kafka"])
    assert published
    for name, port in ports.items():
        if port in published:
            assert protocols[name] == "SASL_SSL", name
    env = service_env(compose["services"]["kafka"])
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    # the broker's own listeners take a CA-signed certificate or nothing, and are not published
    for name in ("BROKER", "CONTROLLER"):
        assert protocols[name] == "SSL" and ports[name] not in published
        assert env[f"KAFKA_LISTENER_NAME_{name}_SSL_CLIENT_AUTH"] == "required"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "BROKER"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_SSL_TRUSTSTORE_LOCATION"] == "/run/secrets/kafka-ca"
    assert "kafka-server-jaas.conf" in (env["KAFKA_OPTS"] or "")


def test_the_plaintext_check_fails_on_the_old_listener_map() -> None:
    """The check above is not vacuous: the PLAINTEXT compose file it replaced fails it."""
    compose = load_compose()
    compose["services"]["kafka"]["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] = (
        "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,BROKER:SSL,CONTROLLER:SSL")
    _, protocols = kafka_listeners(compose)
    assert "PLAINTEXT" in protocols.values()


def test_the_broker_refuses_what_no_acl_allows() -> None:
    env = service_env(load_compose()["services"]["kafka"])
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    # super users: the broker's certificate and the kafka-acls service's, never a SCRAM login
    assert set((env["KAFKA_SUPER_USERS"] or "").split(";")) == {"User:CN=kafka", "User:CN=attest-admin"}


def test_the_broker_key_password_comes_from_a_file() -> None:
    env = service_env(load_compose()["services"]["kafka"])
    assert env["KAFKA_CONFIG_PROVIDERS"] == "file"
    # compose turns $$ into $: Kafka reads ${file:...} and resolves it from the secret file
    assert env["KAFKA_SSL_KEY_PASSWORD"] == "$${file:/run/secrets/kafka-broker-key:key.password}"
    for name in ("kafka-admin.properties", "kafka-healthcheck.properties"):
        props = dict(line.split("=", 1) for line in (ROOT / "compose" / name).read_text().splitlines()
                     if line and not line.startswith("#"))
        assert props["security.protocol"] == "SSL" and props["ssl.keystore.type"] == "PEM", name
        assert props["ssl.key.password"].startswith("${file:/run/secrets/"), name
        assert props["ssl.truststore.location"] == "/run/secrets/kafka-ca", name


def test_every_attest_service_logs_in_as_its_own_principal() -> None:
    services = load_compose()["services"]
    expected = {"worker": "attest-worker", "audit-sink": "attest-sink", "cli": "attest-operator",
                "access": "attest-access"}
    for name, principal in expected.items():
        env = attest_env(services[name])
        assert env["ATTEST_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["ATTEST_KAFKA_USERNAME"] == principal, name
        secret = f"kafka-{principal}"
        assert env["ATTEST_KAFKA_PASSWORD_FILE"] == f"/run/secrets/{secret}", name
        assert env["ATTEST_KAFKA_CA_FILE"] == "/run/secrets/kafka-ca", name
        assert set(services[name]["secrets"]) == {"kafka-ca", secret}, name  # its own only
        assert "ATTEST_KAFKA_PASSWORD" not in env, name
    # a service with no Kafka login of its own (migrate) holds no Kafka secret
    assert "ATTEST_KAFKA_USERNAME" not in attest_env(services["migrate"])
    assert not services["migrate"].get("secrets")


def test_kafka_secrets_are_files_make_secrets_writes(tmp_path: Path) -> None:
    compose = load_compose()
    subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path)], check=True, capture_output=True)
    for name, secret in compose["secrets"].items():
        path = Path(secret["file"])
        assert path.parts[:3] == ("compose", "secrets", "kafka"), name
        made = tmp_path / "kafka" / path.name
        assert made.is_file(), name
        if name != "kafka-ca":
            assert made.stat().st_mode & 0o777 == 0o600, name
    assert {f"kafka-{p}" for p in PRINCIPALS} <= set(compose["secrets"])


def test_kafka_acls_runs_before_the_services_as_the_admin() -> None:
    services = load_compose()["services"]
    acls = services["kafka-acls"]
    assert acls["image"] == services["kafka"]["image"]
    assert acls["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert acls["entrypoint"] == ["sh", "/attest/kafka-acls.sh"]
    configs = load_compose()["configs"]
    targets = {c["target"]: (ROOT / configs[c["source"]]["file"]).resolve() for c in acls["configs"]}
    assert targets["/attest/kafka-acls.sh"] == KAFKA_ACLS
    assert set(acls["secrets"]) == {"kafka-ca", "kafka-admin-pem", "kafka-admin-key"} | {
        f"kafka-{p}" for p in PRINCIPALS}
    env = service_env(acls)
    settings = Settings()
    assert env["TOPIC_PREFIX"] == settings.topic_prefix and env["APP_ID"] == settings.app_id
    assert not attest_env(acls)
    for name in ("worker", "audit-sink", "access", "cli"):
        assert services[name]["depends_on"]["kafka-acls"]["condition"] == (
            "service_completed_successfully"), name
    for name in KAFKA_FILES:
        assert (ROOT / "compose" / name).is_file()


def acl_grants() -> set[tuple[str, str, str, str, str]]:
    """Every grant compose/kafka-acls.sh makes, parsed from its ``acl`` lines with the shell's
    own word splitting, loops unrolled: (principal, operation, resource type, pattern type,
    resource name)."""
    import shlex

    text = re.sub(r"\\\n\s*", " ", KAFKA_ACLS.read_text())
    prefix, app = "attest.", "attest"
    grants = set()

    def expand(line: str, **loop: str) -> str:
        line = line.replace("${PREFIX}", prefix).replace("${APP}", app)
        for name, value in loop.items():
            line = line.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return line

    lines: list[str] = []
    loop_re = re.compile(r'^for (\w+) in ([^;]+); do\n((?:.*\n)*?)done$', re.M)
    for match in loop_re.finditer(text):
        var, values = match.group(1), shlex.split(expand(match.group(2)))
        body = [b.strip() for b in match.group(3).splitlines() if b.strip().startswith("acl ")]
        lines += [expand(b, **{var: v}) for v in values for b in body]
    text = loop_re.sub("", text)
    lines += [expand(line.strip()) for line in text.splitlines() if line.strip().startswith("acl ")]
    for line in lines:
        words = shlex.split(line)
        principal, options = words[1], words[2:]
        ops = [options[i + 1] for i, w in enumerate(options) if w == "--operation"]
        pattern = next((options[i + 1] for i, w in enumerate(options)
                        if w == "--resource-pattern-type"), "literal")
        kinds = [(w[2:], options[i + 1]) for i, w in enumerate(options)
                 if w in ("--topic", "--group", "--cluster")]
        assert len(kinds) == 1 and ops, line
        for op in ops:
            grants.add((principal, op, kinds[0][0], pattern, kinds[0][1]))
    return grants


def can(grants: set[tuple[str, str, str, str, str]], principal: str, op: str, kind: str,
        name: str) -> bool:
    """Whether a literal or prefixed grant lets ``principal`` do ``op`` on ``kind`` ``name``."""
    implied = {"Describe": {"Read", "Write"}}  # Kafka: Read and Write imply Describe
    ops = {op} | implied.get(op, set())
    return any(p == principal and o in ops and k == kind and (
        (pat == "literal" and n == name) or (pat == "prefixed" and name.startswith(n)))
        for p, o, k, pat, n in grants)


def test_acl_script_lines_parse_and_name_only_known_principals() -> None:
    grants = acl_grants()
    assert {g[0] for g in grants} == PRINCIPALS
    text = KAFKA_ACLS.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "User:*" not in code and "ANONYMOUS" not in code
    assert "--deny-principal" not in text and "--operation All" not in text
    # passwords go through a private file, never a command line (no --add-config k=v)
    assert "--add-config-file" in code and "--add-config " not in code
    assert not re.search(r"password=[^%\"]", code)
    # every principal's SCRAM login is set, from its secret file
    assert re.search(r"for principal in attest-worker attest-sink attest-operator attest-access "
                     r"producer-transactions producer-documents producer-approvals; do scram",
                     " ".join(re.sub(r"\\\n", " ", code).split()))
    subprocess.run(["sh", "-n", str(KAFKA_ACLS)], check=True)  # the shell parses it


def test_each_producer_writes_only_its_intake_topic() -> None:
    grants = acl_grants()
    topics = {f"attest.{t}" for t in ("transactions", "documents", "approvals", "audit",
                                      "dead-letter", "reconciliation")}
    for source in ("transactions", "documents", "approvals"):
        principal = f"producer-{source}"
        assert can(grants, principal, "Write", "topic", f"attest.{source}")
        for topic in topics - {f"attest.{source}"}:
            assert not can(grants, principal, "Write", "topic", topic), (principal, topic)
        assert not any(g[0] == principal and g[1] in {"Read", "Create", "Alter", "Delete"}
                       for g in grants)


def test_only_the_worker_and_the_sink_write_dead_letter_and_audit() -> None:
    grants = acl_grants()
    writers = {p for p in PRINCIPALS if can(grants, p, "Write", "topic", "attest.dead-letter")}
    assert writers == {"attest-worker"}
    audit_writers = {p for p in PRINCIPALS if can(grants, p, "Write", "topic", "attest.audit")}
    # the operator's CLI actions are audited too (their records go to the audit topic)
    assert audit_writers == {"attest-worker", "attest-sink", "attest-operator"}


def test_only_the_sink_and_the_operator_read_audit() -> None:
    grants = acl_grants()
    readers = {p for p in PRINCIPALS if can(grants, p, "Read", "topic", "attest.audit")}
    assert readers == {"attest-sink", "attest-operator"}  # the sink; audit tail/verify
    assert can(grants, "attest-sink", "Read", "group", "attest-audit")
    assert not can(grants, "attest-worker", "Read", "group", "attest-audit")


def test_the_worker_reads_intake_with_its_stage_groups() -> None:
    grants = acl_grants()
    from streams.topics import stage_topics

    settings = Settings()
    for stage, topics in stage_topics(settings).items():
        principal = "attest-sink" if stage == "audit" else "attest-worker"
        group = settings.app_id if stage == "intake" else f"{settings.app_id}-{stage}"
        assert can(grants, principal, "Read", "group", group), stage
        for topic in topics:
            assert can(grants, principal, "Read", "topic", topic), (stage, topic)
    for topic in ("dead-letter", "reconciliation", "audit"):
        assert can(grants, "attest-worker", "Write", "topic", f"attest.{topic}")
    # Faust's own topics (the assignor's leader topic, table changelogs), per stage app
    for app in ("attest", "attest-enrichment", "attest-reconciliation"):
        leader = f"{app}-__assignor-__leader"
        assert can(grants, "attest-worker", "Write", "topic", leader)
        assert can(grants, "attest-worker", "Create", "topic", leader)
    assert can(grants, "attest-sink", "Create", "topic", "attest-audit-__assignor-__leader")


def test_the_access_service_reads_dead_letters_only() -> None:
    grants = acl_grants()
    mine = {g for g in grants if g[0] == "attest-access"}
    assert mine == {
        ("attest-access", "Read", "topic", "literal", "attest.dead-letter"),
        ("attest-access", "Describe", "topic", "literal", "attest.dead-letter"),
        ("attest-access", "Read", "group", "prefixed", "attest-dlq-"),
    }


def test_the_acl_checks_catch_a_too_wide_grant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: a producer allowed to write the audit topic is caught."""
    wider = tmp_path / "kafka-acls.sh"
    wider.write_text(KAFKA_ACLS.read_text() + '\nacl producer-documents --operation Write '
                     '--topic "${PREFIX}audit"\n')
    import sys

    monkeypatch.setattr(sys.modules[__name__], "KAFKA_ACLS", wider)
    with pytest.raises(AssertionError):
        test_only_the_worker_and_the_sink_write_dead_letter_and_audit()
    with pytest.raises(AssertionError):
        test_each_producer_writes_only_its_intake_topic()


def test_make_secrets_issues_a_ca_and_certificates_openssl_verifies(tmp_path: Path) -> None:
    subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path)], check=True, capture_output=True)
    kafka = tmp_path / "kafka"
    for name in ("broker", "admin"):
        pem = (kafka / f"{name}.pem").read_text()
        assert pem.count("BEGIN ENCRYPTED PRIVATE KEY") == 1, name  # Kafka's PEM key store
        leaf = pem[pem.index("-----BEGIN CERTIFICATE-----"):]
        leaf = leaf[:leaf.index("-----END CERTIFICATE-----") + 25] + "\n"
        (tmp_path / f"{name}.crt").write_text(leaf)
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(kafka / "ca.crt"),
                                 str(tmp_path / f"{name}.crt")], capture_output=True, text=True)
        assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify
        props = read_env_file(kafka / f"{name}-key.properties")
        assert len(props["key.password"]) >= 32
        opened = subprocess.run(["openssl", "pkey", "-noout", "-passin", "stdin"], input=(
            props["key.password"] + "\n" + pem).encode(), capture_output=True)
        assert opened.returncode == 0, opened.stderr  # the key opens with its password file
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "broker.crt")],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:kafka" in text and "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    passwords = {p: (kafka / f"{p}.password").read_text().strip() for p in PRINCIPALS}
    assert len(set(passwords.values())) == len(PRINCIPALS)
    assert all(len(v) >= 32 for v in passwords.values())
    for path in kafka.iterdir():
        expected = 0o644 if path.name == "ca.crt" else 0o600
        assert path.stat().st_mode & 0o777 == expected, path.name
    again = subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path)], capture_output=True, check=False)
    assert again.returncode != 0
    assert (kafka / "attest-worker.password").read_text().strip() == passwords["attest-worker"]


def test_kafka_secrets_are_never_committed_or_built_in(tmp_path: Path) -> None:
    for name in ("compose/secrets/kafka/ca.key", "compose/secrets/kafka/broker.pem",
                 "compose/secrets/kafka/attest-worker.password"):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
        assert ignored.returncode == 0, name
    tracked = subprocess.run(["git", "ls-files", "compose/secrets"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert not [t for t in tracked if "/kafka/" in t]


def test_the_broker_certificate_passes_attests_own_tls_check(tmp_path: Path) -> None:
    """A real TLS handshake on loopback: a server with make-secrets.sh's broker.pem (its key
    opened with its password file), Attest's client context (streams/kafka_security.py) with
    compose's CA. The host names the certificate carries pass; another name does not."""
    import socket
    import ssl
    import threading

    from streams.kafka_security import KafkaSecurity, tls_context

    subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path)], check=True, capture_output=True)
    kafka = tmp_path / "kafka"
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(kafka / "broker.pem", password=read_env_file(
        kafka / "broker-key.properties")["key.password"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    peers: list[str] = []

    def serve(count: int) -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    peers.append(tls.version() or "")
            except (ssl.SSLError, OSError):
                peers.append("refused")

    thread = threading.Thread(target=serve, args=(3,), daemon=True)
    thread.start()
    client = tls_context(KafkaSecurity(protocol="SASL_SSL", ca_file=kafka / "ca.crt"))
    for host in ("localhost", "kafka"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}
            assert tls.getpeercert()["subject"] == ((("commonName", "kafka"),),)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        client.wrap_socket(raw, server_hostname="kafka.elsewhere.example")
    thread.join(timeout=10)
    listener.close()
    assert peers[2] == "refused"


def test_the_acl_script_runs_and_puts_no_password_on_a_command_line(tmp_path: Path) -> None:
    """compose/kafka-acls.sh run for real by sh, with kafka-configs.sh and kafka-acls.sh
    replaced by stand-ins that record their arguments (and the config file they are given):
    every principal's SCRAM login is set from its own password file, no password is on any
    command line, the grants are those the static parse finds, and nothing is left behind."""
    subprocess.run(["sh", str(MAKE_SECRETS), str(tmp_path / "made")], check=True,
                   capture_output=True)
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    passwords = {}
    for principal in PRINCIPALS:
        source = tmp_path / "made" / "kafka" / f"{principal}.password"
        (secrets / f"kafka-{principal}").write_bytes(source.read_bytes())
        passwords[principal] = source.read_text().strip()
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    stand_in = ('#!/bin/sh\nprintf "%s" "$(basename "$0")" >> "$CALLS"\n'
                'for a in "$@"; do printf "\\037%s" "$a" >> "$CALLS"; done\necho >> "$CALLS"\n'
                'prev=""; for a in "$@"; do [ "$prev" = --add-config-file ] && '
                'cat "$a" >> "$CALLS.files"; prev="$a"; done\n')
    for tool in ("kafka-configs.sh", "kafka-acls.sh"):
        (bin_dir / tool).write_text(stand_in)
        (bin_dir / tool).chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"PATH": os.environ["PATH"], "KAFKA_BIN": str(bin_dir), "SECRETS_DIR": str(secrets),
           "KAFKA_ADMIN_CONFIG": "/attest/kafka-admin.properties", "CALLS": str(log),
           "TMPDIR": str(tmp), "TOPIC_PREFIX": "attest.", "APP_ID": "attest"}
    run = subprocess.run(["sh", str(KAFKA_ACLS)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    calls = [line.split("\x1f") for line in log.read_text().splitlines()]
    for tool, *args in calls:
        assert args[:4] == ["--bootstrap-server", "kafka:9091", "--command-config",
                            "/attest/kafka-admin.properties"], (tool, args)
        for password in passwords.values():
            assert not any(password in a for a in args), tool  # no password in any argv
    scram = [args for tool, *args in calls if tool == "kafka-configs.sh"]
    assert sorted(a[a.index("--entity-name") + 1] for a in scram) == sorted(PRINCIPALS)
    assert all(a[4:8] == ["--alter", "--entity-type", "users", "--entity-name"] for a in scram)
    files = (tmp_path / "calls.log.files").read_text().splitlines()
    assert sorted(files) == sorted(f"SCRAM-SHA-512=iterations=8192,password={p}"
                                   for p in passwords.values())
    ran = set()
    for tool, *args in calls:
        if tool != "kafka-acls.sh":
            continue
        assert args[4:7] == ["--add", "--allow-principal", args[6]] and args[6].startswith("User:")
        options = args[7:]
        ops = [options[i + 1] for i, w in enumerate(options) if w == "--operation"]
        pattern = next((options[i + 1] for i, w in enumerate(options)
                        if w == "--resource-pattern-type"), "literal")
        kind, name = next((w[2:], options[i + 1]) for i, w in enumerate(options)
                          if w in ("--topic", "--group"))
        ran |= {(args[6][5:], op, kind, pattern, name) for op in ops}
    assert ran == acl_grants()
    assert list(tmp.iterdir()) == []  # the SCRAM files' private folder is gone
