-- The least-privilege logins of docker-compose.yml, run by its `logins` service (psql, as the
-- database owner) after `migrate`, on every `docker compose up`: creates the logins, or sets
-- their passwords again (rotation: change them in compose/secrets/, then `docker compose up`).
--
--   attest_worker  member of attest_app (the writer role, migrations 0002-0009) and nothing else
--   attest_access  member of attest_access_service (NOINHERIT, migration 0006) and nothing else:
--                  it reaches the department roles only by SET ROLE
--
-- The passwords come from the environment (compose/secrets/logins.env, never committed); psql
-- reads them with \getenv, so they are on no command line. The server stores scram-sha-256
-- verifiers (password_encryption's default), never the passwords.
\set ON_ERROR_STOP on
\set worker_password ''
\set access_password ''
\getenv worker_password WORKER_DB_PASSWORD
\getenv access_password ACCESS_DB_PASSWORD
SELECT (:'worker_password' = '' OR :'access_password' = '') AS missing \gset
\if :missing
  -- an error, so psql (ON_ERROR_STOP) exits non-zero and the services depending on it wait
  DO $$ BEGIN RAISE EXCEPTION
    'WORKER_DB_PASSWORD and ACCESS_DB_PASSWORD must be set (compose/secrets/logins.env)'; END $$;
\endif

-- The groups exist once `migrate` has run; they are created here only if it has not.
SELECT 'CREATE ROLE attest_app NOLOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_app') \gexec
SELECT 'CREATE ROLE attest_access_service NOLOGIN NOINHERIT'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_access_service') \gexec
SELECT 'CREATE ROLE attest_worker' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_worker') \gexec
SELECT 'CREATE ROLE attest_access' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'attest_access') \gexec

ALTER ROLE attest_worker WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'worker_password';
ALTER ROLE attest_access WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'access_password';
GRANT attest_app TO attest_worker;
GRANT attest_access_service TO attest_access;
