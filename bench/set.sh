# The set boot (after bench/lib.sh): one volume over several disks.
#
# Time to mounted, first format and re-open, of secretfs over 1, 4 and 8
# members, and over one member of 8 TiB (sparse) against one of 1 GiB, and
# XFS on one member of 1 GiB (smallxfs; not on 8 TiB: mkfs.xfs zeroes its
# 2 GiB log, more than the guest's RAM-backed members can hold): the
# members are loop devices over sparse files in guest RAM (fresh for every
# round), so the disk count is not bounded by the VM's PCI slots and a
# round costs no host I/O. Rounds alternate the order of the cases.
#
# mke2fs options on one member of 8 TiB: the time of mkfs.ext4 and of the
# mount after it, and the bytes mkfs wrote, for variants of the options
# (the current and the new default on 1 GiB too), on fresh mappings.
#
# Throughput on the virtio disks D_one (1 member) and D_m0..D_m3 (4
# members): sequential and 4 KiB random, 1 and 4 parallel jobs, for
#   sfs1     secretfs on one disk
#   sfs4     secretfs over four (layout a: LUKS2 per member, dm-stripe on top)
#   raw4     layout b by hand: dm-stripe over the raw disks, one LUKS2 on top
# and the chunk size of layout a by hand (dmsetup over the members secretfs
# opened): 64 KiB, 512 KiB (secretfs's), 2 MiB.
#
# Environment: ROUNDS, MKFS_ROUNDS, FIO_ROUNDS, D_one, D_m0..D_m3.

info guest_kernel "$(uname -r)"
info secretfs_version "$("$SECRETFS" --version)"
info nproc "$(nproc)"

"$SECRETFS" --version >/dev/null 2>&1 || fail "warm-up"

# loops N SIZE: N fresh loop devices over sparse files; sets LOOPS.
loops() {
  local i f
  LOOPS=()
  for ((i = 0; i < $1; i++)); do
    f=$(mktemp "$B/member.XXXXXX")
    truncate -s "$2" "$f"
    LOOPS+=("$(losetup -f --show "$f")")
  done
}
drop_loops() {
  local l f
  for l in "${LOOPS[@]}"; do
    f=$(losetup -n -O BACK-FILE "$l")
    losetup -d "$l"
    rm -f "$f"
  done
}

# up_set NAME DIR TAG FS DEV...: `up` over the devices, one timed step.
up_set() {
  local name=$1 dir=$2 tag=$3 fs=$4 d
  shift 4
  local -a args=()
  for d in "$@"; do args+=(--disk "$d"); done
  mark
  "$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 "${args[@]}" --fs "$fs" --name "$name" \
    --mount "$dir" --json >"$VM_OUT/json/$tag.json" || return
  mark
}

# Each up's --json (seconds per step) goes to $VM_OUT/json/CASE-rROUND.json.
mkdir -p "$VM_OUT/json"
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="1 4 8 big small smallxfs"; else order="smallxfs small big 8 4 1"; fi
  for c in $order; do
    case $c in
      big*) loops 1 8T ;;
      small*) loops 1 1G ;;
      *) loops "$c" 1G ;;
    esac
    case $c in *xfs) fs=xfs ;; *) fs=ext4 ;; esac
    name=s$c$r
    mkdir -p "/mnt/$name"
    measure "set_${c}_format" "$r" up up_set "$name" "/mnt/$name" "set_${c}_format-r$r" "$fs" "${LOOPS[@]}"
    if ((r == 1)) && [[ $fs == ext4 ]]; then
      dumpe2fs -h "/dev/mapper/$name" >"$B/log/set_${c}.dumpe2fs" 2>&1
      info "set_${c}_ext4" "$(sed -n 's/^\(Filesystem features\|Flex block group size\|Backup block groups\):[[:space:]]*/\1: /p' "$B/log/set_${c}.dumpe2fs" | paste -sd ';')"
    fi
    "$SECRETFS" down --name "$name" >>"$B/log/set_down.log" 2>&1 || fail "down $name"
    measure "set_${c}_reopen" "$r" up up_set "$name" "/mnt/$name" "set_${c}_reopen-r$r" "$fs" "${LOOPS[@]}"
    "$SECRETFS" down --name "$name" >>"$B/log/set_down.log" 2>&1 || fail "down $name"
    drop_loops
  done
done

# mke2fs options on one member of 8 TiB (and the current and new default
# on 1 GiB): for each variant, a fresh member and a fresh LUKS2 mapping of
# secretfs's settings (by hand), then, timed, mkfs.ext4 with the variant's
# options and the mount secretfs does; the sectors mkfs wrote come from the
# mapping's /sys stat. Untimed: the backup superblock in group 1 is read
# back (what `e2fsck -b` needs), then umount. Rounds alternate the order.
MKFS_E=lazy_itable_init=1,lazy_journal_init=1,nodiscard
MKFS_BIG="stock cur nores onebackup g256 g4096 nores_g256 i1m bigalloc"
MKFS_SMALL="cur nores_g256"

