#!/usr/bin/env bash
# 32 concurrent cold GETs of one 256 MiB image through the example server, its image store
# throttled to 200 MiB/s (a remote store), with the cache and with --no-cache: wall time and
# how many times the image store was read (counted from the server's log).
# Needs curl and python3; uses about 1 GiB in $TMPDIR (removed at the end).
#   benches/coalescing_32.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "curl is missing: skipping (apt-get install -y curl)"; exit 0; }
cargo build --release --example image_server
BIN=$PWD/target/release/examples/image_server
D=$(mktemp -d); trap 'kill $(cat $D/pid 2>/dev/null) 2>/dev/null; rm -rf $D' EXIT
head -c 256M /dev/urandom > $D/image.raw

run() { # $1 = label, rest = server flags
  local label=$1; shift
  rm -rf $D/data
  RUST_LOG=info $BIN --bind 127.0.0.1:0 --data-dir $D/data --admin-token t "$@" > $D/out 2> $D/log &
  echo $! > $D/pid
  for _ in $(seq 100); do grep -q listening $D/out 2>/dev/null && break; sleep 0.1; done
  local url; url=$(grep -o 'http://[0-9.:]*' $D/out | head -1)
  local id; id=$(curl -s -X POST -H 'X-Auth-Token: t' -d '{"name":"big","disk_format":"raw","container_format":"bare"}' $url/v2/images | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -s -H 'X-Auth-Token: t' -T $D/image.raw $url/v2/images/$id/file
  local start; start=$(date +%s.%N)
  for _ in $(seq 32); do
    curl -s -o /dev/null -w '%{http_code} %{size_download}\n' -H 'X-Auth-Token: t' $url/v2/images/$id/file >> $D/results &
  done
  wait $(jobs -p | grep -v "^$(cat $D/pid)$") 2>/dev/null || true
  local end; end=$(date +%s.%N)
  local ok; ok=$(grep -c "^200 268435456$" $D/results || true)
  local reads; reads=$(grep -c "reading image data" $D/log || true)
  printf '%-10s wall %6.2f s   complete bodies %2d/32   image store reads %d\n' "$label" "$(echo "$end - $start" | bc)" "$ok" "$reads"
  rm -f $D/results
  kill $(cat $D/pid); wait $(cat $D/pid) 2>/dev/null || true
}
run cache --backend-rate 200MiB
run no-cache --backend-rate 200MiB --no-cache
