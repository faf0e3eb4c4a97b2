#!/bin/sh
# Make the untracked secrets docker-compose.yml reads, fresh and random, once:
#
#   sh compose/make-secrets.sh            # writes compose/secrets/*.env and compose/secrets/kafka/
#
# postgres.env  POSTGRES_PASSWORD (the owner `attest`, a superuser: the postgres service only)
# migrate.env   the owner's URL (`attest db upgrade` only)
# logins.env    PGPASSWORD (the owner) and the two logins' passwords (the `logins` service only)
# worker.env    the worker login's URL (attest_worker: member of attest_app only)
# access.env    the access login's URL (attest_access: SET ROLE to department roles only)
#
# Each service gets its own file, so the worker never sees the owner's password. The files are
# ignored by git (compose/secrets/.gitignore) and docker (.dockerignore); *.env.example shows
# their shape. To rotate, edit the passwords in place (keep each pair the same) and run
# `docker compose up` again, which sets the logins' passwords anew.
#
# kafka/ (with openssl): the broker's TLS and every Kafka principal's SCRAM password
#   ca.key, ca.crt      a private CA (ca.key is mounted nowhere: keep it to issue new certs)
#   broker.pem          the broker's EC key (encrypted) and certificate (CN=kafka; SAN kafka,
#                       localhost, 127.0.0.1 and $KAFKA_HOSTNAMES, comma-separated DNS names)
#   admin.pem           the kafka-acls service's client key and certificate (CN=attest-admin)
#   broker-key.properties, admin-key.properties  key.password= of each PEM's key
#   <principal>.password one per SCRAM login: attest-worker, attest-sink, attest-operator,
#                       attest-access, producer-transactions, producer-documents,
#                       producer-approvals (give each producer its own file, nothing else)
# Every file is 0600 but ca.crt (a certificate, public: 0644). Compose mounts each file as a
# secret with its host owner and mode, so run this as root to give them to the containers'
# users (kafka: uid 1000, broker.*; Attest and kafka-acls: uid 10001, the rest), or chown
# them so afterwards (docs/operations.md, "docker-compose: Kafka's door").
#
# Writes only what is missing (the env files as a set, the kafka folder as a whole), never
# overwrites, and exits 1 when everything already exists.
set -eu
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
umask 077
secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
wrote=""
existing=0
for name in postgres migrate logins worker access; do
    [ -e "$dir/$name.env" ] && existing=$((existing + 1))
done
if [ "$existing" -eq 5 ]; then
    echo "$dir/*.env exist; not overwriting" >&2
elif [ "$existing" -gt 0 ]; then
    echo "some of $dir/*.env exist; not overwriting (remove them all to make new ones)" >&2
    exit 1
else
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
wrote="env"
fi

# --- Kafka: a private CA, the broker's certificate, the admin client's, SCRAM passwords --------
KAFKA_PRINCIPALS="attest-worker attest-sink attest-operator attest-access producer-transactions producer-documents producer-approvals"
kdir="$dir/kafka"
if [ -e "$kdir" ]; then
    echo "$kdir exists; not overwriting (remove it to make a new CA, certificates and passwords)" >&2
else
    command -v openssl > /dev/null || { echo "openssl is needed for the Kafka certificates" >&2; exit 1; }
    mkdir -m 700 "$kdir"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    eckey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2> /dev/null; }
    eckey "$kdir/ca.key"
    openssl req -x509 -new -key "$kdir/ca.key" -sha256 -days 3650 -subj "/CN=attest-kafka-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$kdir/ca.crt"
    sans="DNS:kafka,DNS:localhost,IP:127.0.0.1"
    for host in $(echo "${KAFKA_HOSTNAMES:-}" | tr ',' ' '); do sans="$sans,DNS:$host"; done
    # issue NAME CN USAGE [SAN]: NAME.pem = key + certificate + CA certificate
    issue() {
        eckey "$work/$1.key"
        openssl req -new -key "$work/$1.key" -subj "/CN=$2" -out "$work/$1.csr"
        {
            echo "basicConstraints=critical,CA:FALSE"
            echo "keyUsage=critical,digitalSignature"
            echo "extendedKeyUsage=$3"
            [ -n "${4:-}" ] && echo "subjectAltName=$4"
        } > "$work/$1.ext"
        openssl x509 -req -in "$work/$1.csr" -CA "$kdir/ca.crt" -CAkey "$kdir/ca.key" \
            -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days 825 \
            -extfile "$work/$1.ext" -out "$work/$1.crt" 2> /dev/null
        # Kafka loads a PEM key store only with an encrypted key and ssl.key.password, which
        # it reads from NAME-key.properties (a FileConfigProvider file; never a command line).
        # PBE-SHA1-3DES: the PKCS#8 scheme every Java runtime opens; the password file lies
        # beside the key, so this guards nothing the file mode does not (docs/operations.md).
        secret > "$work/$1.pass"
        openssl pkcs8 -topk8 -in "$work/$1.key" -v1 PBE-SHA1-3DES -passout "file:$work/$1.pass" \
            -out "$work/$1.enc"
        printf 'key.password=%s\n' "$(cat "$work/$1.pass")" > "$kdir/$1-key.properties"
        cat "$work/$1.enc" "$work/$1.crt" "$kdir/ca.crt" > "$kdir/$1.pem"
    }
    # The broker is also a TLS client: of its own controller and inter-broker listeners (mTLS).
    issue broker kafka serverAuth,clientAuth "$sans"
    issue admin attest-admin clientAuth
    for principal in $KAFKA_PRINCIPALS; do
        printf '%s\n' "$(secret)" > "$kdir/$principal.password"
    done
    chmod 644 "$kdir/ca.crt"
    if [ "$(id -u)" = 0 ]; then
        chown -R 10001:10001 "$kdir"
        chown 1000:1000 "$kdir/broker.pem" "$kdir/broker-key.properties"
        chown 0:0 "$kdir/ca.key"
    else
        echo "not root: chown $kdir/broker.pem and broker-key.properties to uid 1000 and the other files but ca.key to uid 10001 (docs/operations.md)" >&2
    fi
    echo "wrote $kdir/{ca.key,ca.crt,broker.pem,admin.pem} and one .password per Kafka principal (0600)"
    wrote="$wrote kafka"
fi
[ -n "$wrote" ] || exit 1
