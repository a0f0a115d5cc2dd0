#!/usr/bin/env bash
# Throughput / latency / memory benchmark of keeld (release build) on loopback.
#
#   bench/run.sh                 # defaults: 64 connections, 15 s per run, 1 wrk thread
#   DURATION=30s CONNS=64 THREADS=2 WORKERS=2 bench/run.sh
#   KEELD=/path/to/keeld bench/run.sh   # skip the build and use that binary
#   KEELD_ENV="MALLOC_ARENA_MAX=2" bench/run.sh   # extra environment for keeld (experiments)
#
# Measures, in one run against one fresh keeld:
#   * idle RSS (VmRSS, settled) after start-up, a login and a few requests;
#   * GET /redfish (no auth, the trivial resource: baseline);
#   * GET /redfish/v1/Managers/keel with X-Auth-Token (session);
#   * GET /redfish/v1/Managers/keel with Basic auth (credentials cached after first argon2);
#   * peak RSS (VmHWM) and RSS sampled during each run, RSS after all runs;
#   * RSS before/after sequential failed Basic logins (argon2 memory must be given back).
# See bench/README.md for the method, results and findings.
# Prints a markdown table and writes it to bench/results/latest.md (gitignored).
# Benchmarks are not tests: nothing here asserts on timings; targets are only reported.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DURATION="${DURATION:-15s}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-1}"
WORKERS="${WORKERS:-}"            # keeld --workers (default: one per CPU)
KEELD_ENV="${KEELD_ENV:-}"        # e.g. "MALLOC_ARENA_MAX=2"
TARGET_RPS=20000
TARGET_IDLE_KB=$((15 * 1024))
USER_NAME=benchadmin
PASSWORD='Bench-Pass-2024'

