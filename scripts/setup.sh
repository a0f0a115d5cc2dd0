#!/usr/bin/env bash
# Idempotent set-up of a Debian 12 machine for Keel: Debian packages, the Rust build and (unless
# --no-test-deps) the Python test environment in .venv. Safe to run again: it only installs what is
# missing, runs `apt-get update` only when a package is missing, and rebuilds .venv only when
# requirements-test.txt changed.
#
#   scripts/setup.sh                 everything the tests need
#   scripts/setup.sh --no-test-deps  only what building and running keeld needs
set -euo pipefail
cd "$(dirname "$0")/.."

test_deps=1
for arg in "$@"; do
    case "$arg" in
        --no-test-deps) test_deps=0 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "setup: unknown argument $arg" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*"; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
# Building keeld: a C toolchain, OpenSSL headers (the openssl crate links the system library) and the
# TPM2 Software Stack (tss-esapi links libtss2-esys and its TCTIs).
pkgs=(build-essential pkg-config libssl-dev openssl libtss2-dev ca-certificates curl git)
# What keeld runs to read the machine: ethtool (NIC firmware versions).
pkgs+=(ethtool)
if [ "$test_deps" = 1 ]; then
    # python3-venv: the test venv; wrk: bench/; chromium (+ fonts): the HTML view tests;
    # iproute2 + util-linux (ip, unshare, nsenter): the validators run in a private network namespace.
    # swtpm + tpm2-tools: a real software TPM for the TPM tests.
    # dbus-daemon: the power tests' private bus; systemd: systemd-inhibit takes logind inhibitors on it.
    # cryptsetup-bin: LUKS2 image files for the disk encryption tests (keeld runs cryptsetup).
    # fdisk + gdisk: sfdisk --json and sgdisk -v check the slot engine's GPT images; time: bench/update.sh (peak RSS).
    pkgs+=(python3 python3-venv wrk chromium fonts-liberation iproute2 util-linux jq swtpm swtpm-tools tpm2-tools dbus-daemon systemd cryptsetup-bin fdisk gdisk time)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        die "missing Debian packages (${missing[*]}) and neither root nor sudo to install them"
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${missing[@]}"
else
    say "Debian packages present"
fi

# ---------------------------------------------------------------- Rust
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    die "no Rust toolchain (cargo) found. Install a current stable toolchain with rustup and make
       sure cargo is on PATH or in ~/.cargo/bin; this script does not download toolchains.
       Debian 12's own cargo package is too old for keeld's dependencies."
fi
say "$(cargo --version)"

# ---------------------------------------------------------------- Python test venv
if [ "$test_deps" = 1 ]; then
    py=/usr/bin/python3
    [ -x "$py" ] || py=$(command -v python3) || die "python3 not found"
    want=$(sha256sum requirements-test.txt | cut -d' ' -f1)
    have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
        say "creating .venv with $py"
        rm -rf .venv
        "$py" -m venv .venv
        have=
    fi
    if [ "$want" != "$have" ]; then
        say "installing requirements-test.txt into .venv"
        .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
        echo "$want" > .venv/.requirements.sha256
    else
        say ".venv up to date"
    fi
fi

# ---------------------------------------------------------------- Debian 13 encryption tools
# systemd 257's systemd-cryptenroll (TPM2 unlocking, `--unlock-tpm2-device`) for the crypt tests,
# unpacked from trixie into .cache/trixie-tools without touching the system (see the script).
if [ "$test_deps" = 1 ]; then
    scripts/trixie-tools.sh
fi

# ---------------------------------------------------------------- build
say "cargo build"
cargo build
say "done"
