#!/usr/bin/env bash
# Install everything and run every test: README's test command and CI (.ci/run).
#
#   1. start Redis / PostgreSQL when they are installed but not answering
#   2. chromium (apt-get) for the browser test; pip install -r requirements.txt;
#      npm ci for the official JS client (tests/js)
#   3. ruff check rivet_django tests; mypy (rivet_django, config in pyproject.toml)
#   4. python -m pytest                    (whole suite, SQLite)
#   5. RIVET_TEST_DB=postgres python -m pytest tests/test_storage.py tests/test_runtime.py tests/test_features.py
#   6. python -m bench --quick (the benchmark harness still works; no speed assertions)
#
# With CI set (CI=true), anything missing (PostgreSQL, Redis, node/npm) is a
# failure; on a workstation it is skipped with a note. Every step is bounded in
# time so the whole run stays well under 15 minutes. Exit status: 0 only if every
# step passed. The last line is a one-line summary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SQLITE_TIMEOUT=${RIVET_SQLITE_TIMEOUT:-900}      # seconds for the whole SQLite pass
POSTGRES_TIMEOUT=${RIVET_POSTGRES_TIMEOUT:-240}  # seconds for the PostgreSQL pass
POSTGRES_TEST_FILES=(tests/test_storage.py tests/test_runtime.py tests/test_features.py tests/test_queues.py tests/test_schedules.py tests/test_lifecycle.py tests/test_database.py tests/test_database_shared.py)

case "${CI:-}" in
    "" | 0 | false | False | FALSE | no) IN_CI=0 ;;
    *) IN_CI=1 ;;
esac

START=$SECONDS
declare -a RESULTS=()
FAILED=0

say() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
record() {  # record NAME STATUS(ok|FAIL|skipped) [detail]
    RESULTS+=("$1: $2${3:+ ($3)}")
    if [[ $2 == FAIL ]]; then FAILED=1; fi
}
summary() {
    local verdict=PASS
    if ((FAILED)); then verdict=FAIL; fi
    printf '\n'
    local line
    for line in "${RESULTS[@]}"; do printf '    %s\n' "$line"; done
    printf 'TEST SUMMARY: %s in %ds -- %s\n' "$verdict" "$((SECONDS - START))" "$(IFS=';'; echo "${RESULTS[*]}" | sed 's/;/; /g')"
}
die() {  # a setup step failed: nothing after it can run meaningfully
    printf '\nERROR: %s\n' "$*" >&2
    record setup FAIL "$*"
    summary
    exit 1
}
missing() {  # something is not installed: fatal in CI, a note elsewhere
    if ((IN_CI)); then die "$1"; fi
    note "WARNING: $1 (skipped; it would fail in CI)"
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
wait_port() {  # wait_port HOST PORT SECONDS
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        if port_open "$1" "$2"; then return 0; fi
        sleep 0.5
    done
    return 1
}

# --- Python -------------------------------------------------------------------
PYTHON=${PYTHON:-}
if [[ -z $PYTHON ]]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter ($PYTHON) on PATH"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 required, found $("$PYTHON" -V 2>&1)"
# A distribution's system Python refuses pip installs (PEP 668): use a venv there.
if "$PYTHON" - <<'EOF'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
EOF
then
    say "System Python is externally managed: using the virtualenv .venv"
    [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv || die "cannot create .venv (install python3-venv)"
    PYTHON=.venv/bin/python
fi
note "Python: $("$PYTHON" -V 2>&1) ($(command -v "$PYTHON" || echo "$PYTHON"))"

# --- Services -----------------------------------------------------------------
say "Services"
if port_open 127.0.0.1 6379; then
    note "Redis answers on 127.0.0.1:6379"
elif command -v redis-server >/dev/null 2>&1; then
    note "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 127.0.0.1 6379 20 || die "Redis did not answer on 127.0.0.1:6379 within 20s"
    note "Redis answers on 127.0.0.1:6379"
else
    missing "Redis is not running and redis-server is not installed"
fi

POSTGRES_UP=0
if port_open 127.0.0.1 5432; then
    POSTGRES_UP=1
    note "PostgreSQL answers on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]] && [[ -n $(ls /etc/postgresql) ]]; then
    PG_VERSION=$(ls /etc/postgresql | sort -V | tail -n 1)
    note "starting PostgreSQL $PG_VERSION"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start || true
    wait_port 127.0.0.1 5432 30 || die "PostgreSQL did not answer on 127.0.0.1:5432 within 30s"
    POSTGRES_UP=1
    note "PostgreSQL answers on 127.0.0.1:5432"
else
    missing "PostgreSQL is not running and no cluster to start (pg_ctlcluster)"
fi

say "Chromium (headless browser test of the chat demo)"
if command -v chromium >/dev/null 2>&1; then
    note "$(chromium --version 2>/dev/null | head -n 1)"
elif command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    note "installing Debian's chromium"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || missing "apt-get install chromium failed"
else
    missing "chromium is not installed (apt-get install chromium)"
fi

# --- Dependencies -------------------------------------------------------------
say "pip install -r requirements.txt"
"$PYTHON" -m pip install --disable-pip-version-check --quiet -r requirements.txt || die "pip install -r requirements.txt failed"

say "npm ci (tests/js: the official RivetKit client)"
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    note "node $(node --version), npm $(npm --version 2>/dev/null)"
    (cd tests/js && { npm ci || npm install; }) || die "npm install in tests/js failed"
else
    missing "node/npm not installed: the official JS client test will be skipped"
fi

# --- Lint ---------------------------------------------------------------------
say "ruff check rivet_django tests"
if "$PYTHON" -m ruff check rivet_django tests; then
    record ruff ok
else
    record ruff FAIL
fi

say "mypy"
if "$PYTHON" -m mypy; then
    record mypy ok
else
    record mypy FAIL
fi

# --- Tests --------------------------------------------------------------------
run_pytest() {  # run_pytest NAME TIMEOUT [pytest args...]; exit 5 (no tests) counts as a failure
    local name=$1 limit=$2 status=0
    shift 2
    timeout --signal=TERM --kill-after=30 "$limit" "$PYTHON" -m pytest "$@" || status=$?
    case $status in
        0) record "$name" ok ;;
        5) record "$name" FAIL "no tests collected" ;;
        124 | 137) record "$name" FAIL "timed out after ${limit}s" ;;
        *) record "$name" FAIL "pytest exit $status" ;;
    esac
}

say "pytest: whole suite on SQLite"
run_pytest "pytest sqlite" "$SQLITE_TIMEOUT"

say "pytest: storage and runtime on PostgreSQL"
if ((POSTGRES_UP)); then
    files=()
    for file in "${POSTGRES_TEST_FILES[@]}"; do
        if [[ -f $file ]]; then files+=("$file"); else note "$file does not exist (yet): skipped"; fi
    done
    if ((${#files[@]})); then
        export RIVET_TEST_DB=postgres
        run_pytest "pytest postgres" "$POSTGRES_TIMEOUT" "${files[@]}"
    else
        record "pytest postgres" FAIL "none of ${POSTGRES_TEST_FILES[*]} exist"
    fi
else
    record "pytest postgres" skipped "PostgreSQL not available"
fi

say "Benchmark harness: python -m bench --quick (proves it runs; asserts nothing about speed)"
if command -v npm >/dev/null 2>&1; then
    if (cd bench/peer && { npm ci || npm install; }); then
        status=0
        timeout --signal=TERM --kill-after=30 "${BENCH_TIMEOUT:-300}" "$PYTHON" -m bench --quick || status=$?
        case $status in
            0) record "bench quick" ok ;;
            124 | 137) record "bench quick" FAIL "timed out" ;;
            *) record "bench quick" FAIL "exit $status" ;;
        esac
    else
        record "bench quick" FAIL "npm install in bench/peer failed"
    fi
else
    missing "npm not installed: the benchmark harness cannot run"
    record "bench quick" skipped "no npm"
fi

summary
exit "$FAILED"
