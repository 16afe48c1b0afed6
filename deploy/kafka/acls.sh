#!/usr/bin/env sh
# Production Apache Kafka ACLs for CareHub (see deploy/README.md and docs/adr/0010-record-proof.md).
#
#   deploy/kafka/acls.sh hub                 # the hub's own principal: hub.* and writing partner.*
#   deploy/kafka/acls.sh partner <id>        # one partner: read partner.<id> only, groups partner-<id>.*
#   deploy/kafka/acls.sh list                # what is granted now
#
# Environment:
#   KAFKA_BIN        directory of kafka-acls.sh                        (default: /opt/kafka/bin)
#   BOOTSTRAP        a broker listener the admin can reach              (default: localhost:9093)
#   COMMAND_CONFIG   client properties of an admin (super user), e.g. SASL_SSL + SCRAM-SHA-512
#                                                                     (default: /etc/kafka/admin.properties)
#   HUB_PRINCIPAL    the hub's principal                               (default: User:carehub)
#   HUB_WORKER_GROUP consumer-group prefix of the hub's workers        (default: carehub-pipeline)
#
# The broker must run an authorizer that denies what no ACL allows (KRaft:
# authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer and
# allow.everyone.if.no.acl.found=false, the default): then nobody but the principals below can do anything.
set -eu

KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}
BOOTSTRAP=${BOOTSTRAP:-localhost:9093}
COMMAND_CONFIG=${COMMAND_CONFIG:-/etc/kafka/admin.properties}
HUB_PRINCIPAL=${HUB_PRINCIPAL:-User:carehub}
HUB_WORKER_GROUP=${HUB_WORKER_GROUP:-carehub-pipeline}

acls() {
    "$KAFKA_BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$COMMAND_CONFIG" "$@"
}

hub() {
    # hub.ingress, hub.events, hub.dlq: the hub alone writes and reads them (and creates them at start).
    acls --add --allow-principal "$HUB_PRINCIPAL" \
        --operation Read --operation Write --operation Describe --operation Create \
        --topic hub. --resource-pattern-type prefixed
    # partner.<id>: the hub writes every partner's topic and creates it when the partner is registered.
    acls --add --allow-principal "$HUB_PRINCIPAL" \
        --operation Write --operation Describe --operation Create \
        --topic partner. --resource-pattern-type prefixed
    # The pipeline workers' consumer groups (<HUB_WORKER_GROUP>.normalize, <HUB_WORKER_GROUP>.route).
    acls --add --allow-principal "$HUB_PRINCIPAL" \
        --operation Read --operation Describe \
        --group "$HUB_WORKER_GROUP." --resource-pattern-type prefixed
}

partner() {
    id=$1
    # The hub's partner ids: lowercase letters, digits and '-', 1-63 characters, starting with a letter or digit.
    if [ "$(printf '%s' "$id" | wc -l)" -ne 0 ] || ! printf '%s' "$id" | grep -Eq '^[a-z0-9][a-z0-9-]{0,62}$'; then
        echo "not a CareHub partner id: $id" >&2
        exit 2
    fi
    # LITERAL topic pattern, never prefixed: a prefix partner.cbo-a would also match partner.cbo-ab.
    acls --add --allow-principal "User:partner-$id" \
        --operation Read --operation Describe \
        --topic "partner.$id" --resource-pattern-type literal
    # The partner's own consumer groups, named partner-<id>.<anything> (the '.' ends the id, so a prefix
    # of one partner's groups is never a prefix of another's).
    acls --add --allow-principal "User:partner-$id" \
        --operation Read --operation Describe \
        --group "partner-$id." --resource-pattern-type prefixed
}

case "${1:-}" in
    hub) hub ;;
    partner) [ $# -eq 2 ] || { echo "usage: $0 partner <partner id>" >&2; exit 2; }; partner "$2" ;;
    list) acls --list ;;
    *) echo "usage: $0 hub | partner <partner id> | list" >&2; exit 2 ;;
esac
