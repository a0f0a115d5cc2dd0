#!/usr/bin/env bash
# Re-record the guest inventory fixtures (tests/fixtures/qemu-*), in one command (as root):
#
#   qemu-tests/record.sh [--build] [NAME...]
#
# Builds keeld (debug) and the devel image (scripts/image.sh --profile devel, whose debug shell
# on the serial console the recorder types on) into build/image-devel if it is missing (or always
# with --build), then runs qemu-tests' record-fixture program: each machine shape NAME (default
# all: qemu-nvme8 and qemu-nics5; `target/debug/record-fixture --help`) is booted under QEMU, recorded with
# `keeld host record` inside the guest and unpacked into tests/fixtures/NAME. Environment:
# KEEL_IMAGE_CACHE (image build caches), KEEL_QEMU_WORKDIR (default /var/tmp/keel-qemu-record),
# KEEL_QEMU_ECHO=0 (keep the serial console out of the output).
set -euo pipefail
cd "$(dirname "$0")/.."

build=0
args=()
for a in "$@"; do
    case "$a" in
        --build) build=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "record: run as root (private network namespace, image build)" >&2; exit 1; }
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
export KEEL_IMAGE_ENV=${KEEL_IMAGE_ENV:-build/image-devel/keel-image.env}
cargo build -p keeld -p keel-qemu-tests --bin keeld --bin record-fixture
if [ "$build" = 1 ] || [ ! -f "$KEEL_IMAGE_ENV" ]; then
    scripts/image.sh --profile devel --out "$(dirname "$KEEL_IMAGE_ENV")" --keeld target/debug/keeld
fi
exec target/debug/record-fixture "${args[@]}"
