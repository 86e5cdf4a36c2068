//! Ephemeral volumes (`up --ephemeral`) in a real kernel, with no AWS at
//! all: the guest has no network, no key file and no KMS.
//!
//! Boot 1: a blank disk made an ephemeral volume (token version 4, marked
//! ephemeral, no key slot; the header's persistent dm-crypt flags on the
//! live table; `status` says so); a pattern written through it is not on
//! the raw disk; `up --ephemeral` again does nothing; `up` with a
//! passphrase file is refused (exit 3, header unchanged, still mounted);
//! a volume whose key is kept is refused by `--ephemeral` (exit 3, with
//! `--force` too, header unchanged); `rotate` of the ephemeral volume is
//! refused; a two-disk ephemeral set (one key per member, both without a
//! key slot); `down` and `up --ephemeral` make a new volume (new UUID,
//! the old files gone).
//! Boot 2 (a reboot: the same disk images): the single volume and the set
//! are made anew (new UUID, new set id), nothing of boot 1 readable; the
//! kept-key volume's header is as boot 1 left it.
//! Boot 1 also: a loop-backed file on a plain ext4 disk; a kept-key `up`
//! over a closed ephemeral file (a kept-key volume made there); a kill
//! after every step of making a volume on one disk and a set, each
//! followed by an `up` that converges. Boot 2 brings the single volume up
//! from a config file (as the unit does) and remakes the file.
//! Swap (boot 1): `swap --priority 7` on vdg, a tmpfs fill pushed into it
//! by a cgroup memory limit (the pattern readable through the mapping, not
//! on the raw disk), `up` and `swap` refusing each other's disks, `--off`
//! and on again; (boot 2) `swap --config` remakes it, and `up --disk auto`
//! over two NVMe disks leaves the swap disk out.
//! After each power-off the canaries are searched for in every raw image.

use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, image_contains, read_json, report, Disk, VmRun, VmSpec};

