#!/usr/bin/env bash
# Set up (Debian packages, Rust build) and run keeld on https://127.0.0.1:8443 with its state in
# ./keel-state. Arguments are passed to `keeld serve`; --listen and --state-dir given there replace
# the defaults, e.g.  scripts/run.sh --listen 127.0.0.1:9443 --bootstrap-admin-file admin.txt
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-test-deps

addr=127.0.0.1:8443
listen=(--listen "$addr")
state_dir=./keel-state
state=(--state-dir "$state_dir")
bootstrap=0
prev=
for arg in "$@"; do
    case "$arg" in
        --listen|--listen=*) listen=() ;;
        --state-dir|--state-dir=*) state=() ;;
        --bootstrap-admin-file|--bootstrap-admin-file=*) bootstrap=1 ;;
    esac
    [ "$prev" = --state-dir ] && state_dir=$arg
    [ "$prev" = --listen ] && addr=$arg
    case "$arg" in
        --state-dir=*) state_dir=${arg#--state-dir=} ;;
        --listen=*) addr=${arg#--listen=} ;;
    esac
    prev=$arg
done

pwfile="$state_dir/initial-admin-password"
if [ -f "$pwfile" ]; then
    echo "run: the initial Administrator is 'admin'; its password is in $pwfile"
elif [ "$bootstrap" = 0 ] && ! [ -f "$state_dir/accounts.json" ]; then
    echo "run: first start: keeld creates the Administrator 'admin' and writes its password to $pwfile"
fi
echo "run: keeld serves https://$addr/redfish/v1 (certificate: $state_dir/tls-cert.pem)"
exec target/debug/keeld serve "${listen[@]}" "${state[@]}" "$@"
