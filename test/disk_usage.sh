#!/usr/bin/env bash
# Bytes on disk per entry, on the file systems small devices use (doc/devices.md, "Disk space
# per entry"). Run as root: bash test/disk_usage.sh (or make disk-usage). Not part of make test.
#
# Each case makes a fresh image file (IMAGE_MB, in a temporary directory), starts the real
# server on it over loopback (SYNC=always, the default journal, as DISK_UID), stops it cleanly,
# and counts the file system's used blocks (B); starts it again, writes ENTRIES unique entries
# of SIZE canonical bytes with test/write_bench (one connection, 64 in flight), stops it and
# counts again (C); then removes the journal and counts once more (D). Per entry:
# (D - (B - journal)) / ENTRIES, so the journal, written whole before the first entry, is left
# out and reported on its own (C - D is what it took after the run: more than its size on
# btrfs, which copies on write). ext4 and btrfs are loop-mounted; f2fs, which this kernel may
# not mount, is built offline: the store is written on a scratch directory by the same server,
# then copied without its journal into a fresh image with sload.f2fs, once empty (B) and once
# full (C), and fsck.f2fs reads the valid blocks. The case ext4-4k-offline does the same with
# mke2fs -d, as a cross-check of the mounted figure. The cases in DISK_FULL are then filled
# until writes fail, and the store is opened again.
#
#   DISK_ENTRIES   entries per case (default 10000)
#   DISK_SIZES     canonical entry sizes in bytes (default "100 1024")
#   DISK_CASES     which cases to run (default: all in ALL_CASES but ext4-4k-offline)
#   DISK_FULL      case:size pairs also filled until writes fail, to count the entries that
#                  really fit and see what a full disk leaves (default "ext4-1k:100
#                  ext4-1k-inline-i1024:100 ext4-1k-inline-i1024:1024"; empty: none; btrfs
#                  near full is slow: btrfs-msingle:100 takes about 5 minutes)
#   IMAGE_MB       image size in MiB (default 256)
#   SERVER         server binary (default ./tcp-log-server, built with make)
#   DISK_UID       uid and gid the server runs as (default 65534, nobody)
#
# After each case the store is checked for space our code should not use: files left in
# BLOBS/tmp, names other than the layout's, an index that is not 65 bytes per entry, a blob
# count other than the entries written.
set -euo pipefail

cd "$(dirname "$0")/.."
ENTRIES=${DISK_ENTRIES:-10000}
SIZES=${DISK_SIZES:-100 1024}
IMAGE_MB=${IMAGE_MB:-256}
RUN_AS=${DISK_UID:-65534}  # the server runs as this uid and gid, as a service would (not root)
SERVER=${SERVER:-./tcp-log-server}
CXX=${CXX:-g++}
ALL_CASES="ext4-4k ext4-1k ext4-1k-i2048 ext4-inline ext4-inline-i1024 ext4-inline-i2048 ext4-1k-inline-i1024
           btrfs btrfs-msingle f2fs ext4-4k-offline"
CASES=${DISK_CASES-${ALL_CASES% ext4-4k-offline}}  # the offline ext4 cross-check only when named
FULL=${DISK_FULL-ext4-1k:100 ext4-1k-inline-i1024:100 ext4-1k-inline-i1024:1024}

