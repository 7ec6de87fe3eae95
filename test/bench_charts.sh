#!/usr/bin/env bash
# Charts of a `make bench` results file (test/bench.sh writes it): SVG files drawn by gnuplot,
# each with the run's commit, machine and date in its footer. Nothing is measured here.
#
#   bash test/bench_charts.sh RESULTS [OUTDIR]
#   make bench-charts BENCH_RESULTS=RESULTS CHARTS_DIR=OUTDIR
#
# OUTDIR (default: the results file's directory) gets the charts the results have cells for:
#   durable-writes.svg  the durable section: writes/s by shape (connections x writes in flight)
#                       and entry size, ours SYNC=always, Redis appendfsync always and the
#                       baseline's SYNC=always when the run had one
#   durable-p99.svg     the p99 latency of the same cells
#   confirm-writes.svg  the confirm section: the same, without a file-system sync between cells,
#   confirm-p99.svg     on a quiet file system and right after a large delete
#   replay.svg          the reads section: entries/s of a read of the whole log, ours (by the
#                       process that wrote it, and after a restart) and Redis (XRANGE)
#   fairness-p99.svg    the fairness section: the writer probe's p99 alone, while readers catch
#                       up, while stalled readers join and beside idle connections, ours and the
#                       baseline
# and results.txt, a copy of RESULTS, when OUTDIR is another directory, so that charts and their
# figures travel together. A chart whose cells the results lack is not drawn (a file of that name
# already in OUTDIR is left as it is, and says its own commit and date). The same results give
# the same files.
set -euo pipefail

RESULTS=${1:?usage: bench_charts.sh RESULTS [OUTDIR]}
OUT=${2:-$(dirname "$RESULTS")}
[ -r "$RESULTS" ] || { echo "bench_charts: no results file $RESULTS" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "bench_charts: gnuplot is missing (make bench-charts installs it)" >&2; exit 1; }
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-charts.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# header KEY: the value of a "# KEY: value" line of the results.
header() { sed -n "s/^# $1: //p" "$RESULTS" | head -n 1; }
# value SECTION LABEL KEY: KEY of the cell of SECTION labelled LABEL (the last one), '?' if none.
value() {
  awk -v s="section=$1" -v l="label=$2" -v k="$3=" '
    $1 == s { found = 0; v = ""
              for (i = 2; i <= NF; i++) { if ($i == l) found = 1; if (index($i, k) == 1) v = substr($i, length(k) + 1) }
              if (found && v != "") out = v }
    END { print (out == "" ? "?" : out) }' "$RESULTS"
}
# gp_string TEXT: TEXT as a single-quoted gnuplot string.
gp_string() { printf "'%s'" "${1//\'/\'\'}"; }

COMMIT=$(header commit)
BASELINE=$(header baseline)
DATE=$(header date)
MACHINE=$(header machine)
SETTINGS=$(header settings)
LOAD="load average $(header load_before) before, $(header load_after) after"
FOOTER1="tcp-log-server ${COMMIT:-?}${BASELINE:+ against $BASELINE}, make bench on ${DATE:-?}"
FOOTER2="${MACHINE:-?}; ${LOAD}"
FOOTER3="$SETTINGS; figures in $(basename "$RESULTS")"
setting() { tr ' ' '\n' <<<"$SETTINGS" | sed -n "s/^$1=//p"; }

# Colours, the same for the same server in every chart.
OURS='#1f5fa8' OURS_LIGHT='#7fa8d8' REDIS='#c8372d' REDIS_LIGHT='#e8958f' BASE='#8a8a8a'

