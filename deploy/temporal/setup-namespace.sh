#!/bin/sh
# One-shot job run by the `temporal-setup` service (image temporalio/admin-tools).
#
# Waits until the Temporal frontend answers SERVING, creates the namespace if it is
# missing, then registers drip's custom search attributes. Every step tolerates
# "already exists", so the job can run on every `docker compose up`.
#
# Environment (set in docker-compose.yml):
#   TEMPORAL_ADDRESS        read by the `temporal` CLI, e.g. temporal:7233
#   TEMPORAL_NAMESPACE      namespace to create/use (default: default)
#   TEMPORAL_NAMESPACE_RETENTION  retention of closed workflows (default: 72h)
#   DRIP_SEARCH_ATTRIBUTES  space-separated NAME=Type pairs (Type as the CLI spells it:
#                           Int, Keyword, Text, Double, Bool, Datetime, KeywordList)
#   SETUP_ATTEMPTS, SETUP_RETRY_DELAY  retry budget per step (default: 60 x 2s)
set -eu
set -f # no globbing when splitting DRIP_SEARCH_ATTRIBUTES

: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is required}"
: "${DRIP_SEARCH_ATTRIBUTES:?DRIP_SEARCH_ATTRIBUTES is required (NAME=Type ...)}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_NAMESPACE_RETENTION:-72h}"
ATTEMPTS="${SETUP_ATTEMPTS:-60}"
DELAY="${SETUP_RETRY_DELAY:-2}"
export TEMPORAL_ADDRESS

log() { echo "temporal-setup: $*"; }

# retry CMD [ARGS...]: the frontend port opens before the cluster serves, and a new
# namespace takes a few seconds to reach every service's namespace cache.
retry() {
    attempt=1
    until "$@"; do
        if [ "$attempt" -ge "$ATTEMPTS" ]; then
            log "giving up after $attempt attempts: $*"
            return 1
        fi
        attempt=$((attempt + 1))
        sleep "$DELAY"
    done
}

is_already_exists() {
    case "$1" in
        *[Aa]lready*[Ee]xist* | *ALREADY_EXISTS*) return 0 ;;
        *) return 1 ;;
    esac
}

cluster_serving() {
    temporal operator cluster health 2>/dev/null | grep -q SERVING
}

namespace_exists() {
    temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1
}

create_namespace() {
    if namespace_exists; then
        log "namespace $NAMESPACE already exists"
        return 0
    fi
    if out=$(temporal operator namespace create --namespace "$NAMESPACE" \
        --retention "$RETENTION" 2>&1); then
        log "namespace $NAMESPACE created (retention $RETENTION)"
        return 0
    fi
    if is_already_exists "$out"; then
        log "namespace $NAMESPACE already exists"
        return 0
    fi
    echo "$out" >&2
    return 1
}

create_search_attribute() {
    name="$1"
    type="$2"
    if out=$(temporal operator search-attribute create --namespace "$NAMESPACE" \
        --name "$name" --type "$type" 2>&1); then
        log "search attribute $name ($type) registered"
        return 0
    fi
    if is_already_exists "$out"; then
        log "search attribute $name already registered"
        return 0
    fi
    echo "$out" >&2
    return 1
}

log "waiting for $TEMPORAL_ADDRESS to serve"
retry cluster_serving
retry create_namespace
retry namespace_exists

for pair in $DRIP_SEARCH_ATTRIBUTES; do
    name="${pair%%=*}"
    type="${pair#*=}"
    if [ -z "$name" ] || [ "$name" = "$pair" ] || [ -z "$type" ]; then
        log "bad DRIP_SEARCH_ATTRIBUTES entry '$pair' (want NAME=Type)"
        exit 2
    fi
    retry create_search_attribute "$name" "$type"
done

# Verify: every attribute must now be listed for the namespace.
listing=$(temporal operator search-attribute list --namespace "$NAMESPACE")
status=0
for pair in $DRIP_SEARCH_ATTRIBUTES; do
    name="${pair%%=*}"
    type="${pair#*=}"
    line=$(printf '%s\n' "$listing" | grep -w -- "$name" || true)
    if [ -z "$line" ]; then
        log "search attribute $name is missing from the namespace $NAMESPACE"
        status=1
    elif ! printf '%s\n' "$line" | grep -qi -- "$type"; then
        # An attribute of the same name but another type makes upserts fail at run time.
        log "WARNING: search attribute $name is listed as '$line', expected type $type"
    fi
done
[ "$status" -eq 0 ] || exit "$status"
log "done: namespace $NAMESPACE, search attributes: $DRIP_SEARCH_ATTRIBUTES"