if [ "$(id -u)" != 0 ]; then echo "disk_usage: run as root (it loop-mounts images)" >&2; exit 1; fi
for tool in mkfs.ext4 mkfs.btrfs mkfs.f2fs sload.f2fs fsck.f2fs dumpe2fs losetup setpriv; do
  command -v "$tool" >/dev/null || { echo "disk_usage: $tool is missing" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tcp-log-disk.XXXXXX")
chmod 755 "$WORK"
MNT=$WORK/mnt
LOOP=
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT" || true; fi
  if [ -n "$LOOP" ]; then losetup -d "$LOOP" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$MNT"

if [ "$SERVER" = ./tcp-log-server ]; then make --no-print-directory tcp-log-server >&2; fi
SERVER=$(cd "$(dirname "$SERVER")" && pwd)/$(basename "$SERVER")
BENCH=$WORK/write_bench
"$CXX" -O2 -std=c++17 -Wall -Wextra -o "$BENCH" test/write_bench.cpp

# start_server DIR [any]: a server, run as RUN_AS (not root: ext4 keeps its reserved blocks from it), with BLOBS and LEVELDB under DIR, on a free loopback port; sets PORT.
start_server() {
  local dir=$1
  chown "$RUN_AS:$RUN_AS" "$dir"
  (cd "$dir" && exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --clear-groups \
     env PORT=0 HOST=127.0.0.1 SYNC=always LOG_LEVEL=info ${JOURNAL:+JOURNAL_BYTES=$JOURNAL} \
     BLOBS="$dir/blobs" LEVELDB="$dir/leveldb" "$SERVER") >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  PORT=
  for _ in $(seq 1 300); do
    PORT=$(grep '"msg":"listening"' "$WORK/server.log" 2>/dev/null | tail -n 1 |
           sed -n 's/.*"port":\([0-9][0-9]*\).*/\1/p') || true
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ "${2:-}" = any ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" || true
    SERVER_PID=
    return 1
  fi
  echo "disk_usage: server did not start; its log:" >&2
  cat "$WORK/server.log" >&2
  exit 1
}
# stop_server [any]: SIGTERM (a clean stop: last checkpoint, journal emptied), at most 60 s. Its
# exit status must be 0 unless "any" is given; it is left in STOP_STATUS.
stop_server() {
  kill -TERM "$SERVER_PID"
  for _ in $(seq 1 600); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "disk_usage: server did not stop within 60 s" >&2; exit 1
  fi
  STOP_STATUS=0
  wait "$SERVER_PID" || STOP_STATUS=$?
  SERVER_PID=
  if [ "$STOP_STATUS" -ne 0 ] && [ "${1:-}" != any ]; then
    echo "disk_usage: server exited with status $STOP_STATUS; its log:" >&2
    cat "$WORK/server.log" >&2; exit 1
  fi
  mv "$WORK/server.log" "$WORK/last-server.log"; : >"$WORK/server.log"
}

# fill DIR SIZE: an empty store in DIR, started and stopped (state B: the hook runs), then
# ENTRIES entries of SIZE bytes (state C: the hook runs again).
fill() {
  local dir=$1 size=$2 hook=$3 line
  start_server "$dir"; stop_server; "$hook" B
  start_server "$dir"
  line=$(timeout 600 "$BENCH" --port "$PORT" --mode write --conns 1 --window 64 --size "$size" \
         --writes "$ENTRIES") || { echo "disk_usage: writes failed: $line" >&2; exit 1; }
  echo "  $line" >&2
  stop_server; "$hook" C
}

# check_store DIR: what the store holds beyond its layout. Prints findings; "ok" if none.
check_store() {
  local dir=$1 findings=() n
  n=$(find "$dir/blobs/tmp" -type f | wc -l)
  [ "$n" -eq 0 ] || findings+=("$n file(s) left in BLOBS/tmp")
  n=$(find "$dir/blobs" -mindepth 2 -maxdepth 2 -type f -path "$dir/blobs/[0-9a-f][0-9a-f]/*" | wc -l)
  [ "$n" -eq "$ENTRIES" ] || findings+=("$n blobs for $ENTRIES entries")
  n=$(stat -c %s "$dir/leveldb/index")
  [ "$n" -eq $((ENTRIES * 65)) ] || findings+=("index of $n bytes for $ENTRIES entries")
  local odd
  odd=$(find "$dir/blobs" "$dir/leveldb" -mindepth 1 -regextype posix-extended \
          ! -path "$dir/blobs/tmp" ! -regex "$dir/blobs/[0-9a-f]{2}(/[0-9a-f]{62})?" \
          ! -name LOCK ! -path "$dir/leveldb/index" ! -path "$dir/leveldb/journal" -printf '%P\n' |
        head -n 5 | tr '\n' ' ')
  [ -z "$odd" ] || findings+=("unexpected: $odd")
  if [ ${#findings[@]} -eq 0 ]; then echo ok; else (IFS=';'; echo "${findings[*]}"); fi
}

# statfs of the mount: used bytes, available bytes (for a non-root user), used inodes, free inodes.
fs_used()   { sync -f "$MNT"; stat -f -c '%S %b %f' "$MNT" | awk '{ printf "%d", $1 * ($2 - $3) }'; }
fs_avail()  { stat -f -c '%S %a' "$MNT" | awk '{ printf "%d", $1 * $2 }'; }
fs_iused()  { stat -f -c '%c %d' "$MNT" | awk '{ printf "%d", $1 - $2 }'; }
fs_ifree()  { stat -f -c '%d' "$MNT"; }

ROWS=()
MOUNTED_JOURNAL=
JOURNAL=
# row NAME SIZE ADDED_BYTES INODES_PER_ENTRY INODE_BYTES JOURNAL_BYTES JOURNAL_AFTER EMPTY_BYTES
#     AVAIL_BYTES IFREE CHECK
# ADDED_BYTES: used after the entries less used before, the journal left out of both;
# INODE_BYTES: the size of an ext4 inode, whose table mke2fs allocates in advance (0 elsewhere:
# btrfs and f2fs allocate inodes as they go, inside ADDED_BYTES); JOURNAL_AFTER: what the journal
# took once the entries were written (btrfs copies on write); AVAIL_BYTES: free for a non-root
# user once the empty store (journal included) is there; IFREE: free inodes then ("-" where
# inodes are not fixed). Entries that fit: the smaller of the two limits.
row() {
  local name=$1 size=$2 ipe=$4 isz=$5 journal=$6 journal_after=$7 empty=$8 avail=$9 ifree=${10} check=${11}
  local per fit
  per=$(awk -v a="$3" -v n="$ENTRIES" 'BEGIN { printf "%.1f", a / n }')
  fit=$(awk -v a="$avail" -v p="$per" -v f="$ifree" -v i="$ipe" 'BEGIN {
          n = (p > 0) ? a / p : 0
          if (f != "-" && i > 0 && f / i < n) { n = f / i; lim = " (inodes)" }
          printf "%d%s", n, lim }')
  ROWS+=("$(awk -v n="$name" -v s="$size" -v p="$per" -v i="$ipe" -v z="$isz" -v j="$journal" \
              -v ja="$journal_after" -v e="$empty" -v a="$avail" -v f="$fit" -v c="$check" 'BEGIN {
          inode = (z > 0) ? sprintf("%.0f (%.1fx)", p + i * z, (p + i * z) / s) : "-"
          printf "| %s | %d | %.0f | %.1fx | %s | %.1f / %.1f MiB | %.0f KiB | %.1f MB | %s | %s |",
                 n, s, p, p / s, inode, j / 1048576, ja / 1048576, e / 1024, a / 1e6, f, c }')")
  echo "  => ${ROWS[-1]}" >&2
}

# ---- mounted cases --------------------------------------------------------------------------
mount_image() {  # mount_image MKFS_COMMAND...: a fresh image, formatted and mounted on MNT
  local img=$WORK/image
  rm -f "$img"; truncate -s "${IMAGE_MB}M" "$img"
  "$@" "$img" >"$WORK/mkfs.log" 2>&1 || { cat "$WORK/mkfs.log" >&2; exit 1; }
  LOOP=$(losetup -f --show "$img")
  mount "$LOOP" "$MNT"
}
unmount_image() {
  umount "$MNT"; losetup -d "$LOOP"; LOOP=
  rm -f "$WORK/image"
}
inode_bytes() {  # the inode size of the ext4 on LOOP, 0 for other file systems
  case "$(findmnt -n -o FSTYPE "$MNT")" in
    ext4) dumpe2fs -h "$LOOP" 2>/dev/null | sed -n 's/^Inode size:[[:space:]]*//p' ;;
    *) echo 0 ;;
  esac
}

mounted_case() {  # mounted_case NAME SIZE MKFS_COMMAND...
  local name=$1 size=$2; shift 2
  mount_image "$@"
  local store=$MNT/store
  mkdir -p "$store"
  used0=$(fs_used)
  mounted_hook() {
    if [ "$1" = B ]; then
      usedB=$(fs_used); iusedB=$(fs_iused); availB=$(fs_avail); ifreeB=$(fs_ifree)
      journal=$(stat -c '%b %B' "$store/leveldb/journal" | awk '{ print $1 * $2 }')
      MOUNTED_JOURNAL=$(stat -c %s "$store/leveldb/journal")
    else
      usedC=$(fs_used); iusedC=$(fs_iused)
      blob_blocks=$(find "$store/blobs" -type f -printf '%b\n' | awk '{ s += $1 } END { print s * 512 }')
    fi
  }
  fill "$store" "$size" mounted_hook
  local check ipe ifree usedD
  check=$(check_store "$store")
  # What the journal really holds now: on btrfs an overwrite is written elsewhere and the old
  # extent stays allocated while any of it is still referenced.
  rm "$store/leveldb/journal"
  usedD=$(fs_used)
  ipe=$(awk -v a="$iusedC" -v b="$iusedB" -v n="$ENTRIES" 'BEGIN { printf "%.2f", (a - b) / n }')
  ifree=$ifreeB
  case "$name" in btrfs*) ifree=-;; esac  # btrfs makes inodes as it needs them
  echo "  $name $size: used before store $used0, empty store $usedB, after $usedC," \
       "after without the journal $usedD; blob st_blocks per entry $((blob_blocks / ENTRIES));" \
       "inodes per entry $ipe" >&2
  if [[ $name == btrfs* ]]; then btrfs filesystem df "$MNT" | sed 's/^/  /' >&2; fi
  row "$name" "$size" "$((usedD - (usedB - journal)))" "$ipe" "$(inode_bytes)" "$journal" \
      "$((usedC - usedD))" "$((usedB - used0 - journal))" "$availB" "$ifree" "$check"
  unmount_image
}

