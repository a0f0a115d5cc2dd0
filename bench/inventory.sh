#!/usr/bin/env bash
# Inventory benchmark on the 12-NVMe + SAS HBA server fixture (tests/test_storage.py's
# make_nvme_sas_server), for issue 3's targets: cold inventory under 50 ms excluding smartctl,
# expanded System GET under 5 ms p99.
#
#   bench/inventory.sh                      # build release, ~30 s of wrk
#   DURATION=30s RUNS=200 bench/inventory.sh
#   KEELD=/path/to/keeld PYTHON=/path/to/venv/bin/python bench/inventory.sh
#
# 1. `keeld host bench-inventory DIR` times Inventory::build on the fixture (min/median of RUNS):
#    cold (new SMART cache: every drive's smartctl output replayed from its recorded file and
#    parsed; no smartctl process, so this is "excluding smartctl"), SMART skipped, and a refresh
#    within --smart-interval (kept SMART results).
# 2. A release keeld serves the fixture (--host-root) on loopback; wrk -t1 -c$CONNS --latency with
#    an X-Auth-Token on GET /redfish/v1/Systems/system?$expand=.($levels=3), the same System
#    unexpanded, and GET /redfish (no auth) as the baseline of the same run, so figures are also
#    given as ratios.
# Prints a markdown table and writes bench/results/inventory-latest.md (gitignored).
# Benchmarks are not tests: nothing here asserts on timings; targets are only reported.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-8}"
THREADS="${THREADS:-1}"
RUNS="${RUNS:-100}"
USER_NAME=benchadmin
PASSWORD='Bench-Pass-2024'

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >&2; else sudo apt-get install -y wrk >&2; fi
fi
for t in curl python3; do command -v "$t" >/dev/null || { echo "need $t" >&2; exit 1; }; done
# The fixture builder lives in a pytest module: it needs a Python with the test requirements.
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    for p in "$ROOT/.venv/bin/python" "$ROOT/../main/.venv/bin/python"; do
        [ -x "$p" ] && { PYTHON=$p; break; }
    done
fi

if [ -z "${KEELD:-}" ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    KEELD="$ROOT/target/release/keeld"
fi

WORK="$(mktemp -d /tmp/keel-bench-inv.XXXXXX)"
PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID"; wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- fixture ----------------------------------------------------------------------------
FIX="$WORK/server"
log "building the 12-NVMe + SAS fixture in $FIX"
(cd "$ROOT/tests" && "$PYTHON" -c 'import sys, pathlib; sys.path.insert(0, "."); import test_storage as t; t.make_nvme_sas_server(pathlib.Path(sys.argv[1]))' "$FIX")

# --- inventory build times ----------------------------------------------------------------
log "keeld host bench-inventory ($RUNS runs each)"
"$KEELD" host bench-inventory "$FIX" --runs "$RUNS" >"$WORK/build.txt"
cat "$WORK/build.txt" >&2
build() { awk -v n="$1" -v f="$2" '$1 == n { print $f }' "$WORK/build.txt"; }
DRIVES_LINE=$(sed -n 's/^# //p' "$WORK/build.txt")

# --- start keeld ------------------------------------------------------------------------
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="https://127.0.0.1:$PORT"
printf '%s:%s\n' "$USER_NAME" "$PASSWORD" >"$WORK/bootstrap-admin"
chmod 600 "$WORK/bootstrap-admin"
log "starting $KEELD --host-root $FIX on $URL"
"$KEELD" serve --listen "127.0.0.1:$PORT" --state-dir "$WORK/state" --bootstrap-admin-file "$WORK/bootstrap-admin" \
    --host-root "$FIX" >"$WORK/keeld.log" 2>&1 &
PID=$!
for _ in $(seq 300); do
    curl -ksf -o /dev/null "$URL/redfish/v1" && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/keeld.log" >&2; exit 1; }
    sleep 0.1
done
curl -ksf -o /dev/null "$URL/redfish/v1" || { echo "keeld did not start" >&2; cat "$WORK/keeld.log" >&2; exit 1; }
TOKEN="$(curl -ks -D - -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"UserName\":\"$USER_NAME\",\"Password\":\"$PASSWORD\"}" \
    "$URL/redfish/v1/SessionService/Sessions" | awk -F': ' 'tolower($1)=="x-auth-token" { sub(/\r$/, "", $2); print $2 }')"
