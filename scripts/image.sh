#!/usr/bin/env bash
# Build the Keel image (mkosi/) on a Debian 12 or 13 machine, as root, in one command:
#
#   scripts/image.sh [--version V] [--profile devel] [--out DIR] [--cache DIR] [--keys DIR]
#                    [--keeld PATH] [--no-bundle] [--rebuild-tools] [--cmdline ARGS]
#
# Phases (each one's duration is printed):
#   1. host      the few Debian packages the build needs on the host (openssl, python3)
#   2. mkosi     mkosi 25 from Debian 13's package, unpacked into the cache and run with PYTHONPATH
#                (mkosi is not on PyPI); apt reaches trixie through a private sources list whose
#                mirror is read from this machine's own apt configuration, never written down here
#   3. tools     a trimmed trixie tools tree (mkosi/tools/mkosi.conf) built once into the cache
#   4. keys      throwaway Secure Boot / verity / PCR-policy key and an update-signing key,
#                generated once into the keys directory (ignored by git; never commit them)
#   5. keeld     `cargo build --release -p keeld` (or --keeld PATH), staged with units/keeld.service
#   6. image     `mkosi build`: raw disk, signed UKI, split partitions (incremental: warm builds reuse
#                the cached package installation)
#   7. firmware  OVMF Secure Boot code and a variable store with our keys enrolled (for QEMU)
#   8. bundle    the update bundle of the same version (`keeld bundle create`, update key)
#
# Defaults: output in build/image, keys in build/keys (both ignored by git), caches in
# $KEEL_IMAGE_CACHE or /var/cache/keel-image (package cache, incremental image, tools tree, mkosi).
# The output directory gets keel-image.env naming every artifact for qemu-tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

version=""
profile=""
out="$root/build/image"
keys="$root/build/keys"
cache="${KEEL_IMAGE_CACHE:-/var/cache/keel-image}"
keeld=""
bundle=1
rebuild_tools=0
cmdline=""
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version=$2; shift ;;
        --profile) profile=$2; shift ;;
        --out) out=$(realpath -m "$2"); shift ;;
        --cache) cache=$(realpath -m "$2"); shift ;;
        --keys) keys=$(realpath -m "$2"); shift ;;
        --keeld) keeld=$(realpath "$2"); shift ;;
        --no-bundle) bundle=0 ;;
        --rebuild-tools) rebuild_tools=1 ;;
        # More kernel command line for the UKI (signed with it), e.g. the rollback test's
        # `systemd.unit=reboot.target`: a version that never finishes booting.
        --cmdline) cmdline=$2; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "image: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$version" ] || version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
case "$version" in
    ''|*[!A-Za-z0-9.~^]*) echo "image: bad version '$version' (letters, digits, . ~ ^ only)" >&2; exit 2 ;;
esac

say() { echo "image: $*"; }
die() { echo "image: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mkosi builds in its own user and mount namespaces as root)"

t_all=$(date +%s)
phase_name="" t_phase=0
timings=()
phase() {
    local now
    now=$(date +%s)
    if [ -n "$phase_name" ]; then
        timings+=("$(printf '  %-9s %5ss' "$phase_name" $((now - t_phase)))")
        say "phase $phase_name took $((now - t_phase))s"
    fi
    phase_name=$1 t_phase=$now
    [ -z "$1" ] || echo "=============================== image: $1"
}

mkdir -p "$cache" "$out" "$keys"
chmod 0700 "$keys"

# ------------------------------------------------------------------ 1. host packages
phase host
need=(openssl python3 ca-certificates)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# ------------------------------------------------------------------ 2. mkosi from trixie
phase mkosi
# The Debian mirror this machine already uses (its own apt configuration), for trixie too.
if [ -z "$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 2>/dev/null)" ]; then
    apt-get update -q
fi
targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(ORIGIN)' 'Identifier: Packages' 2>/dev/null | sort -u)
mirror=$(awk '$3 == "Debian" && $2 !~ /-(security|updates|backports)$/ {print $1; exit}' <<<"$targets")
security=$(awk '$3 == "Debian" && $2 ~ /-security$/ {print $1; exit}' <<<"$targets")
if [ -z "$mirror" ]; then
    # Older apt: fall back to the first Debian URI in the sources files.
    mirror=$(grep -rhoE '^(deb[[:space:]]+(\[[^]]*\][[:space:]]+)?|URIs:[[:space:]]*)[a-z]+://[^[:space:]]+/debian/?' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -oE '[a-z]+://[^[:space:]]+' | head -n 1 || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in this machine's apt configuration"
mirror=${mirror%/}
security=${security%/}
[ -n "$security" ] || security="${mirror}-security"
say "Debian mirror from this machine's apt configuration: $mirror (security: $security)"

aptdir="$cache/apt"
mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
echo "deb $mirror trixie main" >"$aptdir/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache::Archives=$aptdir/archives"
             -o APT::Update::Post-Invoke::= -o Debug::NoLocking=1)
if [ -z "$(find "$aptdir/lists" -name '*trixie*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
    apt-get -q "${apt_private[@]}" update
fi
want=$(apt-cache "${apt_private[@]}" show mkosi 2>/dev/null | awk '/^Version:/ {print $2; exit}')
case "$want" in 25.*) ;; *) die "trixie's mkosi is '$want', expected 25.x" ;; esac
mk="$cache/mkosi-$want"
if [ ! -f "$mk/.done" ]; then
    rm -rf "$mk" "$aptdir/dl"
    mkdir -p "$aptdir/dl"
    (cd "$aptdir/dl" && apt-get -q "${apt_private[@]}" download "mkosi=$want")
    dpkg-deb -x "$aptdir"/dl/mkosi_*.deb "$mk"
    touch "$mk/.done"