const LIB: &str = r#"
up() { "$SECRETFS" up --ephemeral "$@"; }
token() { for i in 0 1 2 3; do cryptsetup token export --token-id $i "$1" 2>/dev/null; done | grep '"secretfs"'; }
field() { token "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$2"; }
slots() { cryptsetup luksDump "$1" | grep -cE '^  [0-9]+: luks2'; }
hdr() { head -c 2M "$1" | sha256sum; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
pattern() { for i in $(seq 4096); do echo "$1"; done; }
mounted() { grep -q " $1 " /proc/mounts; }
write_pattern() { pattern "$1" > "$2" && sync; }
# refused NAME DEV TEXT CMD...: CMD exits 3 with one error line saying TEXT,
# and the header of DEV is unchanged (checks NAME_exit_3, _says, _header_same).
refused() {
  local n=$1 dev=$2 text=$3 h
  shift 3
  h=$(hdr "$dev")
  to2 /dev/null "/run/$n.err" "$@"; echo $? > "/run/$n.rc"
  cat "/run/$n.err"
  check "${n}_exit_3" test "$(cat "/run/$n.rc")" = 3
  check "${n}_says" sh -c 'test "$(grep -c "^secretfs: error:" "$1")" = 1 && grep -q -- "$2" "$1"' - "/run/$n.err" "$text"
  check "${n}_header_same" test "$(hdr "$dev")" = "$h"
}
no_slots_ephemeral() { for d in "$@"; do test "$(field $d 'd["ephemeral"]')" = True && test "$(slots $d)" = 0 || return 1; done; }
"#;

fn boot(name: &str, script: String, disks: Vec<Disk>) -> VmRun {
    let mut spec = VmSpec::new(name, &script);
    spec.disks = disks;
    spec.timeout = Duration::from_secs(600);
    let run = vm::run(&spec);
    report(&run);
    run
}

#[test]
fn vm_ephemeral_volumes() {
    let dir = vm::work_dir("ephemeral");
    // vda one, vdb kept, vdc + vdd the set, vde a plain ext4 store for
    // the loop files, vdf the disk killed at every step, vdg swap (boot 2:
    // the swap image and a blank one as NVMe instance store).
    let imgs: Vec<_> = ["one", "kept", "m0", "m1", "store", "crash", "swap", "auto"]
        .iter()
        .map(|n| {
            let p = dir.join(format!("{n}.img"));
            vm::sparse_file(&p, 384 << 20);
            p
        })
        .collect();
    let canary = aws::hex(&aws::random_bytes(16));
    let set_canary = aws::hex(&aws::random_bytes(16));
    let kept_canary = aws::hex(&aws::random_bytes(16));
    let file_canary = aws::hex(&aws::random_bytes(16));
    let swap_canary = aws::hex(&aws::random_bytes(16));
    let canaries = [
        &canary,
        &set_canary,
        &kept_canary,
        &file_canary,
        &swap_canary,
    ];
    // After each power-off: no canary in the clear in any raw image.
    let no_canary_in_any_image = || {
        for img in &imgs {
            for c in canaries {
                assert!(
                    !image_contains(img, c),
                    "a canary in the clear in {}",
                    img.display()
                );
            }
        }
    };
    let lib = format!(
        "export CANARY={canary} SET_CANARY={set_canary} KEPT_CANARY={kept_canary} \
         FILE_CANARY={file_canary} SWAP_CANARY={swap_canary}\n{LIB}"
    );
    let (kills, kill_checks) = kill_at_every_step();

    // Boot 1: vda (ephemeral), vdb (kept key), vdc + vdd (ephemeral set).
    let s1 = lib.clone()
        + r#"
check up_first to /run/out/up1.json up --disk /dev/vda --json
check first_format test "$(json /run/out/up1.json 'd["first_format"]')" = True
check token_v4 test "$(field /dev/vda 'd["version"]')" = 4
check token_ephemeral test "$(field /dev/vda 'd["ephemeral"]')" = True
check token_ready test "$(field /dev/vda 'd["state"]')" = ready
check no_key_slot test "$(slots /dev/vda)" = 0
check flags_live sh -c 'dmsetup table secretfs | grep -q no_read_workqueue'
check status_says to /run/status.txt "$SECRETFS" status
check status_ephemeral grep -q "key:     ephemeral" /run/status.txt
check status_json to /run/status.json "$SECRETFS" status --json
check status_json_ephemeral test "$(json /run/status.json 'd["luks"]["token"]["ephemeral"]')" = True
check write write_pattern "$CANARY" /mnt/secretfs/canary.txt
echo 3 > /proc/sys/vm/drop_caches
check pattern_not_on_disk sh -c '! grep -qaF "$CANARY" /dev/vda'
check pattern_through_it grep -qF "$CANARY" /mnt/secretfs/canary.txt
check again_noop to /run/out/up2.json up --disk /dev/vda --json
check again_already_up test "$(json /run/out/up2.json 'd["outcome"]')" = already_up
uuid1=$(cryptsetup luksUUID /dev/vda)
H=$(hdr /dev/vda)
head -c 64 /dev/urandom > /run/kept.key
refused kept_mode /dev/vda 'secretfs down. it first' "$SECRETFS" up --disk /dev/vda --passphrase-file /run/kept.key
check kept_mode_still_mounted mounted /mnt/secretfs
to2 /dev/null /run/rot.err "$SECRETFS" rotate; echo $? > /run/rot.rc
cat /run/rot.err
check rotate_refused test "$(cat /run/rot.rc)" != 0
check rotate_says grep -q 'is ephemeral' /run/rot.err
check rotate_header_same test "$(hdr /dev/vda)" = "$H"
head -c 64 /dev/urandom > /run/any.key
check_fails no_key_opens cryptsetup open --test-passphrase --key-file /run/any.key /dev/vda
check_fails no_empty_key_opens sh -c 'printf "" | cryptsetup open --test-passphrase --key-file - /dev/vda'

check kept_up "$SECRETFS" up --disk /dev/vdb --name k --mount /mnt/k --passphrase-file /run/kept.key --pbkdf pbkdf2
check kept_write write_pattern "$KEPT_CANARY" /mnt/k/canary.txt
check kept_down "$SECRETFS" down --name k
K=$(hdr /dev/vdb)
echo "$K" > /run/out/kept.hdr
rm -f /run/kept.key
for f in "" --force; do
  refused "eph_over_kept${f:+_force}" /dev/vdb '--ephemeral would make a new volume' up --disk /dev/vdb --name k --mount /mnt/k $f
done
check_fails eph_over_kept_not_mounted mounted /mnt/k

check set_up up --disk /dev/vdc --disk /dev/vdd --name s --mount /mnt/s
check set_tokens no_slots_ephemeral /dev/vdc /dev/vdd
check set_members_own_uuids test "$(cryptsetup luksUUID /dev/vdc)" != "$(cryptsetup luksUUID /dev/vdd)"
field /dev/vdc 'd["set"]' > /run/out/set1.id
check set_write write_pattern "$SET_CANARY" /mnt/s/canary.txt
check set_again_noop to /run/out/set2.json up --disk /dev/vdd --disk /dev/vdc --name s --mount /mnt/s --json
check set_again_already_up test "$(json /run/out/set2.json 'd["outcome"]')" = already_up
check set_down "$SECRETFS" down --name s

# A loop-backed file on a plain ext4 disk.
check mkfs_store /usr/sbin/mkfs.ext4 -q /dev/vde
mkdir -p /mnt/store && check mount_store mount /dev/vde /mnt/store
F="--file /mnt/store/eph.img --size 64M --name f --mount /mnt/f"
check file_up up $F
check file_ephemeral no_slots_ephemeral /mnt/store/eph.img
check file_write write_pattern "$FILE_CANARY" /mnt/f/canary.txt
echo 3 > /proc/sys/vm/drop_caches
check file_pattern_not_in_file sh -c '! grep -qaF "$FILE_CANARY" /mnt/store/eph.img'
check_fails file_no_key_opens cryptsetup open --test-passphrase --key-file /run/any.key /mnt/store/eph.img
cryptsetup luksUUID /mnt/store/eph.img > /run/out/file.uuid
# A kept-key up over a closed ephemeral volume makes a new one there.
P="--file /mnt/store/p.img --size 64M --name p --mount /mnt/p"
check p_up up $P
check p_write write_pattern "$FILE_CANARY" /mnt/p/canary.txt
check p_down "$SECRETFS" down --name p
check p_kept_over_closed to /run/out/p.json "$SECRETFS" up $P --passphrase-file /run/any.key --pbkdf pbkdf2 --json
check p_kept_first_format test "$(json /run/out/p.json 'd["first_format"]')" = True
check p_kept_one_slot test "$(slots /mnt/store/p.img)" = 1
check p_kept_token test "$(field /mnt/store/p.img 'd.get("ephemeral", False)')" = False
check p_kept_old_gone test ! -e /mnt/p/canary.txt
check p_kept_down "$SECRETFS" down --name p
check p_kept_opens cryptsetup open --test-passphrase --key-file /run/any.key /mnt/store/p.img
check file_down "$SECRETFS" down --name f
check umount_store umount /mnt/store

# Swap space at priority 7 on vdg.
check swap_up to /run/out/swap1.json "$SECRETFS" swap --disk /dev/vdg --priority 7 --json
check swap_listed_at_7 sh -c 'test "$(awk "NR > 1 && \$5 == 7" /proc/swaps | wc -l)" = 1'
check swap_token test "$(field /dev/vdg 'd["purpose"]')" = swap
check swap_token_ephemeral test "$(field /dev/vdg 'd["ephemeral"]')" = True
check swap_no_slots test "$(slots /dev/vdg)" = 0
check swap_again to /run/out/swap2.json "$SECRETFS" swap --disk /dev/vdg --priority 7 --json
check swap_again_already_up test "$(json /run/out/swap2.json 'd["outcome"]')" = already_up
cryptsetup luksUUID /dev/vdg > /run/out/swap.uuid
# Memory pressure: a tmpfs file 4 times the memory limit of its cgroup.
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/squeeze /run/sq && echo 48M > /sys/fs/cgroup/squeeze/memory.max
mount -t tmpfs -o size=300M tmpfs /run/sq
check swap_pressure sh -c 'echo $$ > /sys/fs/cgroup/squeeze/cgroup.procs && yes "$SWAP_CANARY" | head -c 200M > /run/sq/fill'
check swap_used sh -c 'test "$(awk "NR > 1 && \$5 == 7 {print \$4}" /proc/swaps)" -gt 100000'
check swap_pattern_in_swap grep -qaF "$SWAP_CANARY" /dev/mapper/secretfs-swap
check swap_pattern_not_on_disk sh -c '! grep -qaF "$SWAP_CANARY" /dev/vdg'
# Neither takes the other: a volume over the swap disk, swap over a volume.
refused up_over_swap /dev/vdg "held by device-mapper device 'secretfs-swap'" up --disk /dev/vdg --name uv --mount /mnt/uv
refused swap_over_volume /dev/vdb 'swap never takes one' "$SECRETFS" swap --disk /dev/vdb --name sv
rm /run/sq/fill && umount /run/sq
check swap_off "$SECRETFS" swap --off
check swap_off_not_listed sh -c 'test "$(awk "NR > 1" /proc/swaps | wc -l)" = 0'
check swap_off_closed test ! -e /dev/mapper/secretfs-swap
refused up_over_closed_swap /dev/vdg 'holds the swap space of .secretfs swap.' up --disk /dev/vdg --name uv --mount /mnt/uv
check swap_on_anew to /run/out/swap3.json "$SECRETFS" swap --disk /dev/vdg --priority 7 --json
check swap_anew_first_format test "$(json /run/out/swap3.json 'd["first_format"]')" = True
check swap_anew_new_uuid test "$(cryptsetup luksUUID /dev/vdg)" != "$(cat /run/out/swap.uuid)"
cryptsetup luksUUID /dev/vdg > /run/out/swap.uuid
"# + &kills
        + r#"
check down "$SECRETFS" down
to2 /dev/null /run/anew.err up --disk /dev/vda; echo $? > /run/anew.rc
cat /run/anew.err
check down_up_anew test "$(cat /run/anew.rc)" = 0
check down_up_says grep -q 'its key died with its mapping' /run/anew.err
check down_up_new_uuid test "$(cryptsetup luksUUID /dev/vda)" != "$uuid1"
check down_up_old_files_gone test ! -e /mnt/secretfs/canary.txt
check rewrite write_pattern "$CANARY" /mnt/secretfs/canary.txt
cryptsetup luksUUID /dev/vda > /run/out/uuid1
check set_up_again up --disk /dev/vdc --disk /dev/vdd --name s --mount /mnt/s
check set_rewrite write_pattern "$SET_CANARY" /mnt/s/canary.txt
field /dev/vdc 'd["set"]' > /run/out/set1.id
"#;
    let run1 = boot("ephemeral-1", s1, imgs.iter().map(Disk::virtio).collect());
    let mut expected1 = vec![
        "up_first",
        "first_format",
        "token_v4",
        "token_ephemeral",
        "token_ready",
        "no_key_slot",
        "flags_live",
        "status_says",
        "status_ephemeral",
        "status_json",
        "status_json_ephemeral",
        "write",
        "pattern_not_on_disk",
        "pattern_through_it",
        "again_noop",
        "again_already_up",
        "kept_mode_exit_3",
        "kept_mode_says",
        "kept_mode_header_same",
        "kept_mode_still_mounted",
        "rotate_refused",
        "rotate_says",
        "rotate_header_same",
        "no_key_opens",
        "no_empty_key_opens",
        "kept_up",
        "kept_write",
        "kept_down",
        "eph_over_kept_exit_3",
        "eph_over_kept_says",
        "eph_over_kept_header_same",
        "eph_over_kept_force_exit_3",
        "eph_over_kept_force_says",
        "eph_over_kept_force_header_same",
        "eph_over_kept_not_mounted",
        "set_up",
        "set_tokens",
        "set_members_own_uuids",
        "set_write",
        "set_again_noop",
        "set_again_already_up",
        "set_down",
        "mkfs_store",
        "mount_store",
        "file_up",
        "file_ephemeral",
        "file_write",
        "file_pattern_not_in_file",
        "file_no_key_opens",
        "p_up",
        "p_write",
        "p_down",
        "p_kept_over_closed",
        "p_kept_first_format",
        "p_kept_one_slot",
        "p_kept_token",
        "p_kept_old_gone",
        "p_kept_down",
        "p_kept_opens",
        "file_down",
        "umount_store",
        "swap_up",
        "swap_listed_at_7",
        "swap_token",
        "swap_token_ephemeral",
        "swap_no_slots",
        "swap_again",
        "swap_again_already_up",
        "swap_pressure",
        "swap_used",
        "swap_pattern_in_swap",
        "swap_pattern_not_on_disk",
        "up_over_swap_exit_3",
        "up_over_swap_says",
        "up_over_swap_header_same",
        "swap_over_volume_exit_3",
        "swap_over_volume_says",
        "swap_over_volume_header_same",
        "swap_off",
        "swap_off_not_listed",
        "swap_off_closed",
        "up_over_closed_swap_exit_3",
        "up_over_closed_swap_says",
        "up_over_closed_swap_header_same",
        "swap_on_anew",
        "swap_anew_first_format",
        "swap_anew_new_uuid",
        "down",
        "down_up_anew",
        "down_up_says",
        "down_up_new_uuid",
        "down_up_old_files_gone",
        "rewrite",
        "set_up_again",
        "set_rewrite",
    ];
    expected1.extend(kill_checks.iter().map(String::as_str));
    run1.assert_checks(&expected1);
    assert_eq!(run1.exit_code, Some(0), "{}", run1.console_tail(60));
    let first = read_json(&run1, "up1.json");
    assert_eq!(first["first_format"], true, "{first}");
    assert!(
        first["key_seconds"].is_null(),
        "an ephemeral key was fetched from somewhere: {first}"
    );
    let out1 = |f: &str| {
        std::fs::read_to_string(run1.out_dir.join(f))
            .unwrap_or_else(|e| panic!("boot 1's {f}: {e}"))
            .trim()
            .to_string()
    };
    let (uuid1, set1, kept_hdr, file1, swap1) = (
        out1("uuid1"),
        out1("set1.id"),
        out1("kept.hdr"),
        out1("file.uuid"),
        out1("swap.uuid"),
    );
    assert_eq!(file1.len(), 36, "file.uuid: {file1:?}");
    assert_eq!(uuid1.len(), 36, "uuid1: {uuid1:?}");
    assert_eq!(set1.len(), 32, "set1.id: {set1:?}");
    no_canary_in_any_image();

    // Boot 2: a reboot, the same disk images.
    let s2 = lib
        + &format!(
            "uuid1={uuid1}\nset1={set1}\nkept_hdr='{kept_hdr}'\nfile1={file1}\nswap1={swap1}\n"
        )
        + r#"
check status_before_is_down_exit_6 sh -c '"$SECRETFS" status >/dev/null; test $? = 6'
# As the unit runs it (`secretfs up --config FILE`): everything from the
# config file (here under /run: the guest's root is read-only).
printf 'ephemeral = true\ndisk = "/dev/vda"\n' > /run/secretfs.toml
to2 /run/out/up3.json /run/reboot.err "$SECRETFS" up --config /run/secretfs.toml --json; echo $? > /run/reboot.rc
cat /run/reboot.err
check reboot_up test "$(cat /run/reboot.rc)" = 0
check reboot_made_anew test "$(json /run/out/up3.json 'd["first_format"]')" = True
check reboot_says grep -q 'its key died with its mapping' /run/reboot.err
check reboot_new_uuid test "$(cryptsetup luksUUID /dev/vda)" != "$uuid1"
check reboot_data_gone test ! -e /mnt/secretfs/canary.txt
check reboot_set_up up --disk /dev/vdd --disk /dev/vdc --name s --mount /mnt/s
check reboot_new_set test "$(field /dev/vdc 'd["set"]')" != "$set1"
check reboot_set_data_gone test ! -e /mnt/s/canary.txt
check kept_header_unchanged test "$(hdr /dev/vdb)" = "$kept_hdr"
mkdir -p /mnt/store && check mount_store mount /dev/vde /mnt/store
check file_reboot_up to /run/out/f.json up --file /mnt/store/eph.img --name f --mount /mnt/f --json
check file_made_anew test "$(json /run/out/f.json 'd["first_format"]')" = True
check file_new_uuid test "$(cryptsetup luksUUID /mnt/store/eph.img)" != "$file1"
check file_data_gone test ! -e /mnt/f/canary.txt
check file_still_ephemeral no_slots_ephemeral /mnt/store/eph.img
# Swap from the config's [swap] table (as secretfs-swap.service runs it),
# on the swap image, now an NVMe disk beside a blank one.
SW=$(for d in /dev/nvme?n1; do token $d | grep -q '"purpose": *"swap"' && echo $d; done)
check swap_disk_found test -b "$SW"
printf '[swap]\ndisk = "%s"\npriority = 7\n' "$SW" > /run/swap.toml
check swap_reboot to /run/out/swap4.json "$SECRETFS" swap --config /run/swap.toml --json
check swap_reboot_made_anew test "$(json /run/out/swap4.json 'd["first_format"]')" = True
check swap_reboot_new_uuid test "$(cryptsetup luksUUID "$SW")" != "$swap1"
check swap_reboot_listed sh -c 'test "$(awk "NR > 1 && \$5 == 7" /proc/swaps | wc -l)" = 1'
S=$(hdr "$SW")
to2 /dev/null /run/auto.err env SECRETFS_INSTANCE_STORE_MODEL='QEMU NVMe Ctrl' "$SECRETFS" up --ephemeral --disk auto --name a --mount /mnt/a; echo $? > /run/auto.rc
cat /run/auto.err
check auto_up test "$(cat /run/auto.rc)" = 0
check auto_leaves_swap_out grep -q "$SW holds the swap space of .secretfs swap.; leaving it out" /run/auto.err
check auto_one_disk sh -c 'test "$(cryptsetup status a | grep -c "device:")" = 1'
check auto_swap_header_same test "$(hdr "$SW")" = "$S"
check auto_swap_still_on sh -c 'test "$(awk "NR > 1 && \$5 == 7" /proc/swaps | wc -l)" = 1'
"#;
    let mut disks2: Vec<Disk> = imgs[..6].iter().map(Disk::virtio).collect();
    disks2.push(Disk::nvme(&imgs[6], "sw"));
    disks2.push(Disk::nvme(&imgs[7], "au"));
    let run2 = boot("ephemeral-2", s2, disks2);
    run2.assert_checks(&[
        "status_before_is_down_exit_6",
        "reboot_up",
        "reboot_made_anew",
        "reboot_says",
        "reboot_new_uuid",
        "reboot_data_gone",
        "reboot_set_up",
        "reboot_new_set",
        "reboot_set_data_gone",
        "kept_header_unchanged",
        "mount_store",
        "file_reboot_up",
        "file_made_anew",
        "file_new_uuid",
        "file_data_gone",
        "file_still_ephemeral",
        "swap_disk_found",
        "swap_reboot",
        "swap_reboot_made_anew",
        "swap_reboot_new_uuid",
        "swap_reboot_listed",
        "auto_up",
        "auto_leaves_swap_out",
        "auto_one_disk",
        "auto_swap_header_same",
        "auto_swap_still_on",
    ]);
    assert_eq!(run2.exit_code, Some(0), "{}", run2.console_tail(60));
    no_canary_in_any_image();
}

/// A kill (SIGKILL) after each step of making an ephemeral volume on one
/// disk (vdf) and an ephemeral set (vdc + vdd), each followed by an `up`
/// that must converge on a mounted ephemeral volume, then `down`. Returns
/// the script and its check names.
fn kill_at_every_step() -> (String, Vec<String>) {
    const DISK_POINTS: &[&str] = &[
        "format_header",
        "format",
        "open",
        "make_filesystem",
        "create_mount_point",
        "mount",
    ];
    const SET_POINTS: &[&str] = &[
        "format_header",
        "format_members",
        "mark_ready",
        "open_members",
        "create_stripe",
        "make_filesystem",
        "create_mount_point",
        "mount",
    ];
    let mut script = String::new();
    let mut checks = Vec::new();
    for (what, disks, points) in [
        ("c", "--disk /dev/vdf", DISK_POINTS),
        ("cs", "--disk /dev/vdc --disk /dev/vdd", SET_POINTS),
    ] {
        for p in points {
            // A mount point of its own, so that creating it is a step.
            let args = format!("{disks} --name {what} --mount /mnt/{what}-{p}");
            let n = format!("{what}_{p}");
            script += &format!(
                r#"
SECRETFS_FAULT={p}:kill up {args} 2> /dev/null; echo $? > /run/{n}.rc
check {n}_killed test "$(cat /run/{n}.rc)" = 137
check {n}_converges up {args}
check {n}_mounted mounted /mnt/{what}-{p}
check {n}_down "$SECRETFS" down --name {what}
"#
            );
            for c in ["killed", "converges", "mounted", "down"] {
                checks.push(format!("{n}_{c}"));
            }
        }
        let members = if what == "c" {
            "/dev/vdf"
        } else {
            "/dev/vdc /dev/vdd"
        };
        script += &format!("check {what}_all_ephemeral no_slots_ephemeral {members}\n");
        checks.push(format!("{what}_all_ephemeral"));
    }
    (script, checks)
}