# mkfs_opts VARIANT: sets OPTS to its mkfs.ext4 options (one -E: mke2fs
# keeps only the last -E it is given).
mkfs_opts() {
  local e=$MKFS_E
  OPTS=(-O sparse_super2)
  case $1 in
    stock) OPTS=() ;;
    cur) ;;
    nores) OPTS=(-O "sparse_super2,^resize_inode") ;;
    onebackup) e+=,num_backup_sb=1 ;;
    g256) OPTS+=(-G 256) ;;
    g4096) OPTS+=(-G 4096) ;;
    nores_g256) OPTS=(-O "sparse_super2,^resize_inode" -G 256) ;;
    i1m) OPTS+=(-i 1048576) ;;
    bigalloc) OPTS=(-O "sparse_super2,bigalloc" -C 65536) ;;
    *) fail "mkfs variant $1" ;;
  esac
  OPTS+=(-E "$e")
}

# written NAME: sets WRITTEN to the sectors (512 B) written so far to the
# device-mapper device NAME (no fork).
written() {
  local d n st
  WRITTEN=
  for d in /sys/block/dm-*; do
    read -r n <"$d/dm/name"
    [[ $n == "$1" ]] || continue
    read -r -a st <"$d/stat"
    WRITTEN=${st[6]}
  done
  [[ -n $WRITTEN ]] || fail "no /sys/block/dm-* named $1"
}

# mkfs_case SIZE TAG VARIANT ROUND
mkfs_case() {
  local size=$1 tag=$2 v=$3 r=$4 map=mk before bpg=
  mkfs_opts "$v"
  loops 1 "$size"
  cryptsetup luksFormat --batch-mode --key-file "$PASS" --type luks2 --pbkdf pbkdf2 \
    --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 \
    --luks2-keyslots-size 1M "${LOOPS[0]}" >>"$B/log/mkfs_luks.log" 2>&1 || fail "luksFormat $tag $v"
  cryptsetup open --key-file "$PASS" --perf-no_read_workqueue --perf-no_write_workqueue \
    "${LOOPS[0]}" "$map" >>"$B/log/mkfs_luks.log" 2>&1 || fail "open $tag $v"
  written "$map"
  before=$WRITTEN
  # -F: mke2fs asks nothing (a new mapping reads as noise, as in secretfs).
  if measure "mkfs_${tag}_$v" "$r" mkfs one mkfs.ext4 -F -q -L secretfs "${OPTS[@]}" "/dev/mapper/$map"; then
    written "$map"
    printf '{"kind":"written","case":"mkfs_%s_%s","round":%d,"bytes":%d}\n' \
      "$tag" "$v" "$r" $(((WRITTEN - before) * 512)) >>"$OUT"
    if ((r == 1)); then
      info "mkfs_${tag}_${v}_options" "${OPTS[*]}"
      dumpe2fs -h "/dev/mapper/$map" >"$B/log/mkfs_${tag}_$v.dumpe2fs" 2>&1
      bpg=$(sed -n 's/^Blocks per group:[[:space:]]*//p' "$B/log/mkfs_${tag}_$v.dumpe2fs")
      info "mkfs_${tag}_${v}_features" "$(sed -n 's/^Filesystem features:[[:space:]]*//p' "$B/log/mkfs_${tag}_$v.dumpe2fs")"
      info "mkfs_${tag}_${v}_backups" "$(sed -n 's/^Backup block groups:[[:space:]]*//p' "$B/log/mkfs_${tag}_$v.dumpe2fs")"
      info "mkfs_${tag}_${v}_inodes" "$(sed -n 's/^Inode count:[[:space:]]*//p' "$B/log/mkfs_${tag}_$v.dumpe2fs")"
      info "mkfs_${tag}_${v}_groups_per_flex" "$(sed -n 's/^Flex block group size:[[:space:]]*//p' "$B/log/mkfs_${tag}_$v.dumpe2fs")"
      # The first backup superblock (group 1, at block "Blocks per group"
      # with 4 KiB blocks) reads back: `e2fsck -b $bpg -B 4096` starts there.
      dumpe2fs -h -o superblock="$bpg" -o blocksize=4096 "/dev/mapper/$map" >>"$B/log/mkfs_backup.log" 2>&1 ||
        fail "mkfs $tag $v: no backup superblock at block $bpg"
      info "mkfs_${tag}_${v}_first_backup" "$bpg"
    fi
    mkdir -p /mnt/mk
    measure "mount_${tag}_$v" "$r" mount one mount -t ext4 -o nodev,nosuid,noatime "/dev/mapper/$map" /mnt/mk &&
      { umount /mnt/mk || fail "umount $tag $v"; }
  fi
  cryptsetup close "$map" || fail "close $tag $v"
  drop_loops
}

