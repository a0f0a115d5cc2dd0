#!/usr/bin/env bash
# Debian 13 (trixie) disk-encryption tools for the tests on a Debian 12 machine, without touching the
# system: systemd 257's systemd-cryptenroll / systemd-cryptsetup and cryptsetup 2.7 with the trixie
# libraries they need (glibc 2.41 included), unpacked with `dpkg -x` into a cache directory and run
# through trixie's own dynamic loader by small wrapper scripts in DIR/bin.
#
#   scripts/trixie-tools.sh [DIR]     default DIR: .cache/trixie-tools of this checkout
#
# Why: bookworm's systemd-cryptenroll 252 cannot unlock a volume with the TPM (`--unlock-tpm2-device`
# arrived in systemd 256). keeld uses that to take charge of a TPM-only volume, as a Keel image
# (systemd 257) does on first boot. Everything else keeld does works with either version.
#
# The apt sources are private (a list file, lists and archives under DIR/apt); the mirror is the one
# this machine's own apt configuration uses, read at run time. Idempotent: nothing is fetched when
# DIR/stamp matches the package list.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-$PWD/.cache/trixie-tools}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

pkgs=(systemd-cryptsetup libsystemd-shared libcryptsetup12 cryptsetup-bin libc6 libssl3t64 libacl1 libattr1
      libaudit1 libcap-ng0 libcap2 libcrypt1 libblkid1 libmount1 libuuid1 libselinux1 libpcre2-8-0 libseccomp2
      libzstd1 liblz4-1 liblzma5 libjson-c5 libargon2-1 libdevmapper1.02.1 libudev1 libgcc-s1 libpopt0 zlib1g
      libkmod2 libtss2-esys-3.0.2-0t64 libtss2-mu-4.0.1-0t64 libtss2-rc0t64 libtss2-sys1t64
      libtss2-tcti-swtpm0t64 libtss2-tcti-device0t64 libtss2-tcti-mssim0t64 libtss2-tctildr0t64)
want=$(printf '%s\n' "${pkgs[@]}" | sha256sum | cut -d' ' -f1)
if [ -x "$dir/bin/systemd-cryptenroll" ] && [ "$(head -n1 "$dir/stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi

# The Debian mirror of this machine's own apt configuration (deb822 or one-line format).
mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/) { print $i; exit } }')
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*debian\/?$/) { print $i; exit } }')
fi
[ -n "$mirror" ] || { echo "trixie-tools: no Debian mirror found in /etc/apt" >&2; exit 1; }

apt="$dir/apt"
rm -rf "$apt" "$dir/root" "$dir/bin"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$dir/root" "$dir/bin"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" > "$apt/sources.list"
opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null
      -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
echo "trixie-tools: fetching ${#pkgs[@]} trixie packages into $dir"
apt-get -q "${opts[@]}" update >/dev/null
(cd "$apt/debs" && apt-get -q "${opts[@]}" download "${pkgs[@]}" >/dev/null)
for deb in "$apt/debs"/*.deb; do
    dpkg -x "$deb" "$dir/root"
done

root="$dir/root"
lib="$root/usr/lib/x86_64-linux-gnu"
for tool in usr/bin/systemd-cryptenroll usr/bin/systemd-cryptsetup usr/sbin/cryptsetup; do
    name=$(basename "$tool")
    cat > "$dir/bin/$name" <<EOF
#!/bin/sh
# trixie's $name, run with trixie's loader and libraries (scripts/trixie-tools.sh).
exec "$root/usr/lib64/ld-linux-x86-64.so.2" --library-path "$lib:$lib/systemd" "$root/$tool" "\$@"
EOF
    chmod 755 "$dir/bin/$name"
done
{
    echo "$want"
    "$dir/bin/systemd-cryptenroll" --version | head -n1
    "$dir/bin/cryptsetup" --version
} > "$dir/stamp"
rm -rf "$apt/cache" "$apt/lists"
echo "trixie-tools: $(sed -n 2p "$dir/stamp"), $(sed -n 3p "$dir/stamp")"
