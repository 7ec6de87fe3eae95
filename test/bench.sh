#!/usr/bin/env bash
# Write and read benchmarks of tcp-log-server over loopback (127.0.0.1), in a temporary
# directory that is removed at the end. Run from anywhere: bash test/bench.sh
#
#   BENCH_SECONDS   seconds each write cell issues writes (default 5)
#   BENCH_WARMUP    seconds at the start of each cell left out of its figures (default 1)
#   BENCH_SIZE      canonical entry size in bytes (default 200)
#   READ_ENTRIES    entries in the log for the read benchmark (default 100000)
#   SERVER          server binary to run (default: ./tcp-log-server, built with make)
#   BENCH_TMP       parent of the temporary directory (default: $TMPDIR or /tmp); its
#                   filesystem is the one measured
#
# Matrix: SYNC=always and SYNC=none x connections {1,16,64} x window {1,64}; then a read of
# the whole READ_ENTRIES-entry log, served by the process that wrote it (the newest entries
# from memory) and again after a restart (every entry from the blob files).
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_PER_CELL=${BENCH_SECONDS:-5}
WARMUP=${BENCH_WARMUP:-1}
SIZE=${BENCH_SIZE:-200}
READ_ENTRIES=${READ_ENTRIES:-100000}
SERVER=${SERVER:-./tcp-log-server}
CXX=${CXX:-g++}

WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/tcp-log-bench.XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$SERVER" = ./tcp-log-server ]; then make --no-print-directory tcp-log-server >&2; fi
BENCH=${BENCH:-$WORK/write_bench}
if [ ! -x "$BENCH" ] || [ "$BENCH" = "$WORK/write_bench" ]; then
  "$CXX" -O2 -std=c++17 -Wall -Wextra -o "$BENCH" test/write_bench.cpp
fi
SERVER=$(cd "$(dirname "$SERVER")" && pwd)/$(basename "$SERVER")

# start_server SYNC DIR: starts the server on a free port with its data in DIR; sets PORT.
start_server() {
  local sync=$1 dir=$2
  mkdir -p "$dir"
  (cd "$dir" && exec env PORT=0 HOST=127.0.0.1 SYNC="$sync" LOG_LEVEL=info "$SERVER") \
    >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  PORT=
  for _ in $(seq 1 100); do
    PORT=$(grep '"msg":"listening"' "$dir/server.log" 2>/dev/null |
           sed -n 's/.*"port":\([0-9][0-9]*\).*/\1/p' | head -n 1) || true
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: server did not start; its log:" >&2
  cat "$dir/server.log" >&2
  exit 1
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
}

# field LINE KEY: the value of KEY=value in a summary line.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

RESULTS=()
run() {  # run ARGS...: one bench run against $PORT; its summary line is kept
  local line status=0
  line=$(timeout 300 "$BENCH" --port "$PORT" "$@") || status=$?
  echo "$line" >&2
  [ "$status" -eq 0 ] || echo "bench: run failed (status $status): $*" >&2
  RESULTS+=("$line")
}

fs=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || echo '?')
echo "bench: $(nproc) CPUs, $fs at $WORK, ${SECONDS_PER_CELL}s per write cell" \
     "(first ${WARMUP}s not counted), entries of $SIZE bytes" >&2

for sync in always none; do
  start_server "$sync" "$WORK/$sync"
  for c in 1 16 64; do
    for w in 1 64; do
      run --mode write --label "$sync" --conns "$c" --window "$w" --size "$SIZE" \
          --writes 100000000 --seconds "$SECONDS_PER_CELL" --warmup "$WARMUP"
    done
  done
  stop_server
  # Data is removed only at the end: on ext4, creating files right after deleting many
  # costs extra CPU (recently deleted inodes are skipped over), which would skew later cells.
done

# The read log: READ_ENTRIES entries written by 16 pipelined connections (SYNC=none: quick).
start_server none "$WORK/read"
per_conn=$(( (READ_ENTRIES + 15) / 16 ))
run --mode write --label fill --conns 16 --window 64 --size "$SIZE" --writes "$per_conn"
run --mode read --label "warm" --from 1
stop_server
start_server none "$WORK/read"
run --mode read --label "restarted" --from 1
run --mode read --label "restarted-again" --from 1
stop_server

echo
printf '%-7s %5s %6s %9s %11s %9s %9s %9s\n' SYNC conns window confirmed writes/s p50_ms p99_ms max_ms
for line in "${RESULTS[@]}"; do
  [ "$(field "$line" mode)" = write ] || continue
  printf '%-7s %5s %6s %9s %11s %9s %9s %9s\n' "$(field "$line" label)" "$(field "$line" conns)" \
    "$(field "$line" window)" "$(field "$line" confirmed)" "$(field "$line" writes_per_s)" \
    "$(field "$line" p50_ms)" "$(field "$line" p99_ms)" "$(field "$line" max_ms)"
done
echo
printf '%-16s %8s %10s %12s %8s %13s\n' read entries secs entries/s MB/s first_byte_ms
for line in "${RESULTS[@]}"; do
  [ "$(field "$line" mode)" = read ] || continue
  printf '%-16s %8s %10s %12s %8s %13s\n' "$(field "$line" label)" "$(field "$line" entries)" \
    "$(field "$line" secs)" "$(field "$line" entries_per_s)" "$(field "$line" mb_per_s)" \
    "$(field "$line" first_byte_ms)"
done