[ -n "$TOKEN" ] || { echo "login failed" >&2; cat "$WORK/keeld.log" >&2; exit 1; }

SYS="$URL/redfish/v1/Systems/system"
EXP="$SYS?\$expand=.(\$levels=3)"
for u in "$SYS" "$EXP"; do
    code=$(curl -ks -o "$WORK/body" -w '%{http_code}' -H "X-Auth-Token: $TOKEN" "$u")
    [ "$code" = 200 ] || { echo "GET $u gave $code" >&2; exit 1; }
done
EXP_BYTES=$(curl -ks -H "X-Auth-Token: $TOKEN" "$EXP" | wc -c)
SYS_BYTES=$(curl -ks -H "X-Auth-Token: $TOKEN" "$SYS" | wc -c)
BASE_BYTES=$(curl -ks "$URL/redfish" | wc -c)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- wrk runs ---------------------------------------------------------------------------
declare -A R_RPS R_P50 R_P90 R_P99 R_ERR
to_ms() {  # wrk latency ("812.00us", "1.20ms", "2.01s") -> milliseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
run() {
    local name=$1 url=$2 hdr=${3:-}
    local out="$WORK/wrk-$name.txt"
    log "wrk -t$THREADS -c$CONNS -d$DURATION $name"
    if [ -n "$hdr" ]; then
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$hdr" "$url" >"$out"
    else
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
    fi
    sed 's/^/    /' "$out" >&2
    R_RPS[$name]=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' "$out")
    R_P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    R_P90[$name]=$(to_ms "$(awk '$1 == "90%" { print $2 }' "$out")")
    R_P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    R_ERR[$name]=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    sleep 1
}
run baseline "$URL/redfish"
run system "$SYS" "X-Auth-Token: $TOKEN"
run expanded "$EXP" "X-Auth-Token: $TOKEN"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v a="$1" -v t="$2" 'BEGIN { if (a < t) print "met"; else print "**missed**" }'; }
{
    echo "# keeld inventory benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "commit \`$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')\`, $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "load average before/after the wrk runs: $LOAD_START / $LOAD_END; fixture: make_nvme_sas_server ($DRIVES_LINE)"
    echo
    echo "| Inventory::build | min ms | median ms |"
    echo "|---|---:|---:|"
    echo "| cold, smartctl outputs replayed from files and parsed (no smartctl process) | $(build cold_smart_replayed 2) | $(build cold_smart_replayed 3) |"
    echo "| SMART skipped | $(build smart_skipped 2) | $(build smart_skipped 3) |"
    echo "| refresh within --smart-interval (kept SMART results) | $(build refresh_smart_kept 2) | $(build refresh_smart_kept 3) |"
    echo
    echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, TLS with keep-alive:"
    echo
    echo "| run | bytes | requests/s | vs baseline | p50 ms | p90 ms | p99 ms | p99 vs baseline | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in baseline system expanded; do
        case $n in
            baseline) label='GET /redfish (no auth) — baseline'; bytes=$BASE_BYTES ;;
            system) label='GET /redfish/v1/Systems/system, X-Auth-Token'; bytes=$SYS_BYTES ;;
            expanded) label='GET /redfish/v1/Systems/system?$expand=.($levels=3), X-Auth-Token'; bytes=$EXP_BYTES ;;
        esac
        echo "| $label | $bytes | ${R_RPS[$n]} | $(ratio "${R_RPS[$n]}" "${R_RPS[baseline]}") | ${R_P50[$n]} | ${R_P90[$n]} | ${R_P99[$n]} | $(ratio "${R_P99[$n]}" "${R_P99[baseline]}") | ${R_ERR[$n]} |"
    done
    echo
    echo "Targets: cold inventory < 50 ms excluding smartctl: $(verdict "$(build cold_smart_replayed 3)" 50) ($(build cold_smart_replayed 3) ms median);" \
        "expanded GET p99 < 5 ms: $(verdict "${R_P99[expanded]}" 5) (${R_P99[expanded]} ms)."
} >"$WORK/report.md"

mkdir -p "$HERE/results"
cp "$WORK/report.md" "$HERE/results/inventory-latest.md"
cat "$WORK/report.md"
