# What the in-guest halves of the benchmark share: bench/bench.rs boots the
# test VM (tests/common/vm.rs) with tests/vm/prelude.sh, this file, then the
# cases (bench/guest.sh, bench/before_after.sh).
#
# Everything here runs in ONE boot, so every ratio compares runs on the same
# (emulated) machine, side by side. Timings are wall-clock from bash's
# $EPOCHREALTIME, taken with no fork and no I/O between the marks; each
# pipeline's output goes to a log file in /run (tmpfs). Samples go to
# $VM_OUT/samples.jsonl, one JSON object per line:
#   {"kind":"time","case":C,"step":S,"round":R,"seconds":X}
#   {"kind":"rss","case":C,"kib":K}
#   {"kind":"dd","case":C,"op":"seq_write"|"seq_read","bytes":N,"seconds":X}
#   {"kind":"info","key":K,"value":V}
# fio writes $VM_OUT/fio-<target>-<mode>.json.
#
# Environment (set by bench.rs): SECRETFS (the release binary), VM_OUT, and
# D_<role>=/dev/vdX for each disk (the cases name their roles).
#
# The bench fails (exit 1) when any command fails; it never asserts on time.

set -u
B=/run/bench
mkdir -p "$B/log" "$B/json" /mnt
OUT=$VM_OUT/samples.jsonl
: >"$OUT"
FAILS=0

