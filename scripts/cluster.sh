#!/usr/bin/env bash
# A local cluster for development: 3 runactors nodes + a Celery worker and beat,
# on the local PostgreSQL and Redis (demo_project/demo_project/settings_cluster.py).
#
#   scripts/cluster.sh start     # nodes on 127.0.0.1:8001, 8002, 8003 (BASE_PORT=8001)
#   scripts/cluster.sh status    # manage.py rivet_nodes
#   scripts/cluster.sh stop      # SIGTERM every process it started (by pid), then SIGKILL
#
# Logs and pids live in ${CLUSTER_DIR:-/tmp/rivet-cluster}. The database
# (RIVET_CLUSTER_DB, default rivet_demo_cluster) is created and migrated on start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DIR=${CLUSTER_DIR:-/tmp/rivet-cluster}
BASE_PORT=${BASE_PORT:-8001}
export DJANGO_SETTINGS_MODULE=demo_project.settings_cluster
export PYTHONPATH="$PWD:$PWD/demo_project${PYTHONPATH:+:$PYTHONPATH}"
export RIVET_CLUSTER_DB=${RIVET_CLUSTER_DB:-rivet_demo_cluster}
PY=${PYTHON:-python}

start() {
    mkdir -p "$DIR"
    psql -h 127.0.0.1 -U "${PGUSER:-postgres}" -d test -tAc "select 1 from pg_database where datname='$RIVET_CLUSTER_DB'" | grep -q 1 \
        || psql -h 127.0.0.1 -U "${PGUSER:-postgres}" -d test -c "create database \"$RIVET_CLUSTER_DB\"" >/dev/null
    $PY manage.py migrate --noinput -v 0
    for i in 1 2 3; do
        port=$((BASE_PORT + i - 1))
        $PY manage.py runactors --port "$port" --node-id "node-$i" >"$DIR/node-$i.log" 2>&1 &
        echo $! >"$DIR/node-$i.pid"
    done
    $PY -m celery -A demo_project worker -l warning >"$DIR/worker.log" 2>&1 &
    echo $! >"$DIR/worker.pid"
    $PY -m celery -A demo_project beat -l warning -s "$DIR/beat-schedule" >"$DIR/beat.log" 2>&1 &
    echo $! >"$DIR/beat.pid"
    for i in 1 2 3; do
        port=$((BASE_PORT + i - 1))
        for _ in $(seq 1 100); do
            curl -sf "http://127.0.0.1:$port/api/rivet/metadata" >/dev/null && break
            sleep 0.2
        done
    done
    $PY manage.py rivet_nodes
    echo "Logs and pids in $DIR; stop with: scripts/cluster.sh stop"
}

stop() {
    local pidfile pid
    for pidfile in "$DIR"/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pidfile in "$DIR"/*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    echo "Stopped."
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) $PY manage.py rivet_nodes ;;
    *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