mkfs_all=()
for v in $MKFS_BIG; do mkfs_all+=("big:$v"); done
for v in $MKFS_SMALL; do mkfs_all+=("small:$v"); done
for ((r = 1; r <= MKFS_ROUNDS; r++)); do
  order=("${mkfs_all[@]}")
  if ((r % 2 == 0)); then
    order=()
    for c in "${mkfs_all[@]}"; do order=("$c" "${order[@]}"); done
  fi
  for c in "${order[@]}"; do
    case $c in big:*) size=8T ;; *) size=1G ;; esac
    mkfs_case "$size" "${c%%:*}" "${c#*:}" "$r"
  done
  echo "bench: mkfs options round $r done"
done
info mkfs_version "$(mkfs.ext4 -V 2>&1 | head -n 1)"

# fio_case CASE DEVICE: sequential 1 MiB and random 4 KiB, read and
# write, with 1 and 4 jobs, O_DIRECT, 5 s each; one JSON per run.
fio_case() {
  local case=$1 dev=$2 round=$3 rw bs jobs
  for rw in write read randwrite randread; do
    case $rw in rand*) bs=4k ;; *) bs=1M ;; esac
    for jobs in 1 4; do
      fio --name="$rw" --filename="$dev" --rw="$rw" --bs="$bs" --direct=1 --size=1G \
        --ioengine=libaio --iodepth=4 --numjobs="$jobs" --group_reporting \
        --offset_increment=256M --runtime=5 --time_based --randrepeat=0 \
        --output-format=json --output="$VM_OUT/fio-$case-$rw-j$jobs-r$round.json" \
        >>"$B/log/fio.log" 2>&1 || { fail "fio $case $rw j$jobs"; tail -n 5 "$B/log/fio.log"; return 1; }
    done
  done
  echo "bench: fio $case #$round done"
}

# Layout a, by secretfs.
mkdir -p /mnt/sfs1 /mnt/sfs4
"$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$D_one" --name sfs1 --mount /mnt/sfs1 \
  >>"$B/log/tp.log" 2>&1 || fail "up sfs1"
"$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$D_m0" --disk "$D_m1" --disk "$D_m2" \
  --disk "$D_m3" --name sfs4 --mount /mnt/sfs4 >>"$B/log/tp.log" 2>&1 || fail "up sfs4"
umount /mnt/sfs1 /mnt/sfs4 || fail "umount for fio"
info sfs4_table "$(dmsetup table sfs4)"
for ((r = 1; r <= FIO_ROUNDS; r++)); do
  fio_case sfs1 /dev/mapper/sfs1 "$r"
  fio_case sfs4 /dev/mapper/sfs4 "$r"
done

# dm_node NAME: the guest has no udev, so dmsetup makes no node; fio on a
# missing /dev/mapper/NAME would write a file in /dev instead.
dm_node() {
  dmsetup mknodes "$1" || fail "mknodes $1"
  [[ -b /dev/mapper/$1 ]] || fail "no block node /dev/mapper/$1"
}

# The chunk size, by hand over the same open members.
size=$(blockdev --getsz /dev/mapper/sfs4)
members="/dev/mapper/sfs4-0 0 /dev/mapper/sfs4-1 0 /dev/mapper/sfs4-2 0 /dev/mapper/sfs4-3 0"
dmsetup remove sfs4 || fail "remove sfs4"
for kib in 64 2048; do
  sectors=$((kib * 2))
  len=$(( size / (4 * sectors) * 4 * sectors ))
  dmsetup create "chunk$kib" --table "0 $len striped 4 $sectors $members" || fail "chunk $kib"
  dm_node "chunk$kib"
  for ((r = 1; r <= FIO_ROUNDS; r++)); do fio_case "chunk$kib" "/dev/mapper/chunk$kib" "$r"; done
  dmsetup remove "chunk$kib" || fail "remove chunk $kib"
done
for i in 0 1 2 3; do cryptsetup close "sfs4-$i" || fail "close sfs4-$i"; done
cryptsetup close sfs1 || fail "close sfs1"

# Layout b, by hand: dm-stripe over the raw disks, one LUKS2 on top (the
# members were secretfs's just now; the stripe overwrites them).
raw_size=$(blockdev --getsz "$D_m0")
sectors=1024
len=$(( raw_size / sectors * sectors * 4 ))
dmsetup create rawstripe --table "0 $len striped 4 $sectors $D_m0 0 $D_m1 0 $D_m2 0 $D_m3 0" || fail "rawstripe"
dm_node rawstripe
cryptsetup luksFormat --batch-mode --key-file "$PASS" --type luks2 --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 \
  /dev/mapper/rawstripe >>"$B/log/tp.log" 2>&1 || fail "luksFormat rawstripe"
cryptsetup open --key-file "$PASS" --perf-no_read_workqueue --perf-no_write_workqueue \
  /dev/mapper/rawstripe raw4 || fail "open raw4"
for ((r = 1; r <= FIO_ROUNDS; r++)); do fio_case raw4 /dev/mapper/raw4 "$r"; done
cryptsetup close raw4 || fail "close raw4"
dmsetup remove rawstripe || fail "remove rawstripe"

bench_finish