# ---- offline cases: the store on a scratch directory, copied into a fresh image -------------
f2fs_image() {  # f2fs_image DIR: valid blocks and free bytes of a fresh image holding DIR
  local img=$WORK/image out
  rm -f "$img"; truncate -s "${IMAGE_MB}M" "$img"
  mkfs.f2fs -q "$img" >/dev/null
  sload.f2fs -f "$1" "$img" >/dev/null 2>&1
  out=$(fsck.f2fs "$img" 2>&1)
  rm -f "$img"
  local blocks free_mb
  blocks=$(sed -n 's/.*valid_block_count matching with CP.*\[0x\([0-9a-f]*\)\].*/\1/p' <<<"$out")
  free_mb=$(sed -n 's/.*Free space: \([0-9]*\) MB.*/\1/p' <<<"$out")
  inodes=$(sed -n 's/.*valid_inode_count matched with CP.*\[0x\([0-9a-f]*\)\].*/\1/p' <<<"$out")
  echo "$((16#$blocks * 4096)) $((free_mb * 1048576)) $((16#$inodes))"
}
ext4_image() {  # ext4_image DIR MKFS_OPTIONS...: used bytes, free bytes, used inodes of mke2fs -d
  local dir=$1 img=$WORK/image out; shift
  rm -f "$img"; truncate -s "${IMAGE_MB}M" "$img"
  mkfs.ext4 -q -F "$@" -d "$dir" "$img" >/dev/null
  out=$(dumpe2fs -h "$img" 2>/dev/null)
  rm -f "$img"
  awk -F: '/^Block count/ { b = $2 } /^Free blocks/ { f = $2 } /^Block size/ { s = $2 }
           /^Reserved block count/ { r = $2 } /^Inode count/ { i = $2 } /^Free inodes/ { fi = $2 }
           END { printf "%d %d %d\n", (b - f) * s, (f - r) * s, i - fi }' <<<"$out"
}

