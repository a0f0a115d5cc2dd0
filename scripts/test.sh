#!/usr/bin/env bash
# Keel's test command (CI runs it through .ci/run): set-up, then every check, then a summary.
#   1. scripts/setup.sh          Debian packages, .venv from requirements-test.txt, cargo build
#   2. cargo test --workspace    Rust unit and integration tests
#   3. OpenAPI                   openapi/openapi.yaml must equal `keeld openapi`
#   4. pytest tests/             every pytest suite against real keeld processes on loopback
#   5. conformance               DMTF Protocol/Service/Interop validators (tests/conformance)
#   6. qemu-tests                the image built (N and N+1) and booted under QEMU: boot, conformance,
#                                refused bundles, five power cuts during an update, A/B update, recovery
#                                key, factory reset (qemu-tests/run.sh; the rollback only in its full local
#                                run; KEEL_SKIP_QEMU=1 skips)
# Every step runs even when an earlier one failed (set-up excepted); the exit status is non-zero if
# anything failed. The DMTF schema bundle is read from ../shared (override: KEEL_SHARED).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export KEEL_SHARED="${KEEL_SHARED:-$(cd "$root/.." && pwd)/shared}"
export PYTHONDONTWRITEBYTECODE=1
# Time limits keep a hung run well inside CI's budget: each step gets at most STEP_TIMEOUT seconds
# and the whole run at most BUDGET seconds (a step that would start after that fails at once).
STEP_TIMEOUT=${KEEL_STEP_TIMEOUT:-1800}
BUDGET=${KEEL_TEST_BUDGET:-5000}

logdir=$(mktemp -d "${TMPDIR:-/tmp}/keel-test.XXXXXX")
t_all=$(date +%s)
deadline=$((t_all + BUDGET))

# seconds the next step may take: its own limit, or what is left of the budget
limit() {
    local left=$((deadline - $(date +%s)))
    [ "$left" -lt "$STEP_TIMEOUT" ] && echo "$left" || echo "$STEP_TIMEOUT"
}
rows=()
n_pass=0 n_fail=0 n_skip=0 any_failed=0

# counts_cargo LOG -> "passed failed ignored" summed over every `test result:` line
counts_cargo() {
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed/) p += $i
                if ($(i+1) ~ /^failed/) f += $i
                if ($(i+1) ~ /^ignored/) s += $i
            }
         } END { print p+0, f+0, s+0 }' "$1"
}

# counts_pytest LOG -> "passed failed skipped" from pytest's closing line (errors count as failed)
counts_pytest() {
    local line
    line=$(sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -E '[0-9]+ (passed|failed|error|errors|skipped|xfailed|xpassed|deselected)\b.* in [0-9.]+s' | tail -n 1)
    local p f e s
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '^[0-9]+' || echo 0)
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '^[0-9]+' || echo 0)
    e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '^[0-9]+' || echo 0)
    s=$(grep -oE '[0-9]+ skipped' <<<"$line" | grep -oE '^[0-9]+' || echo 0)
    echo "${p:-0} $(( ${f:-0} + ${e:-0} )) ${s:-0}"
}

# step NAME KIND COMMAND... : run, stream the output, record the result (KIND: cargo|pytest|check)
step() {
    local name=$1 kind=$2
    shift 2
    local log="$logdir/$(tr -c 'A-Za-z0-9' '_' <<<"$name").log"
    echo
    echo "=============================== $name"
    echo "+ $*"
    local t0 rc p=0 f=0 s=0 secs
    t0=$(date +%s)
    secs=$(limit)
    if [ "$secs" -le 0 ]; then
        echo "test: the run's time budget (${BUDGET}s) is used up; not run" | tee "$log"
        rc=124
    else
        timeout -k 30 "$secs" "$@" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    fi
    case "$kind" in
        cargo) read -r p f s < <(counts_cargo "$log") ;;
        pytest) read -r p f s < <(counts_pytest "$log") ;;
        check) if [ "$rc" = 0 ]; then p=1; else f=1; fi ;;
    esac
    local status=PASS note=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        note=" (timed out)"
    elif [ "$kind" = pytest ] && [ "$rc" = 5 ]; then
        note=" (no tests collected)"
    fi
    if [ "$rc" != 0 ]; then
        status=FAIL
        any_failed=1
        # a failed step always counts at least one failure in the totals
        [ "$f" -gt 0 ] || f=1
    fi
    n_pass=$((n_pass + p)) n_fail=$((n_fail + f)) n_skip=$((n_skip + s))
    rows+=("$(printf '  %-4s  %-34s %5s passed %3s failed %3s skipped %5ss%s' "$status" "$name" "$p" "$f" "$s" "$(( $(date +%s) - t0 ))" "$note")")
}

echo "=============================== set-up"
if ! timeout -k 30 "$(limit)" scripts/setup.sh; then
    echo
    echo "test: set-up failed (see above); nothing was tested"
    echo "total: 0 passed, 1 failed"
    exit 1
fi

# setup.sh found cargo, perhaps only through rustup's env file
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# python-requests verifies against these bundles even where verify=False is asked for; the tests
# and validators only talk to keeld on loopback.
unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE

openapi_check() {
    if target/debug/keeld openapi | diff -u openapi/openapi.yaml - ; then
        echo "openapi/openapi.yaml is current"
    else
        echo
        echo "openapi/openapi.yaml is stale: regenerate it with"
        echo "  cargo build && target/debug/keeld openapi > openapi/openapi.yaml"
        return 1
    fi
}
export -f openapi_check

step "cargo test --workspace" cargo cargo test --workspace
step "openapi/openapi.yaml up to date" check bash -c openapi_check
step "pytest tests/" pytest .venv/bin/pytest -q -rfEs -p no:cacheprovider tests --ignore=tests/conformance
step "conformance (DMTF validators)" pytest .venv/bin/pytest -q -rfEs -s -p no:cacheprovider tests/conformance
# The image under QEMU: builds it (and version N+1) with this keeld, then boots, validates, refuses
# bad bundles, cuts its power while it writes an update, and updates it (qemu-tests/). KEEL_SKIP_QEMU=1 leaves it out of a quick local run.
if [ "${KEEL_SKIP_QEMU:-0}" = 1 ]; then
    echo
    echo "=============================== qemu-tests: skipped (KEEL_SKIP_QEMU=1)"
    rows+=("$(printf '  %-4s  %-34s' SKIP "qemu-tests (the image under QEMU)")")
else
    STEP_TIMEOUT=${KEEL_QEMU_TIMEOUT:-3000} step "qemu-tests (the image under QEMU)" cargo \
        qemu-tests/run.sh --build --keeld target/debug/keeld accel_probe boot conformance refusals power_cut ab_update recovery_key factory_reset
fi

echo
echo "=============================== summary ($(( $(date +%s) - t_all ))s, logs in $logdir)"
printf '%s\n' "${rows[@]}"
if [ "$any_failed" = 0 ]; then
    echo "test: everything passed"
else
    echo "test: FAILED (see the steps marked FAIL above)"
fi
echo "total: $n_pass passed, $n_fail failed, $n_skip skipped"
exit "$any_failed"
