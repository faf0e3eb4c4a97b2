#!/bin/sh
# The kafka-acls service (docker-compose.yml): every Kafka principal's SCRAM login and ACLs.
#
# Runs once per `docker compose up`, in the apache/kafka image, after the broker is healthy,
# as the mTLS super user CN=attest-admin on the broker's internal BROKER listener (kafka:9091,
# published nowhere). Idempotent: SCRAM credentials are set anew from the password files
# (so editing a file and running `docker compose up` again rotates that login) and adding an
# ACL that exists changes nothing. Passwords are read from files by the shell and written to a
# private temporary file for kafka-configs.sh's --add-config-file: never on a command line.
#
# The broker runs with allow.everyone.if.no.acl.found=false, so a principal may do exactly
# what is granted here and nothing else; there is no grant to User:ANONYMOUS or User:*.
# tests/test_compose.py parses every kafka-acls.sh line below and checks the grants.
set -eu

BIN=${KAFKA_BIN:-/opt/kafka/bin}
BOOTSTRAP=${KAFKA_ADMIN_BOOTSTRAP:-kafka:9091}
ADMIN=${KAFKA_ADMIN_CONFIG:-/attest/kafka-admin.properties}
SECRETS=${SECRETS_DIR:-/run/secrets}
PREFIX=${TOPIC_PREFIX:-attest.}
APP=${APP_ID:-attest}
ITERATIONS=8192

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

scram() { # scram PRINCIPAL: set its SCRAM-SHA-512 credential from /run/secrets/kafka-PRINCIPAL
    IFS= read -r password < "$SECRETS/kafka-$1" || [ -n "${password:-}" ]
    [ -n "$password" ] || { echo "kafka-acls: $SECRETS/kafka-$1 is empty" >&2; exit 1; }
    printf 'SCRAM-SHA-512=iterations=%s,password=%s\n' "$ITERATIONS" "$password" > "$work/scram"
    password=""
    "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" \
        --alter --entity-type users --entity-name "$1" --add-config-file "$work/scram" > /dev/null
    rm -f "$work/scram"
}

acl() { # acl PRINCIPAL kafka-acls.sh-options...: one --allow-principal grant
    principal=$1
    shift
    "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN" \
        --add --allow-principal "User:$principal" "$@" > /dev/null
}

for principal in attest-worker attest-sink attest-operator attest-access \
        producer-transactions producer-documents producer-approvals; do
    scram "$principal"
done

# --- producers: each writes its own intake topic, nothing else --------------------------------
acl producer-transactions --operation Write --operation Describe --topic "${PREFIX}transactions"
acl producer-documents --operation Write --operation Describe --topic "${PREFIX}documents"
acl producer-approvals --operation Write --operation Describe --topic "${PREFIX}approvals"

# --- attest-worker: the intake, enrichment and reconciliation stages ------------------------
acl attest-worker --operation Read --operation Describe --topic "${PREFIX}transactions"
acl attest-worker --operation Read --operation Describe --topic "${PREFIX}documents"
acl attest-worker --operation Read --operation Describe --topic "${PREFIX}approvals"
acl attest-worker --operation Write --operation Describe --topic "${PREFIX}dead-letter"
acl attest-worker --operation Write --operation Describe --topic "${PREFIX}audit"
acl attest-worker --operation Write --operation Describe --topic "${PREFIX}reconciliation"
# `attest worker` creates missing topics at start (an existing one answers "already exists"
# only to a principal that may create it); Create gives no Read or Write.
acl attest-worker --operation Create --resource-pattern-type prefixed --topic "${PREFIX}"
# Each stage's consumer group, the log probe's throwaway groups, and Faust's own topics
# (the assignor's leader topic, table changelogs), which are named after the group.
acl attest-worker --operation Read --group "${APP}"
acl attest-worker --operation Read --group "${APP}-enrichment"
acl attest-worker --operation Read --group "${APP}-reconciliation"
acl attest-worker --operation Read --resource-pattern-type prefixed --group "${APP}-probe-"
for stage in "${APP}-__" "${APP}-enrichment-" "${APP}-reconciliation-"; do
    acl attest-worker --operation Read --operation Write --operation Create --operation Describe \
        --resource-pattern-type prefixed --topic "$stage"
done

# --- attest-sink: the audit stage, the only service that reads the audit topic --------------
acl attest-sink --operation Read --operation Write --operation Describe --topic "${PREFIX}audit"
acl attest-sink --operation Create --resource-pattern-type prefixed --topic "${PREFIX}"
acl attest-sink --operation Read --group "${APP}-audit"
acl attest-sink --operation Read --operation Write --operation Create --operation Describe \
    --resource-pattern-type prefixed --topic "${APP}-audit-"

# --- attest-operator: the `attest` CLI (docker compose run --rm cli ...) ---------------------
# produce, replay and dlq retry write intake topics; dlq show reads dead letters; audit
# tail/verify read the audit topic and CLI actions write their audit records; status reads
# every stage's committed offsets; its own readers use throwaway attest-* groups.
for topic in transactions documents approvals; do
    acl attest-operator --operation Read --operation Write --operation Describe \
        --topic "${PREFIX}${topic}"
done
acl attest-operator --operation Read --operation Describe --topic "${PREFIX}dead-letter"
acl attest-operator --operation Read --operation Write --operation Describe --topic "${PREFIX}audit"
acl attest-operator --operation Describe --topic "${PREFIX}reconciliation"
acl attest-operator --operation Create --resource-pattern-type prefixed --topic "${PREFIX}"
acl attest-operator --operation Read --operation Describe --resource-pattern-type prefixed \
    --group "${APP}"

# --- attest-access: the access service shows dead-letter payloads ---------------------------
acl attest-access --operation Read --operation Describe --topic "${PREFIX}dead-letter"
acl attest-access --operation Read --resource-pattern-type prefixed --group "${APP}-dlq-"

echo "kafka-acls: SCRAM logins and ACLs set for 7 principals"