offline_case() {  # offline_case NAME SIZE
  local name=$1 size=$2 store=$WORK/scratch-store snapB=$WORK/snapshot
  rm -rf "$store" "$snapB"; mkdir -p "$store"
  offline_hook() {
    if [ "$1" = B ]; then
      mkdir -p "$snapB"; cp -a "$store" "$snapB/store"
      journal=$(stat -c %s "$store/leveldb/journal")
      # Left out of the images: mke2fs -d makes its zeros a hole, sload.f2fs writes them. On a
      # mounted file system the server writes it whole, so it takes its size.
      rm "$snapB/store/leveldb/journal"
    fi
  }
  # The scratch directory's file system is not the image's: the journal is given the size the
  # server chose on the last mounted image, where it sizes it from its file system.
  [ -z "$MOUNTED_JOURNAL" ] || echo "  JOURNAL_BYTES=$MOUNTED_JOURNAL, as on the last mounted image" >&2
  JOURNAL=$MOUNTED_JOURNAL fill "$store" "$size" offline_hook
  local check usedB availB iB usedC iC ipe empty ifree
  check=$(check_store "$store")
  rm "$store/leveldb/journal"
  local empty_root=$WORK/empty-root; rm -rf "$empty_root"; mkdir -p "$empty_root"
  case "$name" in
    f2fs)
      read -r used0 _ _ < <(f2fs_image "$empty_root")
      read -r usedB availB iB < <(f2fs_image "$snapB")
      mkdir -p "$WORK/full"; mv "$store" "$WORK/full/store"
      read -r usedC _ iC < <(f2fs_image "$WORK/full")
      ifree=-  # f2fs makes inodes (node blocks) as it needs them
      ;;
    ext4-4k-offline)
      read -r used0 _ _ < <(ext4_image "$empty_root" -b 4096)
      read -r usedB availB iB < <(ext4_image "$snapB" -b 4096)
      mkdir -p "$WORK/full"; mv "$store" "$WORK/full/store"
      read -r usedC _ iC < <(ext4_image "$WORK/full" -b 4096)
      ifree=$(( (IMAGE_MB * 1048576 / 4096) - iB ))  # mke2fs's small-fs inode ratio: 4096 bytes
      ;;
  esac
  rm -rf "$WORK/full" "$snapB" "$empty_root"
  ipe=$(awk -v a="$iC" -v b="$iB" -v n="$ENTRIES" 'BEGIN { printf "%.2f", (a - b) / n }')
  echo "  $name $size: used empty image $used0, empty store $usedB, after $usedC; inodes per entry $ipe" >&2
  local isz=0
  [ "$name" = f2fs ] || isz=256  # mke2fs's default inode size
  row "$name" "$size" "$((usedC - usedB))" "$ipe" "$isz" "$journal" "$journal" "$((usedB - used0))" \
      "$((availB - journal))" "$ifree" "$check"
}

