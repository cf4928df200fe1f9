#!/bin/sh
# Entry point of a Bytewax dataflow pod in a StatefulSet (one pod = one Bytewax process).
#
#   run-dataflow.sh init             initContainer: create this pod's recovery partition if absent
#   run-dataflow.sh run IMPORT_STR   main container: exec `python -m bytewax.run IMPORT_STR ...`
#
# Environment (set by the StatefulSet, see k8s/base/dataflows/):
#   POD_INDEX                     pod ordinal (downward API label apps.kubernetes.io/pod-index);
#                                 falls back to the numeric suffix of HOSTNAME (<statefulset>-<ordinal>)
#   POD_NAMESPACE                 namespace, for the peers' DNS names
#   DATAFLOW_SERVICE              headless Service governing the StatefulSet
#   DATAFLOW_PROCESSES            number of Bytewax processes = StatefulSet replicas
#   DATAFLOW_RECOVERY_PARTITIONS  recovery partitions, fixed when the recovery store is created
#   DATAFLOW_PORT                 Bytewax cluster port (default 2101)
#   DATAFLOW_SNAPSHOT_S, DATAFLOW_BACKUP_S   snapshot and backup intervals in whole seconds
#   BYTEWAX_RECOVERY_DIRECTORY    where the recovery volume is mounted (default /recovery)
#
# Why one partition per pod: Bytewax needs the cluster as a whole to see every partition, and
# exactly one copy of each (a second, empty copy could be picked on resume and lose state). Pod k
# owns partition k on its own volume, so the set is complete while replicas >= partitions, and
# pods beyond the partition count run without a partition (allowed: their state is snapshotted
# into partitions owned by others). docs/deploy.md explains scaling below the partition count.
set -eu

RECOVERY_DIR="${BYTEWAX_RECOVERY_DIRECTORY:-/recovery}"

# The ordinal of this pod in its StatefulSet.
ordinal() {
    echo "${POD_INDEX:-${HOSTNAME##*-}}"
}

# "name-0.svc.ns.svc:2101;name-1.svc.ns.svc:2101;...": every process, in process-id order.
addresses() {
    set_name="${HOSTNAME%-*}"
    i=0
    list=""
    while [ "$i" -lt "$DATAFLOW_PROCESSES" ]; do
        entry="${set_name}-${i}.${DATAFLOW_SERVICE}.${POD_NAMESPACE}.svc:${DATAFLOW_PORT:-2101}"
        list="${list:+$list;}$entry"
        i=$((i + 1))
    done
    echo "$list"
}

# True when the recovery directory already holds a partition (files part-N.sqlite3*).
has_partitions() {
    for f in "$RECOVERY_DIR"/part-*; do
        [ -e "$f" ] && return 0
    done
    return 1
}

# Create partition <ordinal> of DATAFLOW_RECOVERY_PARTITIONS unless one is here already.
init_recovery() {
    index="$(ordinal)"
    if has_partitions; then
        echo "recovery: $RECOVERY_DIR already holds a partition; keeping it"
        return 0
    fi
    if [ "$index" -ge "$DATAFLOW_RECOVERY_PARTITIONS" ]; then
        echo "recovery: process $index is beyond the $DATAFLOW_RECOVERY_PARTITIONS partitions; none here"
        return 0
    fi
    staging="$(mktemp -d)"
    python -m bytewax.recovery "$staging" "$DATAFLOW_RECOVERY_PARTITIONS"
    mv "$staging/part-$index.sqlite3" "$RECOVERY_DIR/"
    rm -rf "$staging"
    echo "recovery: created partition $index of $DATAFLOW_RECOVERY_PARTITIONS in $RECOVERY_DIR"
}

# Replace this shell with the Bytewax process of this pod.
run_dataflow() {
    exec python -m bytewax.run "$1" \
        -i "$(ordinal)" \
        -a "$(addresses)" \
        -r "$RECOVERY_DIR" \
        -s "$DATAFLOW_SNAPSHOT_S" \
        -b "$DATAFLOW_BACKUP_S"
}

case "${1:-}" in
    init) init_recovery ;;
    run) run_dataflow "${2:?usage: run-dataflow.sh run MODULE:FLOW}" ;;
    *) echo "usage: run-dataflow.sh init | run MODULE:FLOW" >&2; exit 2 ;;
esac
