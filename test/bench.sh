#!/usr/bin/env bash
# Benchmarks of tcp-log-server over loopback (127.0.0.1), in a temporary directory that is
# removed at the end. Run from anywhere: bash test/bench.sh (or make bench).
#
#   BENCH_SECTIONS  which sections to run, in this order
#                   (default: writes reads memory fairness durable confirm fanout)
#   BASELINE        another server binary (e.g. an older build) measured in the same run in the
#                   memory, fairness and durable sections, so that the two are compared as ratios
#   BASELINE_LABEL  what the results and charts call BASELINE (default: baseline), e.g. its commit
#   BENCH_SECONDS   seconds each write cell issues writes (default 5)
#   BENCH_WARMUP    seconds at the start of each cell left out of its figures (default 1)
#   BENCH_SIZE      canonical entry size in bytes (default 200)
#   READ_ENTRIES    entries in the log for the read and fairness sections (default 100000)
#   IDLE_CONNS      the large idle-connection count of the memory and fairness sections
#                   (default 10000; the server and this script each need that many descriptors)
#   SERVER          server binary to run (default: ./tcp-log-server, built with make)
#   BENCH_TMP       parent of the temporary directory (default: $TMPDIR or /tmp); its
#                   filesystem is the one measured
#   BENCH_OUT       directory of the results file, results.txt (default: build/bench)
#   REDIS_BATCH     entries per XRANGE request in the reads section's Redis read (default 1000)
#   SUSTAINED_SECONDS  the confirm section's sustained cell and create loop (default 60)
#   CONFIRM_PARTS      the confirm section's parts to run: "bursts past sustained" (default)
#   TRAP_FILES      files the confirm section creates and removes before its second round
#                   (default 200000)
#
# The results file, which test/bench_charts.sh draws: a header of "# key: value" lines (the
# commit, the date, the machine, the settings, the load average before and after), then one line
# per cell as it finishes: section=<section>, then the cell's key=value summary line as
# write_bench prints it (memory and poll-cost cells in the same form), exit=<status> added when a
# run failed.
#
# write_bench reads BENCH_SECONDS and BENCH_WARMUP from the environment too: runs that must not
# stop on time (the fills) say --seconds 0.
#
# Sections:
#   writes    SYNC=always and SYNC=none x connections {1,16,64} x window {1,64}
#   reads     a read of the whole READ_ENTRIES-entry log, by the process that wrote it (the
#             newest entries from memory) and again after a restart (every entry from its blob);
#             and, when redis-server is installed, the same entries written to a Redis stream and
#             read back from its start with XRANGE, REDIS_BATCH entries a request
#   memory    server memory (VmRSS) per connection: 1,000 and IDLE_CONNS idle connections that
#             each wrote once and hold a stream read; 100 readers that each caught up on a 2 MB
#             log; and the server's memory once all of them closed, against its memory before
#   fairness  one writer with one write in flight (the probe): its latency alone, while 1 and 8
#             readers catch up on the READ_ENTRIES log from disk, while 100 stalled readers (that
#             never read) join, and beside IDLE_CONNS idle connections; and one reader alone
#   durable   side by side with Redis Streams (XADD; Debian's redis-server, AOF on, appendfsync
#             always and everysec), interleaved cell by cell: connections x writes in flight
#             1x1, 1x64, 16x16, with 100-byte and 1 KiB entries, SYNC=always and SYNC=none; then
#             1x1 and 16x16 while another process writes 2 GB to the same file system
#   confirm   durable writes as on a machine that does other things: SYNC=always beside Redis
#             appendfsync always, SYNC=none and BASELINE (SYNC=always), with no file-system sync between cells, first
#             on a quiet file system, then at once after a large delete (TRAP_FILES files
#             created and removed: the ext4 trap); 1x1 for BENCH_SECONDS, 1x64 and 16x16 for
#             a burst the default journal holds (2 s, and at most 200,000 entries of 100 B or
#             30,000 of 1 KiB), each of ours starting with the journal empty
#             (settle_journal: GET /metrics); 100-byte and 1 KiB entries. Then a 1x64 burst
#             of twice what the journal takes before a write waits (its max_ms: the wait for a
#             side's blob files and checkpoint), and 16x16 of
#             100-byte entries sustained for SUSTAINED_SECONDS (both also for BASELINE), and a
#             plain create-write loop (write_bench --mode create) on the same file system for as
#             long: the blob files' own limit.
#   fanout    100 readers following the log while one writer sends 1,000 writes/s for
#             BENCH_SECONDS x 2: the latency of each entry to each reader, ours SYNC=always,
#             Redis appendfsync always (XREAD BLOCK) and BASELINE, each on a fresh store
set -euo pipefail

