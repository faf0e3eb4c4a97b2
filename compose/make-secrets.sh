#!/bin/sh
# Make the untracked env files docker-compose.yml reads, with fresh random passwords, once:
#
#   sh compose/make-secrets.sh            # writes compose/secrets/*.env (0600)
#
# postgres.env  POSTGRES_PASSWORD (the owner `attest`, a superuser: the postgres service only)
# migrate.env   the owner's URL (`attest db upgrade` only)
# logins.env    PGPASSWORD (the owner) and the two logins' passwords (the `logins` service only)
# worker.env    the worker login's URL (attest_worker: member of attest_app only)
# access.env    the access login's URL (attest_access: SET ROLE to department roles only)
#
# Each service gets its own file, so the worker never sees the owner's password. The files are
# ignored by git (compose/secrets/.gitignore) and docker (.dockerignore); *.env.example shows
# their shape. Refuses to overwrite: to rotate, edit the passwords in place (keep each pair
# the same) and run `docker compose up` again, which sets the logins' passwords anew.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
umask 077
for name in postgres migrate logins worker access; do
    if [ -e "$dir/$name.env" ]; then
        echo "$dir/$name.env exists; not overwriting (remove the files to make new ones)" >&2
        exit 1
    fi
done
secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
owner=$(secret)
worker=$(secret)
access=$(secret)
printf 'POSTGRES_PASSWORD=%s\n' "$owner" > "$dir/postgres.env"
printf 'ATTEST_DATABASE_URL=postgresql://attest:%s@postgres:5432/attest\n' "$owner" > "$dir/migrate.env"
printf 'PGPASSWORD=%s\nWORKER_DB_PASSWORD=%s\nACCESS_DB_PASSWORD=%s\n' "$owner" "$worker" "$access" \
    > "$dir/logins.env"
printf 'ATTEST_DATABASE_URL=postgresql://attest_worker:%s@postgres:5432/attest\n' "$worker" \
    > "$dir/worker.env"
printf 'ATTEST_DATABASE_URL=postgresql://attest_access:%s@postgres:5432/attest\nATTEST_ACCESS_DATABASE_URL=postgresql://attest_access:%s@postgres:5432/attest\n' \
    "$access" "$access" > "$dir/access.env"
echo "wrote $dir/{postgres,migrate,logins,worker,access}.env (0600)"