fi
mkosi() { PYTHONPATH="$mk/usr/lib/python3/dist-packages" python3 -m mkosi "$@"; }
say "$(mkosi --version)"

# The apt sources mkosi uses, as a sandbox tree: trixie, trixie-updates and trixie-security from
# the same mirror (mkosi's own list adds the debug archive, which is not always reachable), plus
# this machine's apt Acquire settings that make that mirror usable (proxy, Valid-Until).
sandbox="$cache/sandbox"
rm -rf "$sandbox"
mkdir -p "$sandbox/etc/apt/sources.list.d" "$sandbox/etc/apt/apt.conf.d"
cat >"$sandbox/etc/apt/sources.list.d/mkosi.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy|Retries) ' \
    >"$sandbox/etc/apt/apt.conf.d/50keel-host.conf" || true

common=(--sandbox-tree="$sandbox" --package-cache-directory="$cache/packages")

# ------------------------------------------------------------------ 3. tools tree
phase tools
tools="$cache/tools"
stamp=$( (cat mkosi/tools/mkosi.conf; echo "$want $mirror") | sha256sum | cut -d' ' -f1)
if [ "$rebuild_tools" = 1 ] || [ "$(cat "$tools.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -x "$tools/usr/bin/systemd-repart" ]; then
    rm -rf "$tools" "$tools.stamp"
    mkosi -C mkosi/tools "${common[@]}" --output-directory="$cache" --output=tools -f build
    echo "$stamp" >"$tools.stamp"
else
    say "tools tree is current ($tools)"
fi
# Run a program of the tools tree (mkosi's sandbox puts the tree's /usr in place of the host's).
in_tools() { mkosi --tools-tree="$tools" "${common[@]}" sandbox "$@"; }

# ------------------------------------------------------------------ 4. keys
phase keys
# One throwaway key signs the boot chain: systemd-boot and the UKI (Secure Boot db), the verity
# root hash of /usr, and the UKI's PCR 11 policy. A second one signs update bundles. Both stay
# in $keys (0700, ignored by git) so that later builds (version N+1) are trusted by this one.
mkkey() {
    local name=$1 cn=$2
    [ -f "$keys/$name.key" ] && [ -f "$keys/$name.crt" ] && return 0
    say "generating $keys/$name.{key,crt} ($cn)"
    openssl req -new -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$cn/" \
        -keyout "$keys/$name.key.tmp" -out "$keys/$name.crt.tmp" 2>/dev/null
    chmod 0600 "$keys/$name.key.tmp"
    mv "$keys/$name.key.tmp" "$keys/$name.key"
    mv "$keys/$name.crt.tmp" "$keys/$name.crt"
}
mkkey secureboot "Keel test image signing key (throwaway)"
mkkey update "Keel test update signing key (throwaway)"
[ -f "$keys/owner.guid" ] || python3 -c 'import uuid; print(uuid.uuid4())' >"$keys/owner.guid"