BENCH_OUT=${BENCH_OUT:-build/bench}
case $BENCH_OUT in /*) ;; *) BENCH_OUT=$PWD/$BENCH_OUT ;; esac
cd "$(dirname "$0")/.."
SECTIONS=${BENCH_SECTIONS:-writes reads memory fairness durable confirm fanout}
SECONDS_PER_CELL=${BENCH_SECONDS:-5}
WARMUP=${BENCH_WARMUP:-1}
SIZE=${BENCH_SIZE:-200}
READ_ENTRIES=${READ_ENTRIES:-100000}
IDLE_CONNS=${IDLE_CONNS:-10000}
SERVER=${SERVER:-./tcp-log-server}
BASELINE=${BASELINE:-}
BASELINE_LABEL=${BASELINE_LABEL:-baseline}
REDIS_BATCH=${REDIS_BATCH:-1000}
SUSTAINED_SECONDS=${SUSTAINED_SECONDS:-60}
TRAP_FILES=${TRAP_FILES:-200000}
CXX=${CXX:-g++}

WORK=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/tcp-log-bench.XXXXXX")
SERVER_PID=
LOAD_PIDS=()
cleanup() {
  for pid in "${LOAD_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Every server, Redis and load this shell started and that still runs (a section interrupted
  # keeps several: the confirm section runs four servers at once); only our own children.
  local children
  children=$(jobs -p)
  if [ -n "$children" ]; then
    kill -TERM $children 2>/dev/null || true
    wait $children 2>/dev/null || true
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
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
SERVER=$(abs "$SERVER")
[ -z "$BASELINE" ] || BASELINE=$(abs "$BASELINE")
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# start_server SYNC DIR [BINARY]: starts a server on a free port with its data in DIR; sets PORT.
start_server() {
  local sync=$1 dir=$2 bin=${3:-$SERVER}
  mkdir -p "$dir"
  (cd "$dir" && exec env PORT=0 HOST=127.0.0.1 SYNC="$sync" LOG_LEVEL=info METRICS=127.0.0.1:0 "$bin") \
    >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  PORT= METRICS_PORT=
  for _ in $(seq 1 100); do
    PORT=$(grep '"msg":"listening"' "$dir/server.log" 2>/dev/null |
           sed -n 's/.*"port":\([0-9][0-9]*\).*/\1/p' | head -n 1) || true
    METRICS_PORT=$(grep '"msg":"listening"' "$dir/server.log" 2>/dev/null |
           sed -n 's/.*"metrics":"127.0.0.1:\([0-9][0-9]*\)".*/\1/p' | head -n 1) || true
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

# start_redis FSYNC DIR: Redis with an append-only file synced FSYNC (always, everysec) in DIR,
# on a free loopback port; sets REDIS_PORT and REDIS_PID.
start_redis() {
  local fsync=$1 dir=$2
  mkdir -p "$dir"
  REDIS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
      --appendfsync "$fsync" --save "" --daemonize no --logfile "$dir/redis.log" &
  REDIS_PID=$!
  LOAD_PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do
    grep -q "Ready to accept connections" "$dir/redis.log" 2>/dev/null && return 0
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: redis-server did not start; its log:" >&2
  cat "$dir/redis.log" >&2
  exit 1
}

# metric MPORT NAME: a sample of the server's GET /metrics (tcp_log_server_NAME), "" if none.
metric() {
  local v=
  if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    v=$(sed -n "s/^tcp_log_server_$2 //p" <&3 | head -n 1)
    exec 3<&-
  fi
  echo "$v"
}
# settle_journal MPORT: waits (at most 120 s) until the server's journal is empty (every entry
# made into its blob file and index record, and checkpointed), so that a burst starts with the
# whole journal before it. At once for a server without a journal (SYNC=none: capacity 0).
# (Named apart from the fairness section's settle: one name for both made the later definition
# win, and the confirm cells then did not wait at all.)
settle_journal() {
  local used
  for _ in $(seq 1 1200); do
    used=$(metric "$1" journal_used_bytes)
    [ -n "$used" ] || { echo "bench: no journal_used_bytes from the metrics port $1" >&2; exit 1; }
    [ "$used" = 0 ] && return 0
    sleep 0.1
  done
  echo "bench: the journal did not empty within 120 s (used: $used)" >&2
}

# settle_servers: waits until the journal of each server of the confirm section with a metrics
# port is empty, so that no cell runs beside another server's store thread still making the
# blob files of the cell before (a cell must have the machine to itself, as Redis's does).
settle_servers() {
  settle_journal "$C_ALWAYS_METRICS"
  [ -z "${C_BASE_METRICS:-}" ] || settle_journal "$C_BASE_METRICS"
}

