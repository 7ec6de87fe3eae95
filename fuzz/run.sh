#!/usr/bin/env bash
# make fuzz: runs each fuzz target (built in build/fuzz/) for a fixed time, one after another,
# from its checked-in corpus. New corpus entries and crashing inputs go to a fresh temporary
# directory, which is kept and named at the end; the checked-in corpus is never written.
# Usage: fuzz/run.sh SECONDS TARGET...
set -euo pipefail
seconds=$1
shift
out=$(mktemp -d "${TMPDIR:-/tmp}/tcp-log-server-fuzz.XXXXXX")
status=0
printf '%-10s %8s %12s %8s %s\n' target seconds executions new result
for target in "$@"; do
  mkdir -p "$out/corpus/$target"
  log="$out/$target.log"
  # -timeout: a single input that takes this long is a hang, reported like a crash.
  if ./build/fuzz/"$target"_fuzz -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 \
      -dict=fuzz/json.dict -print_final_stats=1 -artifact_prefix="$out/$target-" \
      "$out/corpus/$target" "fuzz/corpus/$target" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log)"
    status=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  added=$(sed -n 's/^stat::new_units_added: *//p' "$log")
  printf '%-10s %8s %12s %8s %s\n' "$target" "$seconds" "${runs:-?}" "${added:-?}" "$result"
done
echo "new corpus entries, logs and any crashing inputs: $out"
if [ "$status" != 0 ]; then
  ls "$out" | grep -E -- '-(crash|leak|timeout|oom)-' | sed "s|^|  $out/|" || true
fi
exit "$status"