# ------------------------------------------------------------------ 5. keeld
phase keeld
if [ -z "$keeld" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    cargo build --release -p keeld
    keeld="$root/target/release/keeld"
fi
stage="$cache/stage"
rm -rf "$stage"
install -D -m 0755 "$keeld" "$stage/usr/bin/keeld"
# Debug info has no use on the machine (a debug build's is 160 MB).
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$stage/usr/bin/keeld"; fi
install -D -m 0644 units/keeld.service "$stage/usr/lib/systemd/system/keeld.service"
# The CA update bundles must be signed by (keeld's --update-ca default); here the throwaway
# update-signing certificate itself.
install -D -m 0644 "$keys/update.crt" "$stage/usr/lib/keel/update-ca.pem"

# ------------------------------------------------------------------ 6. image
phase image
mkdir -p "$cache/incremental" "$cache/workspace"
rm -rf "$out"/keel_* "$out"/initrd* "$out"/*.manifest
profile_args=()
[ -z "$profile" ] || profile_args=(--profile="$profile")
# (mkosi appends a list setting given on the command line to the configured one)
[ -z "$cmdline" ] || profile_args+=(--kernel-command-line="$cmdline")
mkosi -C mkosi "${common[@]}" \
    --tools-tree="$tools" \
    --cache-directory="$cache/incremental" \
    --workspace-directory="$cache/workspace" \
    --output-directory="$out" \
    --image-version="$version" \
    --secure-boot-key="$keys/secureboot.key" --secure-boot-certificate="$keys/secureboot.crt" \
    --verity-key="$keys/secureboot.key" --verity-certificate="$keys/secureboot.crt" \
    --sign-expected-pcr-key="$keys/secureboot.key" --sign-expected-pcr-certificate="$keys/secureboot.crt" \
    --extra-tree="$stage" \
    "${profile_args[@]}" \
    -f build
image="$out/keel_$version.raw"
[ -f "$image" ] || die "mkosi did not produce $image"

# ------------------------------------------------------------------ 7. firmware
phase firmware
# OVMF with Secure Boot (SMM) and a variable store holding our key as PK, KEK and db, Secure
# Boot on: the firmware then boots only what that key signed.
rm -f "$out/OVMF_CODE.secboot.fd" "$out/OVMF_VARS.keel.fd"
cp "$tools/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" "$out/OVMF_CODE.secboot.fd"
guid=$(cat "$keys/owner.guid")
in_tools virt-fw-vars -i "$tools/usr/share/OVMF/OVMF_VARS_4M.fd" -o "$out/OVMF_VARS.keel.fd" \
    --set-pk "$guid" "$keys/secureboot.crt" --add-kek "$guid" "$keys/secureboot.crt" \
    --add-db "$guid" "$keys/secureboot.crt" --sb >/dev/null

# ------------------------------------------------------------------ 8. bundle
phase bundle
# The same version as an update: slot A's three partitions and the UKI, signed with the update key.
bundle_file=""
if [ "$bundle" = 1 ] && "$keeld" bundle create --help >/dev/null 2>&1; then
    bundle_file="$out/keel_$version.bundle"
    "$keeld" bundle create --version "$version" \
        --usr "$out/keel_$version.usr-x86-64.raw" \
        --usr-verity "$out/keel_$version.usr-x86-64-verity.raw" \
        --usr-verity-sig "$out/keel_$version.usr-x86-64-verity-sig.raw" \
        --uki "$out/keel_$version.efi" \
        --key "$keys/update.key" --cert "$keys/update.crt" -o "$bundle_file"
elif [ "$bundle" = 1 ]; then
    say "no update bundle: this keeld has no 'bundle create' (the A/B engine)"
fi

phase ""
cat >"$out/keel-image.env" <<EOF
# Written by scripts/image.sh: what qemu-tests boots.
KEEL_VERSION=$version
KEEL_IMAGE=$image
KEEL_UKI=$out/keel_$version.efi
KEEL_OVMF_CODE=$out/OVMF_CODE.secboot.fd
KEEL_OVMF_VARS=$out/OVMF_VARS.keel.fd
KEEL_BUNDLE=$bundle_file
KEEL_KEYS=$keys
KEEL_TOOLS=$tools
KEEL_PROFILE=${profile:-production}
EOF
echo
echo "=============================== image: done in $(( $(date +%s) - t_all ))s"
printf '%s\n' "${timings[@]}"
ls -lh --time-style=+ "$out" | sed 's/^/  /'