# field LINE KEY: the value of KEY=value in a summary line.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# record LINE [STATUS]: a cell's summary line into the results file, under the current section.
SECTION=
record() {
  [ -n "$1" ] || return 0
  if [ "${2:-0}" -eq 0 ]; then echo "section=$SECTION $1"; else echo "section=$SECTION $1 exit=$2"; fi \
    >>"$RESULTS_FILE"
}

RESULTS=()
run() {  # run ARGS...: one bench run against $PORT; its summary line is kept
  local line status=0
  line=$(timeout 300 "$BENCH" --port "$PORT" "$@") || status=$?
  echo "$line" >&2
  [ "$status" -eq 0 ] || echo "bench: run failed (status $status): $*" >&2
  RESULTS+=("$line")
  record "$line" "$status"
}

# start_load OUT ARGS...: a load generator in the background (pid in LOAD_PID), output in OUT.
start_load() {
  local out=$1
  shift
  "$BENCH" --port "$PORT" "$@" >"$out" 2>&1 &
  LOAD_PID=$!
  LOAD_PIDS+=("$LOAD_PID")
}
# wait_ready OUT: waits (at most 120 s) for a hold-mode generator to print its ready line.
wait_ready() {
  for _ in $(seq 1 1200); do
    grep -q '^ready' "$1" 2>/dev/null && return 0
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: load generator not ready:" >&2
  cat "$1" >&2
  exit 1
}
stop_load() {
  kill -TERM "$LOAD_PID" 2>/dev/null || true
  wait "$LOAD_PID" 2>/dev/null || true
}
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
open_fds() { ls "/proc/$1/fd" | wc -l; }
# settle FDS: waits until the server has closed its connections (at most FDS descriptors open)
# and had a housekeeping tick to give memory back.
settle() {
  for _ in $(seq 1 300); do
    [ "$(open_fds "$SERVER_PID")" -le "$1" ] && break
    sleep 0.1
  done
  sleep 2.2
}

fs=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || echo '?')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
# A build of changes not committed is not the commit: say so.
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit-dirty"
echo "bench: $(nproc) CPUs, $fs at $WORK, sections: $SECTIONS; commit $commit" >&2