# ---- filled to the end: how many entries really fit, and what a full disk leaves behind ------
FILLED=()
full_case() {  # full_case NAME SIZE MKFS_COMMAND...
  local name=$1 size=$2; shift 2
  mount_image "$@"
  local store=$MNT/store total=0 line confirmed status
  mkdir -p "$store"
  start_server "$store"
  for _ in $(seq 1 400); do  # at most 400 x 5,000 entries
    line=$(timeout 600 "$BENCH" --port "$PORT" --mode write --conns 1 --window 64 --size "$size" \
           --writes 5000) && status=0 || status=$?
    confirmed=$(tr ' ' '\n' <<<"$line" | sed -n 's/^confirmed=//p')
    total=$((total + ${confirmed:-0}))
    [ "$status" -eq 0 ] || break
  done
  echo "  last round: $line" >&2
  local why
  why=$(grep -o '"error":"[^"]*"' "$WORK/server.log" | head -n 1 | sed -E 's#"error":"##; s#"$##; s#/[^ :]+##g' || true)
  echo "  first error: $why" >&2
  local avail ifree
  avail=$(fs_avail); ifree=$(fs_ifree)
  case "$name" in btrfs*) ifree=-;; esac  # btrfs makes inodes as it needs them
  stop_server any
  local stop1=$STOP_STATUS head tmp restart
  [ "$stop1" -eq 0 ] || echo "  stop status $stop1; its log ends: $(tail -n 3 "$WORK/last-server.log")" >&2
  tmp=$(find "$store/blobs/tmp" -type f | wc -l)
  head=$(( $(stat -c %s "$store/leveldb/index") / 65 ))
  # The store must open again on the full disk, with every confirmed entry.
  : >"$WORK/server.log"
  if start_server "$store" any; then
    restart=$(grep '"msg":"listening"' "$WORK/server.log" | sed -n 's/.*"head":\([0-9]*\).*/\1/p')
    stop_server any
  else
    restart="does not start: $(grep -o '"msg":"[^"]*"' "$WORK/server.log" | tail -n 1 | cut -d'"' -f4)"
    restart+=" ($(grep -o '"error":"[^"]*"' "$WORK/server.log" | tail -n 1 | cut -d'"' -f4 | sed -E 's#/[^ :]+##g'))"
    echo "  restart failed; its log: $(cat "$WORK/server.log")" >&2
  fi
  local blobs
  blobs=$(find "$store/blobs" -mindepth 2 -maxdepth 2 -type f -path "$store/blobs/[0-9a-f][0-9a-f]/*" | wc -l)
  echo "  $name $size: $total confirmed, index head $head, $blobs blobs, $tmp in BLOBS/tmp," \
       "first stop status $stop1, head after restart ${restart:-?}, then free $avail bytes, $ifree inodes" >&2
  FILLED+=("$(awk -v n="$name" -v s="$size" -v t="$total" -v h="$head" -v b="$blobs" -v x="$tmp" \
                -v a="$avail" -v i="$ifree" -v r="${restart:-?}" -v w="$why" 'BEGIN {
      printf "| %s | %d | %d | %s | %.1f MB, %s inodes | %d blobs, %d in tmp | %s |",
             n, s, t, r, a / 1e6, i, b, x, w }')")
  echo "  => ${FILLED[-1]}" >&2
  unmount_image
}

# ---- the cases --------------------------------------------------------------------------------
mkfs_of() {  # mkfs_of NAME: the command that formats a mounted case's image
  case "$1" in
    ext4-4k)           echo mkfs.ext4 -q -F -b 4096 ;;
    ext4-1k)           echo mkfs.ext4 -q -F -b 1024 ;;
    ext4-inline)       echo mkfs.ext4 -q -F -b 4096 -O inline_data ;;
    ext4-inline-i1024) echo mkfs.ext4 -q -F -b 4096 -O inline_data -I 1024 ;;
    ext4-inline-i2048) echo mkfs.ext4 -q -F -b 4096 -O inline_data -I 2048 -i 8192 ;;
    ext4-1k-i2048)     echo mkfs.ext4 -q -F -b 1024 -i 2048 ;;
    ext4-1k-inline-i1024) echo mkfs.ext4 -q -F -b 1024 -O inline_data -i 1024 ;;
    btrfs)             echo mkfs.btrfs -q -f ;;
    btrfs-msingle)     echo mkfs.btrfs -q -f -m single ;;
    *) return 1 ;;
  esac
}
run_case() {  # run_case NAME SIZE
  case "$1" in
    f2fs|ext4-4k-offline) offline_case "$1" "$2" ;;
    *) local cmd
       cmd=$(mkfs_of "$1") || { echo "disk_usage: unknown case $1 (cases: $ALL_CASES)" >&2; exit 2; }
       # shellcheck disable=SC2086
       mounted_case "$1" "$2" $cmd ;;
  esac
}

