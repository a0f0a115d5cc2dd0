#!/usr/bin/env bash
# Update throughput and memory: apply a 1 GiB signed bundle to a GPT image file with keeld's slot
# engine, and write the same bytes to the same place of the same file with dd, in the same run.
#
#   bench/update.sh                      # release build, 1 GiB usr, 3 rounds
#   USR_MIB=256 ROUNDS=5 bench/update.sh
#   KEELD=/path/to/keeld bench/update.sh # no build; benchmark that binary
#   WORK=/var/tmp/x bench/update.sh      # where the image and bundle go (default: a new dir in /var/tmp)
#
# Per round (dd and keeld alternate, each after `sync`, the bundle warm in the page cache):
#   dd     dd if=BUNDLE of=disk.img bs=4M skip=<first artifact> seek=<slot B's usr> count=<all
#          artifact bytes> conv=fsync,notrunc  (the same bytes to the same file region)
#   keeld  keeld bundle apply-sim --dir SIM --ca CA BUNDLE  (verify the signature, stream the
#          artifacts into slot B's partitions hashing them, fsync each, UKI to the ESP, relabel),
#          under /usr/bin/time -v for the peak RSS
# Before the measured rounds one unmeasured dd fills the sparse image, so every measured write
# overwrites allocated blocks. Throughput = artifact bytes / wall time of the whole command.
# Prints a markdown table and writes it to bench/results/update-latest.md (gitignored). Targets:
# keeld at least 0.9 of dd, peak RSS under 64 MB. Benchmarks are not tests: nothing is asserted.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
USR_MIB="${USR_MIB:-1024}"
ROUNDS="${ROUNDS:-3}"
log() { printf '==> %s\n' "$*" >&2; }

for t in openssl sfdisk jq python3 /usr/bin/time dd; do
    command -v "$t" >/dev/null || { echo "need $t (scripts/setup.sh installs it)" >&2; exit 1; }
done
if [ -z "${KEELD:-}" ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
    KEELD="$ROOT/target/release/keeld"
fi

OWN_WORK=0
if [ -z "${WORK:-}" ]; then
    WORK="$(mktemp -d /var/tmp/keel-update-bench.XXXXXX)"
    OWN_WORK=1
fi
cleanup() { [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

log "throwaway CA and signer"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout sign.key -out sign.csr -subj /CN=bench-signer 2>/dev/null
openssl x509 -req -in sign.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out sign.pem -days 2 2>/dev/null

log "artifacts: ${USR_MIB} MiB usr of random data, $((USR_MIB / 64)) MiB verity"
head -c "$((USR_MIB << 20))" /dev/urandom >usr
head -c "$(((USR_MIB / 64) << 20))" /dev/urandom >verity
usrhash=$(sha256sum usr | cut -d' ' -f1)
printf '{"rootHash":"%s","signature":"bench"}\n' "$usrhash" >verity-sig
printf 'KEEL-SIM-UKI 1\nversion=2.0\nusrhash=%s\nusrsize=%s\n' "$usrhash" "$(stat -c %s usr)" >uki
"$KEELD" bundle create --version 2.0 --usr usr --usr-verity verity --usr-verity-sig verity-sig --uki uki \
    --key sign.key --cert sign.pem -o bundle.keel >&2
rm -f usr verity

log "simulated machine: GPT image with $((USR_MIB + 64)) MiB usr partitions"
"$KEELD" sim --dir sim --running 1.0 --usr-size "$(((USR_MIB + 64) << 20))" status >/dev/null 2>&1
read -r head_len bytes < <(python3 - <<'EOF'
import json, struct
with open("bundle.keel", "rb") as f:
    b = f.read(16)
    mlen = struct.unpack(">I", b[12:16])[0]
    m = json.loads(f.read(mlen))
    slen = struct.unpack(">I", f.read(4))[0]
print(16 + mlen + 4 + slen, sum(a["size"] for a in m["artifacts"]))
EOF
)
usr_b=$(sfdisk --json sim/disk.img | jq '.partitiontable.partitions | map(select(.type == "8484680C-9521-48C6-9C11-B0720656F69E"))[1].start * 512')
log "bundle: $(stat -c %s bundle.keel) bytes, artifacts $bytes bytes from offset $head_len; slot B's usr at $usr_b"

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }
run_dd() {
    /usr/bin/time -f '%U %S' -o dd-cpu.txt dd if=bundle.keel of=sim/disk.img bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes \
        skip="$head_len" count="$bytes" seek="$usr_b" conv=fsync,notrunc status=none
}
prepare() { cat bundle.keel >/dev/null; sync; }

log "unmeasured dd (allocates the image's blocks)"
prepare; run_dd

dd_t=() k_t=() k_rss=() dd_cpu=() k_cpu=()
for r in $(seq 1 "$ROUNDS"); do
    prepare
    t0=$(now); run_dd; t1=$(now)
    dd_t+=("$(calc "$t1 - $t0")")
    dd_cpu+=("$(awk '{ printf "%.2f", $1 + $2 }' dd-cpu.txt)")
    prepare
    t0=$(now)
    /usr/bin/time -f '%M %U %S' -o rss.txt env RUST_LOG=warn "$KEELD" bundle apply-sim --dir sim --ca ca.pem bundle.keel >apply.log
    t1=$(now)
    grep -q 'applied 2.0 to slot B' apply.log || { echo "apply failed:"; cat apply.log; exit 1; } >&2
    k_t+=("$(calc "$t1 - $t0")")
    k_rss+=("$(cut -d' ' -f1 rss.txt)")
    k_cpu+=("$(awk '{ printf "%.2f", $2 + $3 }' rss.txt)")
    log "round $r: dd ${dd_t[-1]} s (${dd_cpu[-1]} CPU-s), keeld ${k_t[-1]} s (${k_cpu[-1]} CPU-s), keeld peak RSS ${k_rss[-1]} KiB"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
dd_m=$(median "${dd_t[@]}")
k_m=$(median "${k_t[@]}")
rss_max=$(printf '%s\n' "${k_rss[@]}" | sort -n | tail -1)
mibs() { awk "BEGIN { printf \"%.1f\", $bytes / 1048576 / $1 }"; }
ratio=$(awk "BEGIN { printf \"%.3f\", $dd_m / $k_m }")
load=$(cut -d' ' -f1-3 /proc/loadavg)
commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)

out=$(cat <<EOF
## Update benchmark ($(date -u +%F), commit $commit, load average $load)

$((bytes >> 20)) MiB of artifacts (usr ${USR_MIB} MiB), $ROUNDS rounds, medians; file system of $WORK.

| writer | wall time | throughput | vs dd | CPU time (user+sys) | peak RSS |
|---|---:|---:|---:|---:|---:|
| \`dd bs=4M conv=fsync\` | ${dd_m} s | $(mibs "$dd_m") MiB/s | 1.00 | $(median "${dd_cpu[@]}") s | |
| \`keeld bundle apply-sim\` (verify + write + fsync + activate) | ${k_m} s | $(mibs "$k_m") MiB/s | **${ratio}** | $(median "${k_cpu[@]}") s | **$((rss_max / 1024)) MB** ($rss_max KiB) |

Rounds (dd s / keeld s): $(for i in "${!dd_t[@]}"; do printf '%.2f/%.2f ' "${dd_t[$i]}" "${k_t[$i]}"; done)

Targets: keeld >= 0.9 of dd, peak RSS < 64 MB.
EOF
)
mkdir -p "$HERE/results"
echo "$out" | tee "$HERE/results/update-latest.md"
