#!/usr/bin/env bash
# 1 GiB download throughput with curl against the example server: a miss that fills, three
# hits, then three downloads from the same server started with --no-cache.
# Needs curl and python3; uses about 3 GiB in $TMPDIR (removed at the end).
#   benches/curl_hit_1gib.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "curl is missing: skipping (apt-get install -y curl)"; exit 0; }
cargo build --release --example image_server
BIN=$PWD/target/release/examples/image_server
D=$(mktemp -d); trap 'kill $(cat $D/data.pid 2>/dev/null) 2>/dev/null; rm -rf $D' EXIT
mkdir -p $D
head -c 1G /dev/urandom > $D/image.raw
start() { # $1 = data dir, rest = flags
  local dir=$1; shift
  $BIN --bind 127.0.0.1:0 --data-dir $dir --admin-token t "$@" > $dir.out 2>/dev/null &
  echo $! > $dir.pid
  for i in $(seq 50); do grep -q listening $dir.out 2>/dev/null && break; sleep 0.1; done
  grep -o 'http://[0-9.:]*' $dir.out | head -1
}
URL=$(start $D/data)
ID=$(curl -s -X POST -H 'X-Auth-Token: t' -d '{"name":"big","disk_format":"raw","container_format":"bare"}' $URL/v2/images | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -s -H 'X-Auth-Token: t' -H 'Content-Type: application/octet-stream' -T $D/image.raw $URL/v2/images/$ID/file
dl() { curl -s -o /dev/null -H 'X-Auth-Token: t' -w '%{http_code} %{size_download} %{speed_download} %header{x-cache-status}\n' $1/v2/images/$ID/file | awk '{printf "%s %s bytes %.0f MB/s %s", $1, $2, $3 / 1e6, $4}'; }
echo "miss: $(dl $URL)"
while [ ! -f $D/data/cache/$ID ]; do sleep 0.1; done
for i in 1 2 3; do echo "hit:  $(dl $URL)"; done
kill $(cat $D/data.pid); sleep 0.5
URL=$(start $D/data --no-cache)
for i in 1 2 3; do echo "no-cache: $(dl $URL)"; done
