//! Safe by construction, in a real kernel: what `up` does when the device
//! cannot be read, when the filesystem inside our volume is damaged, when
//! it is killed inside the format, when several runs race, when systemd's
//! SIGTERM arrives mid-way, over a volume made before tokens, and after
//! `--force` over an old md RAID member. One boot, a disk per case, the
//! key from a passphrase file (the key path has its own tests).
//!
//! Each case names the bug it guards in its comment; the checks are the
//! guest's `CHECK` lines plus JSON outputs read on the host.

use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, Disk, VmRun, VmSpec};

const MIB: u64 = 1 << 20;

/// Steps of a first `up` on a disk that SIGTERM is sent after.
const TERM_POINTS: &[&str] = &[
    "format",
    "open",
    "make_filesystem",
    "create_mount_point",
    "mount",
];
/// Steps of a re-open that SIGTERM is sent after.
const TERM_REOPEN_POINTS: &[&str] = &["open", "make_filesystem", "mount"];

const GUEST_LIB: &str = r#"
# No trailing newline: cryptsetup --key-file and secretfs read the same key.
head -c 48 /dev/urandom | base64 | tr -d '\n' > /run/pass
up() { "$SECRETFS" up --passphrase-file /run/pass --pbkdf pbkdf2 "$@"; }
# with_canary DEV NAME: a new volume on DEV holding the canary, closed again.
with_canary() {
  up --disk "$1" --name "$2" --mount "/mnt/$2" && echo "$CANARY" > "/mnt/$2/canary" && sync &&
    "$SECRETFS" down --name "$2"
}
# First and last MiB of a device, hashed.
edges() { { head -c 1048576 "$1"; tail -c 1048576 "$1"; } | sha256sum | cut -d' ' -f1; }
rc_of() { cat "$VM_OUT/$1.rc"; }
# Runs a command, recording its exit code in $VM_OUT/NAME.rc and stderr in
# $VM_OUT/NAME.err.
record() { local n=$1; shift; "$@" 2> "$VM_OUT/$n.err"; echo $? > "$VM_OUT/$n.rc"; }
wait_paused() {
  for _ in $(seq 600); do grep -q SECRETFS-FAULT-PAUSED "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
# The PID secretfs printed when it paused (the background job is a subshell).
paused_pid() { grep -o 'SECRETFS-FAULT-PAUSED [0-9]*' "$1" | cut -d' ' -f2; }
"#;

fn read_json(run: &VmRun, file: &str) -> serde_json::Value {
    let p = run.out_dir.join(file);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), run.console_tail(60)));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{}: {e}: {text:?}", p.display()))
}

fn read(run: &VmRun, file: &str) -> String {
    std::fs::read_to_string(run.out_dir.join(file)).unwrap_or_default()
}