mkdir -p "$BENCH_OUT"
RESULTS_FILE=$BENCH_OUT/results.txt
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
ram=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
{
  echo "# tcp-log-server make bench (test/bench.sh): one line per cell, section=<section> then its summary"
  echo "# commit: $commit"
  echo "# baseline: ${BASELINE:+$BASELINE_LABEL}"
  echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "# machine: $(nproc) CPUs (${cpu:-?}), $ram RAM, $fs, Linux $(uname -r)"
  echo "# cpus: $(nproc)"
  echo "# cpu: ${cpu:-?}"
  echo "# ram: $ram"
  echo "# fs: $fs"
  echo "# kernel: $(uname -r)"
  echo "# sections: $SECTIONS"
  echo "# settings: BENCH_SECONDS=$SECONDS_PER_CELL BENCH_WARMUP=$WARMUP BENCH_SIZE=$SIZE" \
       "READ_ENTRIES=$READ_ENTRIES IDLE_CONNS=$IDLE_CONNS REDIS_BATCH=$REDIS_BATCH"
  echo "# load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS_FILE"

section() { [[ " $SECTIONS " == *" $1 "* ]]; }
# The confirm section's parts (CONFIRM_PARTS, default all three): bursts, past, sustained.
CONFIRM_PARTS=${CONFIRM_PARTS:-bursts past sustained}
part() { [[ " $CONFIRM_PARTS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
if section writes; then
  SECTION=writes
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
fi

# ---------------------------------------------------------------------------------------------
if section reads; then
  SECTION=reads
  # The read log: READ_ENTRIES entries written by 16 pipelined connections (SYNC=none: quick).
  start_server none "$WORK/read"
  per_conn=$(( (READ_ENTRIES + 15) / 16 ))
  run --mode write --label fill --conns 16 --window 64 --size "$SIZE" --writes "$per_conn" --seconds 0
  run --mode read --label "warm" --from 1
  stop_server
  start_server none "$WORK/read"
  run --mode read --label "restarted" --from 1
  run --mode read --label "restarted-again" --from 1
  stop_server
  if [ -n "$BASELINE" ]; then
    start_server none "$WORK/read" "$BASELINE"
    run --mode read --label "$BASELINE_LABEL-restarted" --from 1
    run --mode read --label "$BASELINE_LABEL-restarted-again" --from 1
    stop_server
  fi
  # The floor under a replay that reads one file per entry: open, read, close of every blob.
  line=$("$BENCH" --mode readfiles --label blob-files --dir "$WORK/read/.tcp-log-server.blobs")
  echo "$line" >&2
  RESULTS+=("$line")
  record "$line"
  # The same entries in a Redis stream (its append-only file synced every second; Redis reads
  # from memory either way), read back from the start in XRANGE batches.
  if command -v redis-server >/dev/null; then
    start_redis everysec "$WORK/redis-read"
    PORT=$REDIS_PORT
    run --mode write --redis --label redis-fill --conns 16 --window 64 --size "$SIZE" \
        --writes "$per_conn" --seconds 0
    run --mode read --redis --label redis-xrange --batch "$REDIS_BATCH"
    run --mode read --redis --label redis-xrange-again --batch "$REDIS_BATCH"
    kill -TERM "$REDIS_PID"
    wait "$REDIS_PID" || true
  else
    echo "bench: redis-server is missing (make bench installs it): no Redis read" >&2
  fi
fi

# ---------------------------------------------------------------------------------------------
MEMORY=()
memory_section() {  # memory_section LABEL BINARY
  local label=$1 bin=$2 dir=$WORK/memory-$1 out=$WORK/hold.out base before after fds
  start_server none "$dir" "$bin"
  # A 2 MB log to catch up on (200-byte entries, written by 16 pipelined connections).
  run --mode write --label "$label-fill" --conns 16 --window 64 --size "$SIZE" --writes 600 --seconds 0
  sleep 0.5  # the fill's connections are closed
  fds=$(open_fds "$SERVER_PID")
  # Warm-up: the code of every step is paged in once, so that "all closed" compares like with like.
  start_load "$out" --mode hold --label "$label" --conns 100 --write-once --read --from 1
  wait_ready "$out"
  stop_load
  settle "$fds"
  base=$(rss_kb "$SERVER_PID")
  for n in 1000 "$IDLE_CONNS"; do
    before=$(rss_kb "$SERVER_PID")
    start_load "$out" --mode hold --label "$label" --conns "$n" --write-once --read --from 0
    wait_ready "$out"
    sleep 1
    after=$(rss_kb "$SERVER_PID")
    MEMORY+=("$label idle_wrote_once_and_reading $n $before $after")
    record "mode=memory label=$label state=idle_wrote_once_and_reading conns=$n rss_before_kb=$before rss_after_kb=$after"
    stop_load
    settle "$fds"
  done
  before=$(rss_kb "$SERVER_PID")
  start_load "$out" --mode hold --label "$label" --conns 100 --read --from 1
  wait_ready "$out"
  sleep 1
  after=$(rss_kb "$SERVER_PID")
  MEMORY+=("$label caught_up_on_2MB 100 $before $after")
  record "mode=memory label=$label state=caught_up_on_2MB conns=100 rss_before_kb=$before rss_after_kb=$after"
  stop_load
  settle "$fds"
  after=$(rss_kb "$SERVER_PID")
  MEMORY+=("$label all_closed_again - $base $after")
  record "mode=memory label=$label state=all_closed_again conns=0 rss_before_kb=$base rss_after_kb=$after"
  stop_server
}
if section memory; then
  SECTION=memory
  memory_section new "$SERVER"
  [ -z "$BASELINE" ] || memory_section baseline "$BASELINE"
fi

# ---------------------------------------------------------------------------------------------
POLL_COST=()
probe() {  # probe LABEL: the writer probe for the cell's time; its line is kept
  run --mode write --label "$1" --conns 1 --window 1 --size "$SIZE" --writes 100000000 \
      --seconds "$SECONDS_PER_CELL" --warmup "$WARMUP"
}
fairness_section() {  # fairness_section LABEL BINARY
  local label=$1 bin=$2 dir=$WORK/fairness-$1 out=$WORK/load.out
  start_server none "$dir" "$bin"
  run --mode write --label "$label-fill" --conns 16 --window 64 --size "$SIZE" \
      --writes $(( (READ_ENTRIES + 15) / 16 )) --seconds 0
  stop_server
  start_server none "$dir" "$bin"  # nothing in memory: readers read their blobs from disk
  probe "$label:alone"
  for readers in 1 8; do
    start_load "$out" --mode catchup --label "$label:$readers-readers" --conns "$readers" \
        --from 1 --seconds $(( SECONDS_PER_CELL + 2 ))
    sleep 0.5
    probe "$label:with-$readers-catching-up"
    wait "$LOAD_PID" || true
    RESULTS+=("$(cat "$out")")
    record "$(cat "$out")"
  done
  # 100 readers that never read join the long log while the probe runs.
  "$BENCH" --port "$PORT" --mode write --label "$label:100-stalled-join" --conns 1 --window 1 \
      --size "$SIZE" --writes 100000000 --seconds "$SECONDS_PER_CELL" --warmup 0 >"$WORK/probe.out" &
  local probe_pid=$!
  LOAD_PIDS+=("$probe_pid")
  sleep 1
  start_load "$out" --mode hold --label "$label" --conns 100 --stalled --from 1
  wait "$probe_pid" || true
  RESULTS+=("$(cat "$WORK/probe.out")")
  record "$(cat "$WORK/probe.out")"
  stop_load
  start_load "$out" --mode hold --label "$label" --conns "$IDLE_CONNS"
  wait_ready "$out"
  probe "$label:with-$IDLE_CONNS-idle"
  POLL_COST+=("$label $(field "$(grep '^ready' "$out")" poll_us)")
  record "mode=poll label=$label conns=$IDLE_CONNS poll_us=$(field "$(grep '^ready' "$out")" poll_us)"
  stop_load
  run --mode catchup --label "$label:reader-alone" --conns 1 --from 1 --seconds "$SECONDS_PER_CELL"
  stop_server
}
if section fairness; then
  SECTION=fairness
  fairness_section new "$SERVER"
  [ -z "$BASELINE" ] || fairness_section baseline "$BASELINE"
fi

# ---------------------------------------------------------------------------------------------
DURABLE=()
durable_cell() {  # durable_cell LABEL PORT CONNS WINDOW SIZE [--redis]: one cell, kept in DURABLE
  local label=$1 port=$2 conns=$3 window=$4 size=$5 line status=0
  shift 5
  sync -f "$WORK"  # each cell starts without the write-back the cells before it left behind
  line=$(timeout 300 "$BENCH" --port "$port" --mode write --label "$label" --conns "$conns" \
         --window "$window" --size "$size" --writes 100000000 --seconds "$SECONDS_PER_CELL" \
         --warmup "$WARMUP" "$@") || status=$?
  [ "$status" -eq 0 ] || echo "bench: run failed: $label" >&2
  echo "$line" >&2
  DURABLE+=("$line")
  record "$line" "$status"
}
if section durable; then
  SECTION=durable
  command -v redis-server >/dev/null || { echo "bench: redis-server is missing (make bench installs it)" >&2; exit 1; }
  start_server always "$WORK/durable-always"
  ALWAYS_PORT=$PORT ALWAYS_PID=$SERVER_PID
  start_server none "$WORK/durable-none"
  NONE_PORT=$PORT NONE_PID=$SERVER_PID
  start_redis always "$WORK/redis-always"
  REDIS_ALWAYS_PORT=$REDIS_PORT
  start_redis everysec "$WORK/redis-everysec"
  REDIS_EVERYSEC_PORT=$REDIS_PORT
  BASE_PIDS=()
  if [ -n "$BASELINE" ]; then
    start_server always "$WORK/durable-base-always" "$BASELINE"
    BASE_ALWAYS_PORT=$PORT BASE_PIDS+=("$SERVER_PID")
    start_server none "$WORK/durable-base-none" "$BASELINE"
    BASE_NONE_PORT=$PORT BASE_PIDS+=("$SERVER_PID")
  fi
  for size in 100 1024; do
    for shape in 1x1 1x64 16x16; do
      c=${shape%x*} w=${shape#*x}
      durable_cell "redis-always/$shape/$size" "$REDIS_ALWAYS_PORT" "$c" "$w" "$size" --redis
      durable_cell "ours-always/$shape/$size" "$ALWAYS_PORT" "$c" "$w" "$size"
      durable_cell "redis-everysec/$shape/$size" "$REDIS_EVERYSEC_PORT" "$c" "$w" "$size" --redis
      durable_cell "ours-none/$shape/$size" "$NONE_PORT" "$c" "$w" "$size"
      if [ -n "$BASELINE" ]; then
        durable_cell "base-always/$shape/$size" "$BASE_ALWAYS_PORT" "$c" "$w" "$size"
        durable_cell "base-none/$shape/$size" "$BASE_NONE_PORT" "$c" "$w" "$size"
      fi
    done
  done
  # Another process dirties 2 GB of the same file system while the writes go on.
  for shape in 1x1 16x16; do
    c=${shape%x*} w=${shape#*x}
    for who in ours-always redis-always; do
      port=$ALWAYS_PORT redis=()
      [ "$who" = redis-always ] && port=$REDIS_ALWAYS_PORT redis=(--redis)
      dd if=/dev/zero of="$WORK/ballast" bs=1M count=2048 status=none &
      dd_pid=$!
      LOAD_PIDS+=("$dd_pid")
      durable_cell "$who+2GB/$shape/100" "$port" "$c" "$w" 100 "${redis[@]}"
      wait "$dd_pid" || true
      rm -f "$WORK/ballast"
      sync -f "$WORK"  # the next cell starts without the ballast's write-back
    done
  done
  kill -TERM "$ALWAYS_PID" "$NONE_PID" "${BASE_PIDS[@]}"
  wait "$ALWAYS_PID" "$NONE_PID" "${BASE_PIDS[@]}" || true
  SERVER_PID=
fi

# ---------------------------------------------------------------------------------------------
CONFIRM=()
confirm_cell() {  # confirm_cell LABEL PORT CONNS WINDOW SIZE SECONDS WARMUP WRITES [--redis]: no fs sync first
  local label=$1 port=$2 conns=$3 window=$4 size=$5 secs=$6 warmup=$7 writes=$8 line status=0
  shift 8
  line=$(timeout 300 "$BENCH" --port "$port" --mode write --label "$label" --conns "$conns" \
         --window "$window" --size "$size" --writes "$writes" --seconds "$secs" --warmup "$warmup" "$@") || status=$?
  [ "$status" -eq 0 ] || echo "bench: run failed: $label" >&2
  echo "$line" >&2
  CONFIRM+=("$line")
  record "$line" "$status"
}
if section confirm; then
  SECTION=confirm
  command -v redis-server >/dev/null || { echo "bench: redis-server is missing (make bench installs it)" >&2; exit 1; }
  start_server always "$WORK/confirm-always"
  C_ALWAYS_PORT=$PORT C_ALWAYS_METRICS=$METRICS_PORT C_PIDS=("$SERVER_PID")
  start_server none "$WORK/confirm-none"
  C_NONE_PORT=$PORT C_PIDS+=("$SERVER_PID")
  start_redis always "$WORK/confirm-redis"
  C_REDIS_PORT=$REDIS_PORT C_REDIS_PID=$REDIS_PID
  if [ -n "$BASELINE" ]; then
    start_server always "$WORK/confirm-base" "$BASELINE"
    C_BASE_PORT=$PORT C_BASE_METRICS=$METRICS_PORT C_PIDS+=("$SERVER_PID")
  fi
  for fs_state in quiet after-delete; do
    part bursts || continue
    if [ "$fs_state" = after-delete ]; then
      # The ext4 trap: file creation stays slow for a while after many files are removed.
      mkdir -p "$WORK/trap"
      (cd "$WORK/trap" && seq -f "%08g" 1 "$TRAP_FILES" | xargs touch)
      rm -rf "$WORK/trap"
    fi
    for size in 100 1024; do
      for shape in 1x1 1x64 16x16; do
        # A burst the default journal holds: at most 2 s, and at most as many entries as go in
        # before a write could wait for the store thread. A side (32 MiB) is checkpointed once
        # half full and the other side then takes appends, so 1.5 sides go in first: 322,000
        # records of 100 B, 46,600 of 1 KiB (56 bytes of header each). Past that a burst waits
        # for a side's blob files (the sustained cell below).
        # (--writes counts per connection.)
        c=${shape%x*} w=${shape#*x} secs=2 warmup=0
        writes=$(( (size == 100 ? 200000 : 30000) / c ))
        [ "$shape" = 1x1 ] && secs=$SECONDS_PER_CELL warmup=$WARMUP writes=100000000
        # Each cell starts with every journal empty: ours' burst is one the journal holds, and
        # no store thread is still making the files of the cell before beside it.
        settle_servers
        confirm_cell "redis-always/$shape/$size/$fs_state" "$C_REDIS_PORT" "$c" "$w" "$size" "$secs" "$warmup" "$writes" --redis
        settle_servers
        confirm_cell "ours-always/$shape/$size/$fs_state" "$C_ALWAYS_PORT" "$c" "$w" "$size" "$secs" "$warmup" "$writes"
        settle_servers
        confirm_cell "ours-none/$shape/$size/$fs_state" "$C_NONE_PORT" "$c" "$w" "$size" "$secs" "$warmup" "$writes"
        if [ -n "$BASELINE" ]; then
          settle_servers
          confirm_cell "base-always/$shape/$size/$fs_state" "$C_BASE_PORT" "$c" "$w" "$size" "$secs" "$warmup" "$writes"
        fi
      done
    done
  done
  # Past the journal: a burst of twice what goes in before a write waits, quiet file system;
  # its max_ms is the longest a write waited for a side's blob files and checkpoint.
  if part past; then
    settle_servers
    confirm_cell "ours-always/1x64/100/past-journal" "$C_ALWAYS_PORT" 1 64 100 90 0 644000 --stall-seconds 120
    if [ -n "$BASELINE" ]; then
      settle_servers
      confirm_cell "base-always/1x64/100/past-journal" "$C_BASE_PORT" 1 64 100 90 0 644000 --stall-seconds 120
    fi
  fi
  # Sustained: past what the journal holds, writes go at the pace the store thread makes blobs.
  if part sustained; then
    settle_servers
    confirm_cell "ours-always/16x16/100/sustained" "$C_ALWAYS_PORT" 16 16 100 "$SUSTAINED_SECONDS" 5 100000000
    if [ -n "$BASELINE" ]; then
      settle_servers
      confirm_cell "base-always/16x16/100/sustained" "$C_BASE_PORT" 16 16 100 "$SUSTAINED_SECONDS" 5 100000000
    fi
    settle_servers
    line=$("$BENCH" --mode create --label "create-loop/100/sustained" --dir "$WORK/create-loop" \
           --seconds "$SUSTAINED_SECONDS" --size 100) || { echo "bench: create loop failed" >&2; exit 1; }
    echo "$line" >&2
    CONFIRM+=("$line")
    record "$line"
    rm -rf "$WORK/create-loop"
  fi
  kill -TERM "${C_PIDS[@]}" "$C_REDIS_PID"
  wait "${C_PIDS[@]}" "$C_REDIS_PID" || true
  SERVER_PID=
fi

# ---------------------------------------------------------------------------------------------
FANOUT=()
fanout_cell() {  # fanout_cell LABEL PORT [--redis]
  local label=$1 port=$2 line status=0
  shift 2
  line=$(timeout 300 "$BENCH" --port "$port" --mode fanout --label "$label" --conns 100 --rate 1000 --size 100 \
         --seconds $((SECONDS_PER_CELL * 2)) --warmup "$WARMUP" "$@") || status=$?
  [ "$status" -eq 0 ] || echo "bench: run failed: $label" >&2
  echo "$line" >&2
  FANOUT+=("$line")
  record "$line" "$status"
}
if section fanout; then
  SECTION=fanout
  command -v redis-server >/dev/null || { echo "bench: redis-server is missing (make bench installs it)" >&2; exit 1; }
  start_redis always "$WORK/fanout-redis"
  fanout_cell redis-always "$REDIS_PORT" --redis
  kill -TERM "$REDIS_PID"
  wait "$REDIS_PID" || true
  start_server always "$WORK/fanout-ours"
  fanout_cell ours-always "$PORT"
  stop_server
  if [ -n "$BASELINE" ]; then
    start_server always "$WORK/fanout-base" "$BASELINE"
    fanout_cell base-always "$PORT"
    stop_server
  fi
fi

echo "# load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS_FILE"
echo "bench: results in $RESULTS_FILE" >&2

# ---------------------------------------------------------------------------------------------
echo
if section durable; then
  printf '%-26s %11s %9s %9s\n' cell writes/s p50_ms p99_ms
  declare -A RATE
  for line in "${DURABLE[@]}"; do
    label=$(field "$line" label)
    RATE[$label]=$(field "$line" writes_per_s)
    printf '%-26s %11s %9s %9s\n' "$label" "$(field "$line" writes_per_s)" \
      "$(field "$line" p50_ms)" "$(field "$line" p99_ms)"
  done
  echo
  ratio() { awk -v a="${RATE[$1]:-0}" -v b="${RATE[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
  printf '%-12s %-6s %18s %18s %18s %18s %18s\n' shape size always/redis-always always/ours-none none/redis-everysec \
    always/base-always none/base-none
  for size in 100 1024; do
    for shape in 1x1 1x64 16x16; do
      printf '%-12s %-6s %18s %18s %18s %18s %18s\n' "$shape" "$size" "$(ratio "ours-always/$shape/$size" "redis-always/$shape/$size")" \
        "$(ratio "ours-always/$shape/$size" "ours-none/$shape/$size")" \
        "$(ratio "ours-none/$shape/$size" "redis-everysec/$shape/$size")" \
        "$(ratio "ours-always/$shape/$size" "base-always/$shape/$size")" \
        "$(ratio "ours-none/$shape/$size" "base-none/$shape/$size")"
    done
  done
  echo
fi
if section confirm; then
  printf '%-40s %11s %9s %9s\n' cell writes/s p50_ms p99_ms
  declare -A CRATE CP99
  for line in "${CONFIRM[@]}"; do
    label=$(field "$line" label)
    if [ "$(field "$line" mode)" = create ]; then
      CRATE[$label]=$(field "$line" files_per_s)
      printf '%-40s %11s %9s %9s\n' "$label" "${CRATE[$label]}" - -
      continue
    fi
    CRATE[$label]=$(field "$line" writes_per_s) CP99[$label]=$(field "$line" p99_ms)
    printf '%-40s %11s %9s %9s\n' "$label" "${CRATE[$label]}" "$(field "$line" p50_ms)" "${CP99[$label]}"
  done
  echo
  cratio() { awk -v a="${CRATE[$1]:-0}" -v b="${CRATE[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
  printf '%-12s %-6s %-13s %18s %22s %18s %16s\n' shape size fs ours/redis-always p99_ours/p99_redis ours/base-always always/none
  for fs_state in quiet after-delete; do
    for size in 100 1024; do
      for shape in 1x1 1x64 16x16; do
        k=$shape/$size/$fs_state
        p99=$(awk -v a="${CP99[ours-always/$k]:-0}" -v b="${CP99[redis-always/$k]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }')
        printf '%-12s %-6s %-13s %18s %22s %18s %16s\n' "$shape" "$size" "$fs_state" "$(cratio "ours-always/$k" "redis-always/$k")" \
          "$p99" "$(cratio "ours-always/$k" "base-always/$k")" "$(cratio "ours-always/$k" "ours-none/$k")"
      done
    done
  done
  echo "sustained 16x16, 100 B, ${SUSTAINED_SECONDS} s: ours/create-loop $(cratio ours-always/16x16/100/sustained create-loop/100/sustained)" \
       "base/create-loop $(cratio base-always/16x16/100/sustained create-loop/100/sustained)"
  echo "past the journal, 1x64, 100 B: ours/base-always $(cratio ours-always/1x64/100/past-journal base-always/1x64/100/past-journal)"
  echo
fi
if section fanout; then
  printf '%-16s %8s %6s %9s %9s %9s %9s\n' fanout readers rate samples p50_ms p99_ms max_ms
  for line in "${FANOUT[@]}"; do
    printf '%-16s %8s %6s %9s %9s %9s %9s\n' "$(field "$line" label)" "$(field "$line" readers)" "$(field "$line" rate)" \
      "$(field "$line" samples)" "$(field "$line" p50_ms)" "$(field "$line" p99_ms)" "$(field "$line" max_ms)"
  done
  echo
fi
if section writes || section fairness; then
  printf '%-34s %5s %6s %9s %11s %9s %9s %9s\n' cell conns window confirmed writes/s p50_ms p99_ms max_ms
  for line in "${RESULTS[@]}"; do
    [ "$(field "$line" mode)" = write ] || continue
    [[ "$(field "$line" label)" == *fill ]] && continue
    printf '%-34s %5s %6s %9s %11s %9s %9s %9s\n' "$(field "$line" label)" "$(field "$line" conns)" \
      "$(field "$line" window)" "$(field "$line" confirmed)" "$(field "$line" writes_per_s)" \
      "$(field "$line" p50_ms)" "$(field "$line" p99_ms)" "$(field "$line" max_ms)"
  done
  echo
fi
if section reads || section fairness; then
  for p in "${POLL_COST[@]}"; do
    read -r label us <<<"$p"
    echo "$label: one poll() over $IDLE_CONNS idle TCP sockets (timeout 0) costs $us us here"
  done
  echo
  printf '%-28s %8s %10s %12s %8s\n' read entries secs entries/s MB/s
  for line in "${RESULTS[@]}"; do
    mode=$(field "$line" mode)
    if [ "$mode" = readfiles ]; then
      printf '%-28s %8s %10s %12s %8s\n' "open+read+close, no server" "$(field "$line" files)" \
        "$(field "$line" secs)" "$(field "$line" files_per_s)" -
      continue
    fi
    [ "$mode" = read ] || [ "$mode" = catchup ] || continue
    printf '%-28s %8s %10s %12s %8s\n' "$(field "$line" label)" "$(field "$line" entries)" \
      "$(field "$line" secs)" "$(field "$line" entries_per_s)" "$(field "$line" mb_per_s)"
  done
  echo
fi
if section memory; then
  printf '%-9s %-28s %6s %12s %11s %14s\n' server state conns rss_before_kb rss_after_kb per_conn_bytes
  for m in "${MEMORY[@]}"; do
    read -r label state n before after <<<"$m"
    if [ "$n" = - ]; then per=-; else per=$(( (after - before) * 1024 / n )); fi
    printf '%-9s %-28s %6s %12s %11s %14s\n' "$label" "$state" "$n" "$before" "$after" "$per"
  done
fi