# The passphrase every variant uses: random per run, in guest RAM only,
# without a newline (cryptsetup --key-file reads every byte; secretfs drops
# one trailing newline). Never printed.
PASS=$B/passphrase
(umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$PASS")

fail() {
  echo "BENCH-FAIL $*"
  FAILS=$((FAILS + 1))
}

# dev ROLE: sets DEV to the disk with that role (no fork).
dev() {
  local v="D_$1"
  DEV=${!v}
  [[ -b $DEV ]] || fail "disk for $1 ($DEV) is not a block device"
}

# Timestamps (microseconds) of the pipeline being measured.
T=()
mark() { T+=("${EPOCHREALTIME/[.,]/}"); }

# secs MICROSECONDS: sets SECS to the value in seconds.
secs() { printf -v SECS '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }

emit_time() { # CASE STEP ROUND MICROSECONDS
  secs "$4"
  printf '{"kind":"time","case":"%s","step":"%s","round":%d,"seconds":%s}\n' "$1" "$2" "$3" "$SECS" >>"$OUT"
}

# measure CASE ROUND "STEP..." FUNCTION ARGS...: runs FUNCTION, which calls
# `mark` before its first step, between steps and after its last; records
# each step and the total. Output goes to $B/log/CASE.log.
measure() {
  local case=$1 round=$2 fn=$4 rc=0 i
  local -a steps
  read -r -a steps <<<"$3"
  shift 4
  T=()
  "$fn" "$@" >>"$B/log/$case.log" 2>&1 || rc=$?
  if ((rc != 0)); then
    fail "$case round $round: $fn $* exited $rc"
    tail -n 5 "$B/log/$case.log"
    return "$rc"
  fi
  if ((${#T[@]} != ${#steps[@]} + 1)); then
    fail "$case: ${#T[@]} marks for ${#steps[@]} steps"
    return 1
  fi
  for i in "${!steps[@]}"; do
    emit_time "$case" "${steps[i]}" "$round" $((T[i + 1] - T[i]))
  done
  emit_time "$case" total "$round" $((T[-1] - T[0]))
  secs $((T[-1] - T[0]))
  echo "bench: $case #$round ${SECS}s"
}

info() { # KEY VALUE
  local v=${2//[\"\\]/}
  v=${v//[$'\t\r\n']/ }
  printf '{"kind":"info","key":"%s","value":"%s"}\n' "$1" "$v" >>"$OUT"
}

# --- the pipelines -----------------------------------------------------------

# One command, as one step.
one() { mark; "$@" >/dev/null || return; mark; }

# dd zeros over the whole device, as the recipe does: it ends with ENOSPC.
zero_fill() {
  local msg=
  dd if=/dev/zero of="$1" bs=1M 2>"$B/zero_fill.err" && return 0
  read -r -d '' msg <"$B/zero_fill.err" || true
  [[ $msg == *"No space left on device"* ]]
}

# The original recipe's device steps: DEV NAME DIR.
recipe_up() {
  mark; cryptsetup luksFormat --batch-mode --key-file "$PASS" "$1" || return
  mark; cryptsetup luksOpen --key-file "$PASS" "$1" "$2" || return
  mark; zero_fill "/dev/mapper/$2" || return
  mark; mke2fs -j "/dev/mapper/$2" || return
  mark; mount "/dev/mapper/$2" "$3" || return
  mark
}

# The hand-tuned floor: the same volume secretfs makes, by hand. DEV NAME DIR.
floor_up() {
  mark; cryptsetup luksFormat --batch-mode --key-file "$PASS" --type luks2 \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 \
    --key-size 512 --sector-size 4096 --label secretfs --subsystem secretfs "$1" || return
  mark; cryptsetup open --key-file "$PASS" --perf-no_read_workqueue \
    --perf-no_write_workqueue --persistent "$1" "$2" || return
  mark; mkfs.ext4 -q -O sparse_super2 -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "/dev/mapper/$2" || return
  mark; mount -t ext4 -o nodev,nosuid,noatime "/dev/mapper/$2" "$3" || return
  mark
}
floor_reopen() { # DEV NAME DIR (the workqueue flags come from the header)
  mark; cryptsetup open --key-file "$PASS" "$1" "$2" || return
  mark; mount -t ext4 -o nodev,nosuid,noatime "/dev/mapper/$2" "$3" || return
  mark
}
floor_down() { # NAME DIR
  mark; umount "$2" || return
  mark; cryptsetup close "$1" || return
  mark
}

# secretfs: DEV NAME DIR TAG (its --json answer goes to $B/json/TAG.json).
sfs_up() { sfs_with "$SECRETFS" "$@"; }
sfs_down() { # NAME
  mark; "$SECRETFS" down --name "$1" || return
  mark
}

# rss CASE CMD...: the peak RSS (GNU time %M, KiB) of CMD.
rss() {
  local case=$1 kib=
  shift
  if ! /usr/bin/time -f %M -o "$B/rss-$case" "$@" >>"$B/log/rss.log" 2>&1; then
    fail "rss $case: $* failed"
    tail -n 5 "$B/log/rss.log"
    return 1
  fi
  read -r kib <"$B/rss-$case"
  printf '{"kind":"rss","case":"%s","kib":%d}\n' "$case" "$kib" >>"$OUT"
  echo "bench: rss $case ${kib} KiB"
}

# seq_dd CASE DEVICE ROUND: 512 MiB sequential write, then read, with
# O_DIRECT; the rates are dd's own (its clock starts after its start-up).
seq_dd() {
  local case=$1 dev=$2 round=$3 op line s
  for op in seq_write seq_read; do
    if [[ $op == seq_write ]]; then
      dd if=/dev/zero of="$dev" bs=1M count=512 oflag=direct 2>"$B/dd.err"
    else
      dd if="$dev" of=/dev/null bs=1M count=512 iflag=direct 2>"$B/dd.err"
    fi || { fail "dd $op on $dev"; cat "$B/dd.err"; return 1; }
    line=$(tail -n 1 "$B/dd.err")
    s=${line#*copied, }
    s=${s%% s,*}
    [[ $s =~ ^[0-9.]+$ ]] || { fail "dd $op: cannot read its time from: $line"; return 1; }
    printf '{"kind":"dd","case":"%s","op":"%s","round":%d,"bytes":536870912,"seconds":%s}\n' "$case" "$op" "$round" "$s" >>"$OUT"
    echo "bench: dd $case $op #$round: $line"
  done
}

# rand_fio CASE DEVICE: 4 KiB random reads over the first 512 MiB, O_DIRECT,
# at queue depth 1 (psync) and 16 (libaio), 10 s each.
rand_fio() {
  local case=$1 dev=$2
  fio --name=randread --filename="$dev" --rw=randread --bs=4k --direct=1 --size=512M \
    --ioengine=psync --iodepth=1 --runtime=10 --time_based --norandommap --randrepeat=0 \
    --output-format=json --output="$VM_OUT/fio-$case-qd1.json" >>"$B/log/fio.log" 2>&1 \
    || { fail "fio qd1 on $dev"; tail -n 5 "$B/log/fio.log"; return 1; }
  fio --name=randread --filename="$dev" --rw=randread --bs=4k --direct=1 --size=512M \
    --ioengine=libaio --iodepth=16 --runtime=10 --time_based --norandommap --randrepeat=0 \
    --output-format=json --output="$VM_OUT/fio-$case-qd16.json" >>"$B/log/fio.log" 2>&1 \
    || { fail "fio qd16 on $dev"; tail -n 5 "$B/log/fio.log"; return 1; }
  echo "bench: fio $case done"
}

# The outputs to the host, and the verdict: exit 1 if anything failed.
bench_finish() {
  cp "$B"/json/*.json "$VM_OUT/" 2>/dev/null
  mkdir -p "$VM_OUT/log" && cp "$B"/log/* "$VM_OUT/log/" 2>/dev/null
  if ((FAILS > 0)); then
    echo "bench: $FAILS failure(s)"
    exit 1
  fi
  echo "bench: done"
}

# sfs_with BIN DEV NAME DIR TAG: `up` of secretfs binary BIN, timed as one
# step (its --json answer goes to $B/json/TAG.json).
sfs_with() {
  local bin=$1
  shift
  mark
  "$bin" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$1" --name "$2" \
    --mount "$3" --json >"$B/json/$4.json" || return
  mark
}