#[test]
fn vm_safety_cases() {
    let dir = vm::work_dir("safety");
    let mut disks = Vec::new();
    let mut disk = |name: &str, size: u64| -> String {
        let p = dir.join(format!("{name}.img"));
        vm::sparse_file(&p, size);
        disks.push(Disk::virtio(&p));
        format!("/dev/vd{}", (b'a' + disks.len() as u8 - 1) as char)
    };
    let canary = aws::hex(&aws::random_bytes(16));
    let mut s = format!("{GUEST_LIB}\nexport CANARY={canary}\n");
    let mut expected: Vec<String> = Vec::new();
    // Every `check NAME` line of a case is expected to pass.
    let mut checks = |s: &mut String, body: &str| {
        s.push_str(body);
        s.push('\n');
        expected.extend(vm::check_names(body));
    };

    // A. Reads fail over our volume (dm-flakey, always down). Before: blkid
    //    exited 2 for the read error, which meant "blank": `up` planned a
    //    format over our own volume. Now: exit 1, no format planned, and
    //    the volume opens afterwards with its data.
    let a = disk("a", 128 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
check a_with_canary with_canary {a} a
A_BEFORE=$(edges {a})
check a_flaky dmsetup create a_flaky --table "0 $(blockdev --getsz {a}) flakey {a} 0 0 1"
# No udev in the guest: make the /dev/mapper node.
check a_flaky_node dmsetup mknodes a_flaky
record a_up up --disk /dev/mapper/a_flaky --name a2 --mount /mnt/a2
check a_up_fails test "$(rc_of a_up)" = 1
check a_up_names_it grep -q "a_flaky" "$VM_OUT/a_up.err"
record a_dry "$SECRETFS" up --dry-run --disk /dev/mapper/a_flaky --passphrase-file /run/pass --name a2 --mount /mnt/a2
check a_dry_fails test "$(rc_of a_dry)" = 1
check a_no_mapping sh -c '! test -e /dev/mapper/a2'
check a_flaky_removed dmsetup remove a_flaky
check a_unchanged test "$(edges {a})" = "$A_BEFORE"
check a_reopen to "$VM_OUT/a_reopen.json" up --disk {a} --name a --mount /mnt/a --json
check a_intact grep -qx "$CANARY" /mnt/a/canary
check a_down2 "$SECRETFS" down --name a
"#
        ),
    );

    // B. The first block of the filesystem inside our volume is damaged.
    //    Before: blkid found nothing, "no filesystem yet", mkfs ran over the
    //    data. Now: exit 3 with an e2fsck hint; the backup superblock
    //    still holds the data. (640 MiB: ext4 picks 4 KiB blocks above
    //    512 MiB, so the first backup is at block 32768, as on instance
    //    store.)
    let b = disk("b", 640 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
check b_with_canary with_canary {b} b
check b_open_raw cryptsetup open --key-file /run/pass {b} b_raw
check b_damage dd if=/dev/zero of=/dev/mapper/b_raw bs=4096 count=1 conv=notrunc,fsync status=none
check b_close_raw cryptsetup close b_raw
record b_up up --disk {b} --name b --mount /mnt/b
check b_refused test "$(rc_of b_up)" = 3
check b_hint grep -q "e2fsck -b 32768 /dev/mapper/b" "$VM_OUT/b_up.err"
check b_not_mounted sh -c '! grep -q " /mnt/b " /proc/mounts && ! test -e /dev/mapper/b'
check b_open_raw2 cryptsetup open --key-file /run/pass {b} b_raw
timeout 800 e2fsck -fy -B 4096 -b 32768 /dev/mapper/b_raw < /dev/null > /run/b_fsck.out 2>&1; echo $? > "$VM_OUT/b_fsck.rc"
tail -n 40 /run/b_fsck.out > "$VM_OUT/b_fsck.out"
check b_fsck_repaired test "$(rc_of b_fsck)" -le 1
check b_close_raw2 cryptsetup close b_raw
check b_reopen up --disk {b} --name b --mount /mnt/b
check b_intact grep -qx "$CANARY" /mnt/b/canary
check b_down2 "$SECRETFS" down --name b
"#
        ),
    );

    // C. Killed inside the format, after the header and token were written
    //    and before the key slot. Before: a header "of ours" with no key
    //    slot that every later run failed to open (exit 1). Now: the token
    //    says `formatting`; the next `up` formats again and succeeds.
    let c = disk("c", 64 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
SECRETFS_FAULT=format_header:kill up --disk {c} --name c --mount /mnt/c 2>/dev/null; echo $? > "$VM_OUT/c_kill.rc"
check c_killed test "$(rc_of c_kill)" = 137
check c_header_left cryptsetup isLuks {c}
cryptsetup luksDump {c} > "$VM_OUT/c_dump.txt" 2>&1
check c_converges to "$VM_OUT/c_up.json" up --disk {c} --name c --mount /mnt/c --json
check c_mounted grep -q "^/dev/mapper/c /mnt/c ext4 " /proc/mounts
"$SECRETFS" status --name c --json > "$VM_OUT/c_status.json"
check c_down "$SECRETFS" down --name c
"#
        ),
    );

    // D. Concurrent runs (an admin over SSH while the unit still retries).
    //    Before: the losers exited 3 or 1, and the unit was marked failed
    //    although the volume was up. Now: all exit 0, one mount.
    let d = disk("d", 64 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
for i in 1 2 3; do up --disk {d} --name d --mount /mnt/d --json > "$VM_OUT/d$i.json" 2> "$VM_OUT/d$i.err" & eval "p$i=\$!"; done
wait $p1; r1=$?; wait $p2; r2=$?; wait $p3; r3=$?
echo "d: $r1 $r2 $r3"
check d_three_all_ok test "$r1$r2$r3" = 000
check d_one_mount test "$(grep -c ' /mnt/d ' /proc/mounts)" = 1
check d_down "$SECRETFS" down --name d
for i in 4 5; do up --disk {d} --name d --mount /mnt/d --json > "$VM_OUT/d$i.json" 2> "$VM_OUT/d$i.err" & eval "p$i=\$!"; done
wait $p4; r4=$?; wait $p5; r5=$?
check d_two_reopen_ok test "$r4$r5" = 00
check d_one_mount_again test "$(grep -c ' /mnt/d ' /proc/mounts)" = 1
check d_down2 "$SECRETFS" down --name d
"#
        ),
    );

    // E. SIGTERM after each step (systemd's start timeout). Before: the
    //    process died at once, leaving the mapping open and maybe mounted.
    //    Now: exit 1 after the rollback (nothing mounted, nothing open), and
    //    the next `up` converges.
    for (i, p) in TERM_POINTS.iter().enumerate() {
        let e = disk(&format!("e{i}"), 64 * MIB);
        checks(
            &mut s,
            &format!(
                r#"
SECRETFS_FAULT={p}:pause up --disk {e} --name e{i} --mount /mnt/e{i} 2> "$VM_OUT/e{i}.err" & job=$!
check e{i}_paused_after_{p} wait_paused "$VM_OUT/e{i}.err"
kill -TERM "$(paused_pid "$VM_OUT/e{i}.err")"; wait $job; echo $? > "$VM_OUT/e{i}.rc"
check e{i}_exit_1 test "$(rc_of e{i})" = 1
check e{i}_rolled_back sh -c '! grep -q " /mnt/e{i} " /proc/mounts && ! test -e /dev/mapper/e{i}'
check e{i}_converges up --disk {e} --name e{i} --mount /mnt/e{i}
check e{i}_mounted grep -q "^/dev/mapper/e{i} /mnt/e{i} ext4 " /proc/mounts
"#
            ),
        );
    }
    let r = disk("r", 64 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
check r_with_canary with_canary {r} r
"#
        ),
    );
    for (j, p) in TERM_REOPEN_POINTS.iter().enumerate() {
        checks(
            &mut s,
            &format!(
                r#"
SECRETFS_FAULT={p}:pause up --disk {r} --name r --mount /mnt/r 2> "$VM_OUT/r{j}.err" & job=$!
check r{j}_paused_after_{p} wait_paused "$VM_OUT/r{j}.err"
kill -TERM "$(paused_pid "$VM_OUT/r{j}.err")"; wait $job; echo $? > "$VM_OUT/r{j}.rc"
check r{j}_exit_1 test "$(rc_of r{j})" = 1
check r{j}_rolled_back sh -c '! grep -q " /mnt/r " /proc/mounts && ! test -e /dev/mapper/r'
check r{j}_converges up --disk {r} --name r --mount /mnt/r
check r{j}_intact grep -qx "$CANARY" /mnt/r/canary
check r{j}_down "$SECRETFS" down --name r
"#
            ),
        );
    }

    // F. A volume made before tokens (our subsystem, no token): it opens,
    //    keeps its data, and gets a `ready` token recording ext4.
    let f = disk("f", 64 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
check f_format cryptsetup luksFormat --batch-mode --type luks2 --subsystem secretfs --label f --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /run/pass {f}
check f_open_raw cryptsetup open --key-file /run/pass {f} f_raw
check f_mkfs mkfs.ext4 -q -L secretfs /dev/mapper/f_raw
mkdir -p /run/f_raw
check f_fill sh -c 'mount /dev/mapper/f_raw /run/f_raw && echo "$CANARY" > /run/f_raw/canary && umount /run/f_raw'
check f_close_raw cryptsetup close f_raw
check f_up up --disk {f} --name f --mount /mnt/f
check f_intact grep -qx "$CANARY" /mnt/f/canary
"$SECRETFS" status --name f --json > "$VM_OUT/f_status.json"
check f_down "$SECRETFS" down --name f
check f_again up --disk {f} --name f --mount /mnt/f
check f_down2 "$SECRETFS" down --name f
"#
        ),
    );

    // G. --force over an old md 1.0 member (its superblock is at the end).
    //    Before: the stale md superblock stayed, and blkid reported the
    //    foreign type for our own volume on every later boot. Now: the
    //    signatures are wiped before the format; the volume re-opens.
    let g = disk("g", 64 * MIB);
    let g2 = disk("g2", 64 * MIB);
    checks(
        &mut s,
        &format!(
            r#"
check g_md mdadm --create /dev/md9 --run --quiet --metadata=1.0 --level=1 --raid-devices=2 {g} {g2} < /dev/null
check g_md_stop mdadm --stop /dev/md9
record g_refused up --disk {g} --name g --mount /mnt/g
check g_refused_3 test "$(rc_of g_refused)" = 3
check g_names_raid grep -q "linux_raid_member" "$VM_OUT/g_refused.err"
check g_force up --disk {g} --name g --mount /mnt/g --force
check g_write sh -c 'echo "$CANARY" > /mnt/g/canary && sync'
check g_down "$SECRETFS" down --name g
check g_no_md sh -c '! blkid -p {g} | grep -q linux_raid_member'
check g_reopen to "$VM_OUT/g_reopen.json" up --disk {g} --name g --mount /mnt/g --json
check g_intact grep -qx "$CANARY" /mnt/g/canary
check g_down2 "$SECRETFS" down --name g
"#
        ),
    );

    // H. A loop file reached by another path (a hard link) is the same
    //    volume: found by device and inode. Before: matched by path string,
    //    so `up` through the link refused ("already open on another
    //    device"). Also: --mount-options are added to nodev,nosuid (before,
    //    any options dropped them).
    checks(
        &mut s,
        r#"
mkdir -p /run/hh
check h_create up --file /run/hh/v.img --size 64M --name h --mount /mnt/h --mount-options noatime,commit=30
check h_nodev_nosuid grep -Eq '^/dev/mapper/h /mnt/h ext4 [^ ]*nosuid,nodev,noatime,commit=30' /proc/mounts
check h_link ln /run/hh/v.img /run/hh/link.img
check h_same_volume to "$VM_OUT/h_link.json" up --file /run/hh/link.img --name h --mount /mnt/h --json
check h_down "$SECRETFS" down --name h
check h_reopen_by_link to "$VM_OUT/h_reopen.json" up --file /run/hh/link.img --name h --mount /mnt/h --json
check h_down2 "$SECRETFS" down --name h
"#,
    );

    let mut spec = VmSpec::new("safety", &s);
    spec.disks = disks;
    spec.timeout = Duration::from_secs(900);
    let run = vm::run(&spec);
    run.assert_checks(&expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(60));

    // A: the re-open did not format.
    assert_eq!(read_json(&run, "a_reopen.json")["first_format"], false);
    // C: the header the kill left had no key slot; the second run formatted.
    let dump = read(&run, "c_dump.txt");
    assert!(
        !dump.contains("0: luks2"),
        "a key slot survived the kill: {dump}"
    );
    let c_up = read_json(&run, "c_up.json");
    assert_eq!(c_up["first_format"], true, "{c_up}");
    let st = read_json(&run, "c_status.json");
    assert_eq!(st["luks"]["token"]["state"], "ready", "{st}");
    assert_eq!(st["luks"]["token"]["filesystem"], "ext4", "{st}");
    // D: exactly one run made the volume, the others found it up.
    let outcomes: Vec<String> = (1..=3)
        .map(|i| read_json(&run, &format!("d{i}.json"))["outcome"].to_string())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "\"up\"").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "\"already_up\"").count(),
        2,
        "{outcomes:?}"
    );
    // F: the legacy volume has a token now.
    let st = read_json(&run, "f_status.json");
    assert_eq!(st["luks"]["token"]["state"], "ready", "{st}");
    assert_eq!(st["luks"]["token"]["filesystem"], "ext4", "{st}");
    assert_eq!(st["subsystem"], "secretfs", "{st}");
    // H: through the link, the volume was already up; then it re-opened.
    assert_eq!(read_json(&run, "h_link.json")["outcome"], "already_up");
    let h = read_json(&run, "h_reopen.json");
    assert_eq!(
        (h["outcome"].as_str(), h["first_format"].as_bool()),
        (Some("up"), Some(false)),
        "{h}"
    );
    // G: the re-open after --force did not format.
    assert_eq!(read_json(&run, "g_reopen.json")["first_format"], false);
}