log() { printf '==> %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >&2; else sudo apt-get install -y wrk >&2; fi
fi
for t in curl python3; do command -v "$t" >/dev/null || { echo "need $t" >&2; exit 1; }; done

if [ -z "${KEELD:-}" ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    KEELD="$ROOT/target/release/keeld"
fi

# --- start keeld ------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/keel-bench.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="https://127.0.0.1:$PORT"
printf '%s:%s\n' "$USER_NAME" "$PASSWORD" >"$WORK/bootstrap-admin"
chmod 600 "$WORK/bootstrap-admin"
ARGS=(serve --listen "127.0.0.1:$PORT" --state-dir "$WORK/state" --bootstrap-admin-file "$WORK/bootstrap-admin")
[ -n "$WORKERS" ] && ARGS+=(--workers "$WORKERS")

PID=""
SAMPLER=""
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID"; wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log "starting $KEELD on $URL (state $WORK/state)"
# shellcheck disable=SC2086
env $KEELD_ENV "$KEELD" "${ARGS[@]}" >"$WORK/keeld.log" 2>&1 &
PID=$!
for _ in $(seq 300); do
    curl -ksf -o /dev/null "$URL/redfish/v1" && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/keeld.log" >&2; exit 1; }
    sleep 0.1
done
curl -ksf -o /dev/null "$URL/redfish/v1" || { echo "keeld did not start" >&2; cat "$WORK/keeld.log" >&2; exit 1; }

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
START_RSS=$(status_kb "$PID" VmRSS)

# --- log in -----------------------------------------------------------------------------
TOKEN="$(curl -ks -D - -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"UserName\":\"$USER_NAME\",\"Password\":\"$PASSWORD\"}" \
    "$URL/redfish/v1/SessionService/Sessions" | awk -F': ' 'tolower($1)=="x-auth-token" { sub(/\r$/, "", $2); print $2 }')"
[ -n "$TOKEN" ] || { echo "login failed" >&2; cat "$WORK/keeld.log" >&2; exit 1; }
BASIC="Basic $(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)"
MGR="$URL/redfish/v1/Managers/keel"
for h in "X-Auth-Token: $TOKEN" "Authorization: $BASIC"; do
    code=$(curl -ks -o /dev/null -w '%{http_code}' -H "$h" "$MGR")
    [ "$code" = 200 ] || { echo "GET $MGR with ${h%%:*} gave $code" >&2; exit 1; }
done
for p in /redfish /redfish/v1 /redfish/v1/Managers/keel /redfish/v1/Systems; do
    curl -ks -o /dev/null -H "X-Auth-Token: $TOKEN" "$URL$p"
done
sleep 3
IDLE_RSS=$(status_kb "$PID" VmRSS)
IDLE_HWM=$(status_kb "$PID" VmHWM)
IDLE_THREADS=$(status_kb "$PID" Threads)
# Of that RSS: PSS (shared library pages divided among their users) and anonymous memory.
rollup_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/smaps_rollup"; }
IDLE_PSS=$(rollup_kb "$PID" Pss)
IDLE_ANON=$(rollup_kb "$PID" Anonymous)
IDLE_SHARED=$(( $(rollup_kb "$PID" Shared_Clean) + $(rollup_kb "$PID" Shared_Dirty) ))
log "idle: VmRSS ${IDLE_RSS} kB (at start ${START_RSS} kB), VmHWM ${IDLE_HWM} kB, ${IDLE_THREADS} threads"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- wrk runs ---------------------------------------------------------------------------
# Background sampler: max VmRSS seen during a run.
sample_rss() {
    local max=0 v
    while kill -0 "$PID" 2>/dev/null; do
        v=$(status_kb "$PID" VmRSS || echo 0)
        [ "${v:-0}" -gt "$max" ] && { max=$v; echo "$max" >"$1"; }
        sleep 0.2
    done
}

# run NAME URL [header]; leaves results in R_<field>[NAME]
declare -A R_RPS R_P50 R_P99 R_ERR R_RSS R_REQS
to_ms() {  # wrk latency ("812.00us", "1.20ms", "2.01s") -> milliseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
run() {
    local name=$1 url=$2 hdr=${3:-}
    local out="$WORK/wrk-$name.txt"
    echo 0 >"$WORK/rss-$name"
    sample_rss "$WORK/rss-$name" & SAMPLER=$!
    log "wrk -t$THREADS -c$CONNS -d$DURATION $name"
    if [ -n "$hdr" ]; then
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$hdr" "$url" >"$out"
    else
        wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" >"$out"
    fi
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
    sed 's/^/    /' "$out" >&2
    R_RPS[$name]=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' "$out")
    R_REQS[$name]=$(awk '/requests in/ { print $1 }' "$out")
    R_P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    R_P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    R_ERR[$name]=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
    R_RSS[$name]=$(cat "$WORK/rss-$name")
    sleep 1
}

run baseline "$URL/redfish"
run token "$MGR" "X-Auth-Token: $TOKEN"
run basic "$MGR" "Authorization: $BASIC"

sleep 3
AFTER_RSS=$(status_kb "$PID" VmRSS)
PEAK_HWM=$(status_kb "$PID" VmHWM)
LOAD_THREADS=$(status_kb "$PID" Threads)

# --- password checks and memory -------------------------------------------------------------
# Each failed Basic check runs argon2 (19 MiB work area). Sequential requests for an unknown
# user: RSS should come back to where it was; growth per request means the allocator keeps the
# work areas (glibc's dynamic mmap threshold; see bench/README.md).
PROBES=${PROBES:-10}
GHOST="Basic $(printf 'nosuchuser:Wrong-Pass-2024' | base64 -w0)"
PROBE_BEFORE=$(status_kb "$PID" VmRSS)
log "$PROBES sequential failed Basic logins (argon2 each)"
for _ in $(seq "$PROBES"); do
    curl -ks -o /dev/null -H "Authorization: $GHOST" "$MGR"
done
sleep 1
PROBE_AFTER=$(status_kb "$PID" VmRSS)
PROBE_PER=$(( (PROBE_AFTER - PROBE_BEFORE) / PROBES ))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
verdict() { if [ "$1" = yes ]; then echo "met"; else echo "**missed**"; fi; }
B=${R_RPS[baseline]}
{
    echo "# keeld benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "commit \`$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')\`, $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "load average before/after the runs: $LOAD_START / $LOAD_END (other work on the machine skews the figures),"
    echo "wrk -t$THREADS -c$CONNS -d$DURATION over TLS with keep-alive, keeld workers: ${WORKERS:-default (one per CPU)}${KEELD_ENV:+, env: $KEELD_ENV}"
    echo
    echo "| run | requests/s | vs baseline | p50 ms | p99 ms | p99 vs baseline | errors | max RSS during run |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for n in baseline token basic; do
        case $n in
            baseline) label='GET /redfish (no auth) — baseline' ;;
            token) label='GET /redfish/v1/Managers/keel, X-Auth-Token' ;;
            basic) label='GET /redfish/v1/Managers/keel, Basic' ;;
        esac
        echo "| $label | ${R_RPS[$n]} | $(ratio "${R_RPS[$n]}" "$B") | ${R_P50[$n]} | ${R_P99[$n]} | $(ratio "${R_P99[$n]}" "${R_P99[baseline]}") | ${R_ERR[$n]} | $(mb "${R_RSS[$n]}") |"
    done
    echo
    echo "| memory | value |"
    echo "|---|---:|"
    echo "| RSS right after start | $(mb "$START_RSS") |"
    echo "| idle RSS (after login + a few requests, settled 3 s) | $(mb "$IDLE_RSS") |"
    echo "| idle: anonymous / shared file pages / PSS | $(mb "$IDLE_ANON") / $(mb "$IDLE_SHARED") / $(mb "$IDLE_PSS") |"
    echo "| VmHWM before load (start-up argon2 for the bootstrap account) | $(mb "$IDLE_HWM") |"
    echo "| RSS after all runs (settled 3 s) | $(mb "$AFTER_RSS") |"
    echo "| peak RSS (VmHWM) over the whole run | $(mb "$PEAK_HWM") |"
    echo "| threads idle / after load | $IDLE_THREADS / $LOAD_THREADS |"
    echo "| RSS before / after $PROBES failed Basic logins (argon2) | $(mb "$PROBE_BEFORE") / $(mb "$PROBE_AFTER") ($(mb "$PROBE_PER") per login kept) |"
    echo
    tok_ok=no; [ "${R_RPS[token]}" -gt "$TARGET_RPS" ] && tok_ok=yes
    idle_ok=no; [ "$IDLE_RSS" -lt "$TARGET_IDLE_KB" ] && idle_ok=yes
    echo "Targets: session-token GET > $TARGET_RPS req/s: $(verdict $tok_ok) (${R_RPS[token]}); idle RSS < 15 MB: $(verdict $idle_ok) ($(mb "$IDLE_RSS"))."
} >"$WORK/report.md"

mkdir -p "$HERE/results"
cp "$WORK/report.md" "$HERE/results/latest.md"
cat "$WORK/report.md"
