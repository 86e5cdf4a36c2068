# Prepended by tests/common/vm.rs to every guest test script. The script runs
# as root under bash in the guest's chroot (the host root, read-only), with
# writable tmpfs on /run, /mnt and /root, RAM overlays on /tmp and /var/tmp,
# and $VM_OUT (/run/out) shared back to the host.
#
#   check NAME CMD...        run CMD; print "CHECK ok NAME" if it exits 0,
#                            else "CHECK FAIL NAME (rc=N)"
#   check_fails NAME CMD...  the same, but CMD is expected to exit non-zero
#   to FILE CMD...           CMD with its stdout in FILE (so that `check to
#                            FILE CMD` keeps its own line on the console)
#   to2 OUT ERR CMD...       the same with stderr in ERR
#
# NAME is one word; the harness matches these lines exactly. With $VM_CASE
# set (cases sharing one boot), NAME is printed as CASE/NAME.
#
# CMD's own output goes to the console. If any check failed, the script exits
# non-zero even when its last command succeeded.
set -u
cd "$(dirname "${BASH_SOURCE[0]:-.}")" || exit 125
VM_CHECK_FAILS=0

# Sets VM_LAP to the seconds since the previous call (no fork).
VM_T0=${EPOCHREALTIME/[.,]/}
VM_LAP=0
vm_lap() {
  local now=${EPOCHREALTIME/[.,]/} d
  d=$((now - VM_T0))
  VM_T0=$now
  printf -v VM_LAP '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000))
}

check() {
  local name=${VM_CASE:+$VM_CASE/}$1 rc=0
  shift
  vm_lap
  "$@" || rc=$?
  vm_lap
  echo "check: $name took ${VM_LAP}s"
  if ((rc == 0)); then
    echo "CHECK ok $name"
  else
    echo "CHECK FAIL $name (rc=$rc)"
    VM_CHECK_FAILS=$((VM_CHECK_FAILS + 1))
  fi
  return "$rc"
}

check_fails() {
  local name=${VM_CASE:+$VM_CASE/}$1 rc=0
  shift
  vm_lap
  "$@" || rc=$?
  vm_lap
  echo "check: $name took ${VM_LAP}s"
  if ((rc != 0)); then
    echo "check: $name exited $rc, as expected"
    echo "CHECK ok $name"
    return 0
  fi
  echo "CHECK FAIL $name (unexpectedly succeeded)"
  VM_CHECK_FAILS=$((VM_CHECK_FAILS + 1))
  return 1
}

to() {
  local f=$1
  shift
  "$@" >"$f"
}

to2() {
  local o=$1 e=$2
  shift 2
  "$@" >"$o" 2>"$e"
}

vm_finish() {
  local rc=$?
  if ((rc == 0 && VM_CHECK_FAILS > 0)); then
    echo "vm: $VM_CHECK_FAILS check(s) failed"
    exit 1
  fi
  exit "$rc"
}
trap vm_finish EXIT
