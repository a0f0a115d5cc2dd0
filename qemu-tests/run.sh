#!/usr/bin/env bash
# The Keel image under QEMU, in one command (as root):
#
#   qemu-tests/run.sh [--build] [--keeld PATH] [NAME...]
#
# Builds the image with scripts/image.sh if build/image/keel-image.env is missing (or always with
# --build), and version N+1 of it into build/image-next for the update scenarios, makes sure the test venv with the DMTF validators exists (scripts/setup.sh), then runs
# the scenarios (qemu-tests/tests/scenarios.rs; NAME selects some by substring). QEMU, swtpm,
# qemu-img and OVMF come from the image's trixie tools tree, so nothing else is installed on the
# host. Each phase's duration is printed. KEEL_IMAGE_ENV points at another build's keel-image.env.
# --keeld PATH is passed to scripts/image.sh (e.g. target/debug/keeld, already built by the tests,
# instead of a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

build=0
args=()
image_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --keeld) image_args+=(--keeld "$2"); shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) args+=("$1") ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "qemu-tests: run as root (private network namespace, image build)" >&2; exit 1; }
t_all=$(date +%s)

t=$(date +%s)
[ -x .venv/bin/rf_service_validator ] || [ -n "${KEEL_VENV:-}" ] || [ -x ../main/.venv/bin/rf_service_validator ] || scripts/setup.sh
echo "qemu-tests: host set-up took $(( $(date +%s) - t ))s"

envfile=${KEEL_IMAGE_ENV:-build/image/keel-image.env}
nextfile=${KEEL_NEXT_IMAGE_ENV:-build/image-next/keel-image.env}
if [ "$build" = 1 ] || [ ! -f "$envfile" ]; then
    t=$(date +%s)
    scripts/image.sh "${image_args[@]}"
    echo "qemu-tests: image build took $(( $(date +%s) - t ))s"
    rm -f "$nextfile"
fi
# Version N+1 for the update scenarios: the same build with the version <N>.1 (same keys, warm
# caches), in its own output directory.
if [ ! -f "$nextfile" ] && [ -z "${KEEL_NEXT_IMAGE_ENV:-}" ]; then
    t=$(date +%s)
    n=$(sed -n 's/^KEEL_VERSION=//p' "$envfile")
    scripts/image.sh "${image_args[@]}" --version "$n.1" --out "$(dirname "$nextfile")"
    echo "qemu-tests: image N+1 ($n.1) build took $(( $(date +%s) - t ))s"
fi
# Version N+2 for the rollback scenario (only when it runs): a UKI whose command line sends the
# machine to reboot.target, so that it never finishes booting and its tries run out.
badfile=${KEEL_BAD_IMAGE_ENV:-build/image-bad/keel-image.env}
want_bad=0
[ ${#args[@]} = 0 ] && want_bad=1
for a in "${args[@]}"; do case rollback in *"$a"*) want_bad=1 ;; esac; done
if [ "$want_bad" = 1 ] && [ -z "${KEEL_BAD_IMAGE_ENV:-}" ] && { [ "$build" = 1 ] || [ ! -f "$badfile" ]; }; then
    t=$(date +%s)
    n=$(sed -n 's/^KEEL_VERSION=//p' "$envfile")
    scripts/image.sh "${image_args[@]}" --version "$n.2" --out "$(dirname "$badfile")" --cmdline "systemd.unit=reboot.target"
    echo "qemu-tests: image N+2 ($n.2, never finishes booting) build took $(( $(date +%s) - t ))s"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
t=$(date +%s)
rc=0
cargo test -p keel-qemu-tests --test scenarios -- "${args[@]}" || rc=$?
echo "qemu-tests: scenarios took $(( $(date +%s) - t ))s (total $(( $(date +%s) - t_all ))s)"
exit "$rc"
