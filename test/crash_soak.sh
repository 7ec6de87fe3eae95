#!/bin/sh
# Long kill -9 runs outside CI (issue 3): ROUNDS crash rounds per SYNC mode (none, then always),
# each: pipelining writers and two stream readers, kill -9 at a random moment, restart on the
# same directories, every invariant checked. A fresh store every CRASH_ROUNDS_PER_STORE rounds
# (default 25). SEED=<n> replays a run; the seed is printed first.
#   make crash-soak ROUNDS=1000        or        ROUNDS=1000 sh test/crash_soak.sh
set -eu
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-${1:-300}}"
for f in ./tcp-log-server ./test/durability_test; do
  [ -x "$f" ] || { echo "crash-soak: $f is missing; run: make tcp-log-server test/durability_test" >&2; exit 1; }
done
echo "crash-soak: $ROUNDS kill -9 rounds per SYNC mode on $(uname -srm), $(df -T . | awk 'NR==2 {print $2}') at $(pwd), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
start=$(date +%s)
status=0
CRASH_ROUNDS="$ROUNDS" ./test/durability_test --test-case='crash under load*' || status=$?
echo "crash-soak: finished in $(( $(date +%s) - start )) s, exit status $status"
exit $status