# bars NAME TITLE YLABEL KIND XTICS DATA SERIES...: grouped bars on a log scale, one group per line
# of DATA (whitespace-separated, '?' for a missing value), one bar per SERIES ("column|colour|title"),
# each bar's value above it. KIND is rate (writes/s, entries/s) or ms.
bars() {
  local name=$1 title=$2 ylabel=$3 kind=$4 xtics=$5 data=$6
  shift 6
  local n=$# i=0 plot='' labels='' spec col colour label lo hi
  read -r lo hi < <(awk '{ for (i = 2; i <= NF; i++) if ($i != "?" && $i > 0) { if (lo == "" || $i < lo) lo = $i; if ($i > hi) hi = $i } }
                       END { if (lo == "") { lo = 1; hi = 10 }
                             print 10 ^ int(log(lo / 1.5) / log(10) - (lo < 1.5 ? 1 : 0)), hi * 3 }' "$data")
  for spec in "$@"; do
    IFS='|' read -r col colour label <<<"$spec"
    plot+="${plot:+, }'$data' using (column($col)) title $(gp_string "$label") lc rgb '$colour'"
    labels+=", '$data' using (\$0 + ($i - ($n - 1) / 2.0) / ($n + 1.0)):(column($col)):(fmt(column($col))) with labels offset 0,0.6 font ',9' notitle"
    i=$((i + 1))
  done
  {
    echo "set terminal svg size 1000,540 font 'Helvetica,12' background rgb 'white'"
    echo "set output '$OUT/$name.svg'"
    echo "set encoding utf8"
    title "$title"
    echo "set style data histograms"
    echo "set style histogram clustered gap 1"
    echo "set style fill solid 0.9 border rgb '#404040'"
    echo "set datafile missing '?'"
    echo "set logscale y"
    echo "set yrange [$lo:$hi]"
    echo "set ylabel $(gp_string "$ylabel") noenhanced"
    echo "set grid ytics lc rgb '#dddddd'"
    echo "set xtics ($xtics) scale 0 noenhanced"
    echo "set key at screen 0.5, screen 0.905 center top horizontal maxrows 1 samplen 2 width -2 noenhanced"
    echo "set tmargin 5"
    echo "set bmargin 7"
    footer
    if [ "$kind" = rate ]; then
      echo "set format y '%.0s%c'"
      echo "fmt(x) = x >= 1e6 ? sprintf('%.2fM', x / 1e6) : x >= 1e4 ? sprintf('%.0fk', x / 1e3) : x >= 1e3 ? sprintf('%.1fk', x / 1e3) : sprintf('%.0f', x)"
    else
      echo "set format y '%g'"
      echo "fmt(x) = x >= 10 ? sprintf('%.0f', x) : x >= 1 ? sprintf('%.1f', x) : sprintf('%.2f', x)"
    fi
    echo "plot $plot$labels"
  } >"$TMP/$name.gp"
  plot "$name"
}
# plot NAME: runs $TMP/NAME.gp, then takes the trailing blanks and the empty last line gnuplot
# leaves in its SVG off (git diff --check would flag them in the committed charts).
plot() {
  gnuplot "$TMP/$1.gp"
  sed -i -e 's/[[:space:]]*$//' -e '${/^$/d}' "$OUT/$1.svg"
  echo "bench_charts: $OUT/$1.svg"
}
# title TEXT: the chart's title, above the key (gnuplot's own title would go below a key that is
# outside the plot).
title() { echo "set label 100 $(gp_string "$1") at screen 0.5, screen 0.955 center font ',13' noenhanced"; }
footer() {
  echo "set label 101 $(gp_string "$FOOTER1") at screen 0.01, screen 0.075 font ',9' noenhanced"
  echo "set label 102 $(gp_string "$FOOTER2") at screen 0.01, screen 0.045 font ',9' noenhanced"
  echo "set label 103 $(gp_string "$FOOTER3") at screen 0.01, screen 0.015 font ',9' noenhanced"
}
# present FILE: whether a data file has a value in some line past the first column.
present() { awk '{ for (i = 2; i <= NF; i++) if ($i != "?") f = 1 } END { exit !f }' "$1"; }
# column_present FILE COLUMN
column_present() { awk -v c="$2" '$c != "?" { f = 1 } END { exit !f }' "$1"; }

# ---- Durable writes: writes/s and p99 by shape, ours and Redis always, the baseline ----------
SHAPES="1x1 1x64 16x16"
xtics='' k=0
for size in 100 1024; do
  for shape in $SHAPES; do
    sz=$([ "$size" = 1024 ] && echo '1 KiB' || echo "$size B")
    xtics+="${xtics:+, }\"${shape}\\n${sz}\" $k"
    k=$((k + 1))
  done
done
for key in writes_per_s p99_ms; do
  : >"$TMP/durable-$key.dat"
  for size in 100 1024; do
    for shape in $SHAPES; do
      echo "$shape/$size $(value durable "redis-always/$shape/$size" "$key")" \
           "$(value durable "ours-always/$shape/$size" "$key")" \
           "$(value durable "base-always/$shape/$size" "$key")" >>"$TMP/durable-$key.dat"
    done
  done
done
if present "$TMP/durable-writes_per_s.dat"; then
  series=("2|$REDIS|Redis, appendfsync always" "3|$OURS|ours ($COMMIT), SYNC=always")
  column_present "$TMP/durable-writes_per_s.dat" 4 && series+=("4|$BASE|${BASELINE:-baseline}, SYNC=always")
  bars durable-writes "Durable writes, ours and Redis Streams (XADD): writes/s by connections x writes in flight, entry size" \
       "confirmed writes/s (log scale)" rate "$xtics" "$TMP/durable-writes_per_s.dat" "${series[@]}"
  bars durable-p99 "Durable writes: p99 latency, write to confirmation, of the same cells" \
       "p99 latency, ms (log scale)" ms "$xtics" "$TMP/durable-p99_ms.dat" "${series[@]}"
else
  echo "bench_charts: no durable cells in $RESULTS: durable-writes.svg and durable-p99.svg not drawn" >&2
fi

# ---- Confirming at the journal: the confirm section, no fs sync between cells -----------------
cxtics='' k=0
for fs_state in quiet after-delete; do
  for size in 100 1024; do
    for shape in $SHAPES; do
      sz=$([ "$size" = 1024 ] && echo '1 KiB' || echo "$size B")
      cxtics+="${cxtics:+, }\"${shape}\\n${sz}\\n${fs_state}\" $k"
      k=$((k + 1))
    done
  done
done
for key in writes_per_s p99_ms; do
  : >"$TMP/confirm-$key.dat"
  for fs_state in quiet after-delete; do
    for size in 100 1024; do
      for shape in $SHAPES; do
        c=$shape/$size/$fs_state
        echo "$c $(value confirm "redis-always/$c" "$key") $(value confirm "ours-always/$c" "$key")" \
             "$(value confirm "base-always/$c" "$key")" >>"$TMP/confirm-$key.dat"
      done
    done
  done
done
if present "$TMP/confirm-writes_per_s.dat"; then
  series=("2|$REDIS|Redis, appendfsync always" "3|$OURS|ours ($COMMIT), SYNC=always")
  column_present "$TMP/confirm-writes_per_s.dat" 4 && series+=("4|$BASE|${BASELINE:-baseline}, SYNC=always")
  bars confirm-writes "Durable writes without a file-system sync between cells, quiet and after a large delete: writes/s" \
       "confirmed writes/s (log scale)" rate "$cxtics" "$TMP/confirm-writes_per_s.dat" "${series[@]}"
  bars confirm-p99 "Durable writes without a file-system sync between cells: p99 latency, write to confirmation" \
       "p99 latency, ms (log scale)" ms "$cxtics" "$TMP/confirm-p99_ms.dat" "${series[@]}"
else
  echo "bench_charts: no confirm cells in $RESULTS: confirm-writes.svg and confirm-p99.svg not drawn" >&2
fi

# ---- Replay: a read of the whole log, ours and Redis ------------------------------------------
: >"$TMP/replay.dat"
replay_xtics='' k=0
batch=$(value reads redis-xrange batch)
for spec in "warm|$OURS|ours: read by the process\\nthat wrote it" \
            "restarted|$OURS_LIGHT|ours: after a restart\\n(every entry from its file)" \
            "restarted-again|$OURS_LIGHT|ours: restarted,\\nread again" \
            "redis-xrange|$REDIS|Redis: XRANGE,\\n$batch entries a request" \
            "redis-xrange-again|$REDIS_LIGHT|Redis: XRANGE again"; do
  IFS='|' read -r label colour text <<<"$spec"
  v=$(value reads "$label" entries_per_s)
  [ "$v" != '?' ] || continue
  echo "$k $v 0x${colour#\#}" >>"$TMP/replay.dat"
  replay_xtics+="${replay_xtics:+, }\"$text\" $k"
  k=$((k + 1))
done
if [ -s "$TMP/replay.dat" ]; then
  entries=$(value reads warm entries)
  hi=$(awk '$2 > m { m = $2 } END { print m * 1.15 / 1000 }' "$TMP/replay.dat")
  {
    echo "set terminal svg size 1000,540 font 'Helvetica,12' background rgb 'white'"
    echo "set output '$OUT/replay.svg'"
    echo "set encoding utf8"
    title "Replay: entries/s of a read of the whole log, $entries entries of $(setting BENCH_SIZE) bytes, one client on loopback"
    echo "set tmargin 4"
    echo "set style fill solid 0.9 border rgb '#404040'"
    echo "set boxwidth 0.6"
    echo "set yrange [0:$hi]"
    echo "set xrange [-0.6:$((k - 1)).6]"
    echo "set ylabel 'thousand entries/s' noenhanced"
    echo "set grid ytics lc rgb '#dddddd'"
    echo "set xtics ($replay_xtics) scale 0 noenhanced"
    echo "set bmargin 8"
    echo "unset key"
    footer
    echo "fmt(x) = sprintf('%.0fk', x / 1e3)"
    echo "plot '$TMP/replay.dat' using 1:(\$2 / 1000):3 with boxes lc rgb variable title 'entries/s', '' using 1:(\$2 / 1000):(fmt(\$2)) with labels offset 0,0.7 font ',10'"
  } >"$TMP/replay.gp"
  plot replay
else
  echo "bench_charts: no reads cells in $RESULTS: replay.svg not drawn" >&2
fi

# ---- Fairness: the writer probe's p99 under other clients, ours and the baseline --------------
idle=$(setting IDLE_CONNS)
: >"$TMP/fairness.dat"
fair_xtics='' k=0
for spec in "alone|alone" "with-1-catching-up|1 reader\\ncatching up" "with-8-catching-up|8 readers\\ncatching up" \
            "100-stalled-join|100 readers that\\nnever read join" "with-$idle-idle|$idle idle\\nconnections"; do
  IFS='|' read -r label text <<<"$spec"
  echo "$label $(value fairness "new:$label" p99_ms) $(value fairness "baseline:$label" p99_ms)" >>"$TMP/fairness.dat"
  fair_xtics+="${fair_xtics:+, }\"$text\" $k"
  k=$((k + 1))
done
if present "$TMP/fairness.dat"; then
  series=("2|$OURS|ours ($COMMIT)")
  column_present "$TMP/fairness.dat" 3 && series+=("3|$BASE|${BASELINE:-baseline}")
  bars fairness-p99 "Fairness: p99 latency of one writer (one write in flight, SYNC=none) while other clients read" \
       "the writer's p99 latency, ms (log scale)" ms "$fair_xtics" "$TMP/fairness.dat" "${series[@]}"
else
  echo "bench_charts: no fairness cells in $RESULTS: fairness-p99.svg not drawn" >&2
fi

if [ "$(cd "$(dirname "$RESULTS")" && pwd)/$(basename "$RESULTS")" != "$(cd "$OUT" && pwd)/results.txt" ]; then
  cp "$RESULTS" "$OUT/results.txt"
  echo "bench_charts: $OUT/results.txt"
fi