echo "disk_usage: $ENTRIES entries per case, ${IMAGE_MB} MiB images, commit" \
     "$(git rev-parse --short HEAD 2>/dev/null || echo '?'), kernel $(uname -r), $(date -u +%F)" >&2
for c in $CASES; do
  for s in $SIZES; do
    echo "== $c, $s-byte entries" >&2
    run_case "$c" "$s"
  done
done

for f in $FULL; do
  echo "== $f: filled until writes fail" >&2
  cmd=$(mkfs_of "${f%:*}") || { echo "disk_usage: unknown case ${f%:*}" >&2; exit 2; }
  # shellcheck disable=SC2086
  full_case "${f%:*}" "${f#*:}" $cmd
done

echo
echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -srm), $(date -u '+%F %H:%M UTC');" \
     "$ENTRIES entries per row, ${IMAGE_MB} MiB images."
echo
echo "| file system | entry bytes | disk bytes per entry | ratio | with its ext4 inode | journal: empty store / after | empty store without journal | free after empty store | entries that fit | store check |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
if [ ${#FILLED[@]} -gt 0 ]; then
  echo
  echo "Filled until writes fail (default journal), on ${IMAGE_MB} MiB images:"
  echo
  echo "| file system | entry bytes | entries confirmed | head after restart | left free | store | first error |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${FILLED[@]}"
fi
