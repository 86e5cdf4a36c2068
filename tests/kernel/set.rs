//! Several instance-store disks as one volume, in a real kernel: emulated
//! NVMe disks (QEMU's controller model stands in for Amazon's through
//! `SECRETFS_INSTANCE_STORE_MODEL`), real dm-crypt and dm-stripe, the key
//! KMS-wrapped in (local) S3 as in production.
//!
//! Boot 1: no instance store (exit 5, or 0 with `--no-disks ok`); four
//! blank disks become one set; data written; `status`; down and up; a kill
//! after every step of re-assembly converges with the data intact; a kill
//! after every step of making a set (on loop devices) converges; members
//! of two different sets are refused; XFS on one (virtio) disk: made,
//! mounted, recorded, another --fs refused.
//! Boot 2: the same four images attached in another order with other
//! serials: the same set, data intact; the XFS disk re-opened as XFS
//! without --fs, data intact; its superblock zeroed: refused with the
//! xfs_repair hint, and that repair brings it back.
//! Boot 3: one member replaced by a blank disk: refused, nothing mounted;
//! then that disk made foreign (ext4): refused. The other members' bytes
//! are compared on the host.
//! Boot 4: four blank disks again (stop/start): a new set; then `shred`
//! (refused without --yes; then no header, no signature, blank again for
//! the next `up`, no header magic in the raw images); a shred killed
//! between members is finished on the closed set by `shred --disk` (one
//! member named: erased, the others named, exit 1; a foreign disk among
//! them: refused, nothing erased; all named: done, twice). An XFS set
//! on the blank disks: aligned to the stripe, re-opened as XFS, another
//! --fs refused, a zeroed superblock refused with the hint; a fresh XFS
//! disk (stop/start of the one from boot 1).
//! After each power-off the canary is searched for in every raw image.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{
    self, image_contains, image_matches, read_json, report, Disk, VmRun, VmSpec,
};
use crate::common::LocalAws;

const CONTEXT: &str = "purpose=secretfs-set-test";
const MEMBERS: usize = 4;
const MEMBER_SIZE: u64 = 512 << 20;
/// The single XFS disk (mkfs.xfs makes none under 300 MiB).
const XFS_DISK_SIZE: u64 = 512 << 20;
/// Kill points of re-assembly (after each step).
const ASSEMBLE_POINTS: &[&str] = &[
    "key",
    "open_members",
    "create_stripe",
    "make_filesystem",
    "mount",
];
/// Kill points of making a new set.
const CREATE_POINTS: &[&str] = &[
    "key",
    "format_header",
    "format_members",
    "mark_ready",
    "open_members",
    "create_stripe",
    "make_filesystem",
    "mount",
];

/// Guest helpers: `up` with the sealed key; `dev SERIAL` names the NVMe
/// disk with that serial; `fresh_loops N` attaches N blank loop devices.
fn guest_lib(uri: &str, canary: &str) -> String {
    format!(
        r#"
export CANARY={canary}
export SECRETFS_INSTANCE_STORE_MODEL='QEMU NVMe Ctrl'
up() {{ "$SECRETFS" up --wrapped-key {uri} --encryption-context {CONTEXT} --timeout 60s "$@"; }}
exec_up() {{ exec "$SECRETFS" up --wrapped-key {uri} --encryption-context {CONTEXT} --timeout 60s "$@"; }}
dev() {{ for d in /sys/block/nvme*n1; do [ "$(tr -d ' ' < $d/device/serial)" = "$1" ] && echo /dev/${{d##*/}}; done; }}
fresh_loops() {{ for i in $(seq "$1"); do f=$(mktemp /tmp/loop.XXXXXX); truncate -s 128M $f; losetup -f --show $f; done; }}
json() {{ python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }}
"#
    )
}

/// The first boot's memory: two argon2id unlocks at once (up to 1 GiB
/// each) fit beside the guest's own.
const ARGON2_GUEST_MIB: u32 = 3072;

fn boot(name: &str, aws: &LocalAws, script: String, disks: Vec<Disk>) -> VmRun {
    boot_with(name, aws, script, disks, |_| {})
}

fn boot_with(
    name: &str,
    aws: &LocalAws,
    script: String,
    disks: Vec<Disk>,
    tune: impl FnOnce(&mut VmSpec),
) -> VmRun {
    let mut spec = VmSpec::new(name, &script);
    spec.disks = disks;
    tune(&mut spec);
    aws.attach(&mut spec);
    spec.timeout = Duration::from_secs(900);
    let run = vm::run(&spec);
    report(&run);
    run
}

fn images(dir: &std::path::Path, prefix: &str) -> Vec<PathBuf> {
    (0..MEMBERS)
        .map(|i| {
            let p = dir.join(format!("{prefix}{i}.img"));
            vm::sparse_file(&p, MEMBER_SIZE);
            p
        })
        .collect()
}

fn sha256(p: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_vec()
}

#[test]
fn vm_every_disk_as_one_set() {
    let aws = LocalAws::start();
    let uri = aws.seal("set/volume-key.bin", CONTEXT);
    let dir = vm::work_dir("set");
    let a = images(&dir, "a");
    let canary = aws::hex(&aws::random_bytes(16));
    let lib = guest_lib(&uri, &canary);
    let nvme = |imgs: &[PathBuf], serials: &[&str]| -> Vec<Disk> {
        imgs.iter()
            .zip(serials)
            .map(|(p, s)| Disk::nvme(p, s))
            .collect()
    };

    // Boot 1.
    let mut s = lib.clone();
    s += r#"
SECRETFS_INSTANCE_STORE_MODEL=none "$SECRETFS" up --disk auto --passphrase-file /dev/null 2> /run/nodisk.err; echo $? > /run/nodisk.rc
cat /run/nodisk.err
check no_disks_exit_5 test "$(cat /run/nodisk.rc)" = 5
check no_disks_one_line test "$(wc -l < /run/nodisk.err)" = 1
check no_disks_ok env SECRETFS_INSTANCE_STORE_MODEL=none "$SECRETFS" up --disk auto --no-disks ok --passphrase-file /dev/null
check no_disks_nothing_mounted sh -c '! grep -q /mnt/secretfs /proc/mounts'
check set_up to "$VM_OUT/up.json" up --disk auto --json
check set_four_members test "$(json $VM_OUT/up.json 'len(d["members"])')" = 4
check set_first_format test "$(json $VM_OUT/up.json 'd["first_format"]')" = True
check set_mounted grep -q '^/dev/mapper/secretfs /mnt/secretfs ext4 ' /proc/mounts
check set_size sh -c 'test $(df -B1M --output=size /mnt/secretfs | tail -1) -gt 1700'
check write sh -c 'for i in $(seq 4096); do echo "$CANARY"; done > /mnt/secretfs/canary.txt && head -c 96M /dev/urandom > /mnt/secretfs/data && sha256sum /mnt/secretfs/data | cut -d" " -f1 > /run/data.sum && sync'
cp /run/data.sum "$VM_OUT/data.sum"
check status_json to "$VM_OUT/status.json" "$SECRETFS" status --json
check status_human to "$VM_OUT/status.txt" "$SECRETFS" status
cat "$VM_OUT/status.txt"
check stripe_table sh -c 'dmsetup table secretfs | grep -q " striped 4 1024 "'
check ext4_stride sh -c 'dumpe2fs -h /dev/mapper/secretfs 2>/dev/null | grep -q "RAID stripe width: *512"'
check set_already_up to "$VM_OUT/again.json" up --disk auto --json
check set_already_up_noop test "$(json $VM_OUT/again.json 'd["outcome"]')" = already_up
check down to "$VM_OUT/down.json" "$SECRETFS" down --json
ls /dev/mapper; dmsetup ls
check down_removed_all sh -c '! ls /dev/mapper | grep -q secretfs && ! dmsetup ls | grep -q secretfs'
check reopen up --disk auto
check reopen_intact sh -c 'test "$(sha256sum /mnt/secretfs/data | cut -d" " -f1)" = "$(cat /run/data.sum)"'
"#;
    let mut expected: Vec<String> = [
        "no_disks_exit_5",
        "no_disks_one_line",
        "no_disks_ok",
        "no_disks_nothing_mounted",
        "set_up",
        "set_four_members",
        "set_first_format",
        "set_mounted",
        "set_size",
        "write",
        "status_json",
        "status_human",
        "stripe_table",
        "ext4_stride",
        "set_already_up",
        "set_already_up_noop",
        "down",
        "down_removed_all",
        "reopen",
        "reopen_intact",
    ]
    .map(String::from)
    .to_vec();
    for p in ASSEMBLE_POINTS {
        s += &format!(
            r#"
check a_down_{p} "$SECRETFS" down
SECRETFS_FAULT={p}:kill up --disk auto 2> /dev/null; echo $? > /run/a-{p}.rc
check a_killed_at_{p} test "$(cat /run/a-{p}.rc)" = 137
check a_converges_{p} up --disk auto
check a_intact_{p} sh -c 'test "$(sha256sum /mnt/secretfs/data | cut -d" " -f1)" = "$(cat /run/data.sum)"'
"#
        );
        for c in ["down", "killed_at", "converges", "intact"] {
            expected.push(format!("a_{c}_{p}"));
        }
    }
    s += r#"check a_final_down "$SECRETFS" down
"#;
    expected.push("a_final_down".into());
    for (i, p) in CREATE_POINTS.iter().enumerate() {
        s += &format!(
            r#"
L=$(fresh_loops 2 | sed 's/^/--disk /' | tr '\n' ' ')
SECRETFS_FAULT={p}:kill up $L --name c{i} --mount /mnt/c{i} 2> /dev/null; echo $? > /run/c{i}.rc
check c{i}_killed_at_{p} test "$(cat /run/c{i}.rc)" = 137
check c{i}_converges up $L --name c{i} --mount /mnt/c{i}
check c{i}_mounted grep -q '^/dev/mapper/c{i} /mnt/c{i} ext4 ' /proc/mounts
check c{i}_write sh -c 'echo "$CANARY" > /mnt/c{i}/canary && sync'
check c{i}_down "$SECRETFS" down --name c{i}
echo "$L" > /run/c{i}.disks
"#
        );
        for c in [
            "killed_at_".to_string() + p,
            "converges".into(),
            "mounted".into(),
            "write".into(),
            "down".into(),
        ] {
            expected.push(format!("c{i}_{c}"));
        }
    }
    // Members of two different sets: one of set A, one of set c0.
    s += r#"
C0=$(cat /run/c0.disks | awk '{print $2}')
to2 /dev/null /run/two.err up --disk $(dev a0) --disk $C0 --name two --mount /mnt/two; echo $? > /run/two.rc
cat /run/two.err
check two_sets_refused test "$(cat /run/two.rc)" = 3
check two_sets_named grep -q "different sets" /run/two.err
"#;
    expected.extend(["two_sets_refused".into(), "two_sets_named".into()]);
    // Members formatted in a process each (paused at format_header, so
    // the processes are there to count): as many at once as the CPUs (the
    // guest's 2; the key is the blob's, PBKDF2, so memory does not bound
    // them), each this binary's hidden format-member. SIGTERM to `up`
    // ends them and rolls back; a child killed ends the run; the next `up`
    // converges either way.
    s += r#"
# await_paused NAME: until two of the members' processes of NAME's `up`
# say they paused.
await_paused() { for i in $(seq 600); do [ "$(grep -c PAUSED /run/$1.err)" -ge 2 ] && break; sleep 0.5; done; }
# paused_up NAME DISKS...: `up` paused in its members' processes; sets P.
paused_up() {
  n=$1; shift
  (export SECRETFS_FAULT=format_header:pause; exec_up "$@" --name $n --mount /mnt/$n) 2> /run/$n.err &
  P=$!
  await_paused $n
}
# term_paused NAME: SIGTERM to NAME's paused `up` (P): it fails, no
# member's process is left and nothing of NAME is open.
term_paused() {
  kill -TERM $P; wait $P; echo $? > /run/$1.rc
  grep -v PAUSED /run/$1.err
  check $1_term_fails test "$(cat /run/$1.rc)" != 0
  check $1_term_no_children no_member_process
  check $1_term_nothing_open test -z "$(ls /dev/mapper | grep "^$1")"
}
children() { cat /proc/$1/task/*/children; }
members_only() { for c in $(children $1); do tr '\0' '\n' < /proc/$c/cmdline | grep -qx '[m]ember' || return 1; done; }
no_member_process() { ! grep -qsaxz '[m]ember' /proc/[0-9]*/cmdline; }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
L4=$(fresh_loops 4 | sed 's/^/--disk /' | tr '\n' ' ')
paused_up p4 $L4
check p4_children test "$(children $P | wc -w)" = "$(min "$(nproc)" 4)"
check p4_children_are_members members_only $P
term_paused p4
check p4_converges up $L4 --name p4 --mount /mnt/p4
check p4_mounted grep -q '^/dev/mapper/p4 /mnt/p4 ext4 ' /proc/mounts
check p4_down "$SECRETFS" down --name p4
L8=$(fresh_loops 8 | sed 's/^/--disk /' | tr '\n' ' ')
paused_up p8 $L8
check p8_children test "$(children $P | wc -w)" = "$(min "$(nproc)" 8)"
check p8_children_are_members members_only $P
kill -KILL "$(grep PAUSED /run/p8.err | head -1 | cut -d' ' -f2)"
wait $P; echo $? > /run/p8.rc
cat /run/p8.err | grep -v PAUSED
check p8_child_killed_fails test "$(cat /run/p8.rc)" = 1
check p8_child_named grep -q "ended without an answer" /run/p8.err
check p8_no_children no_member_process
check p8_converges up $L8 --name p8 --mount /mnt/p8
check p8_mounted grep -q '^/dev/mapper/p8 /mnt/p8 ext4 ' /proc/mounts
check p8_write sh -c 'echo "$CANARY" > /mnt/p8/canary && sync'
check p8_down "$SECRETFS" down --name p8
check p8_reopen up $L8 --name p8 --mount /mnt/p8
check p8_intact grep -q "$CANARY" /mnt/p8/canary
check p8_down2 "$SECRETFS" down --name p8
# A typed passphrase: argon2id key slots, each unlock seconds and memory,
# so the opens run in a process each too (paused at unlock): as many at
# once as the CPUs, the guest's memory holding two unlocks.
T=$(head -c 18 /dev/urandom | base64)
typed_up() { printf '%s' "$T" | "$SECRETFS" up --passphrase-file - --pbkdf argon2id "$@"; }
LA=$(fresh_loops 4 | sed 's/^/--disk /' | tr '\n' ' ')
check a4_up typed_up $LA --name a4 --mount /mnt/a4
check a4_argon2id sh -c '"$SECRETFS" status --name a4 --json | grep -q "\"pbkdf\": *\"argon2id\""'
check a4_write sh -c 'echo "$CANARY" > /mnt/a4/canary && sync'
check a4_down "$SECRETFS" down --name a4
# $! is the last of the pipeline's processes: the up.
printf '%s' "$T" | (export SECRETFS_FAULT=unlock:pause; exec "$SECRETFS" up --passphrase-file - --pbkdf argon2id $LA --name a4 --mount /mnt/a4) 2> /run/a4.err &
P=$!
await_paused a4
check a4_open_children test "$(children $P | wc -w)" = "$(min "$(nproc)" 4)"
check a4_open_children_are_members members_only $P
term_paused a4
check a4_reopen to "$VM_OUT/a4-reopen.json" typed_up $LA --name a4 --mount /mnt/a4 --json
check a4_intact grep -q "$CANARY" /mnt/a4/canary
check a4_down2 "$SECRETFS" down --name a4
"#;
    for c in [
        "p4_children",
        "p4_children_are_members",
        "p4_term_fails",
        "p4_term_no_children",
        "p4_term_nothing_open",
        "p4_converges",
        "p4_mounted",
        "p4_down",
        "p8_children",
        "p8_children_are_members",
        "p8_child_killed_fails",
        "p8_child_named",
        "p8_no_children",
        "p8_converges",
        "p8_mounted",
        "p8_write",
        "p8_down",
        "p8_reopen",
        "p8_intact",
        "p8_down2",
        "a4_up",
        "a4_argon2id",
        "a4_write",
        "a4_down",
        "a4_open_children",
        "a4_open_children_are_members",
        "a4_term_fails",
        "a4_term_no_children",
        "a4_term_nothing_open",
        "a4_reopen",
        "a4_intact",
        "a4_down2",
    ] {
        expected.push(c.into());
    }
    // XFS on one disk: /dev/vda, a virtio disk (--disk auto takes only
    // the instance-store model's NVMe disks).
    s += r#"
check x_up to "$VM_OUT/x-up.json" up --disk /dev/vda --fs xfs --name x1 --mount /mnt/x1 --json
check x_first_format test "$(json $VM_OUT/x-up.json 'd["first_format"]')" = True
check x_mounted grep -q '^/dev/mapper/x1 /mnt/x1 xfs ' /proc/mounts
check x_label test "$(blkid -p -o value -s LABEL /dev/mapper/x1)" = secretfs
check x_status sh -c '"$SECRETFS" status --name x1 | grep -q "filesystem xfs"'
check x_write sh -c 'echo "$CANARY" > /mnt/x1/canary && sync'
to2 /dev/null /run/x-ext4.err up --disk /dev/vda --fs ext4 --name x1 --mount /mnt/x1; echo $? > /run/x-ext4.rc
cat /run/x-ext4.err
check x_other_fs_refused test "$(cat /run/x-ext4.rc)" = 3
check x_other_fs_named grep -q "with xfs inside, not the ext4 asked for" /run/x-ext4.err
check x_still_mounted grep -q '^/dev/mapper/x1 /mnt/x1 xfs ' /proc/mounts
check x_down "$SECRETFS" down --name x1
"#;
    for c in [
        "x_up",
        "x_first_format",
        "x_mounted",
        "x_label",
        "x_status",
        "x_write",
        "x_other_fs_refused",
        "x_other_fs_named",
        "x_still_mounted",
        "x_down",
    ] {
        expected.push(c.into());
    }
    let xfs_disk = dir.join("xfs.img");
    vm::sparse_file(&xfs_disk, XFS_DISK_SIZE);
    let mut disks = nvme(&a, &["a0", "a1", "a2", "a3"]);
    disks.push(Disk::virtio(&xfs_disk));
    let run1 = boot_with("set-1", &aws, s, disks, |spec| {
        spec.mem_mib = ARGON2_GUEST_MIB
    });
    run1.assert_checks(&expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run1.exit_code, Some(0), "{}", run1.console_tail(60));
    // The argon2id set's re-open: each member's process, and how parallel
    // they ran (a figure, not asserted: timing is the bench's).
    let a4 = read_json(&run1, "a4-reopen.json");
    let opens = a4["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|st| st["step"] == "open_members"))
        .unwrap_or_else(|| panic!("an open_members step: {a4}"));
    let each: Vec<f64> = opens["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    assert_eq!(each.len(), 4, "a process time per member: {opens}");
    let wall = opens["seconds"].as_f64().unwrap_or(0.0);
    eprintln!(
        "argon2id set of 4, re-open: open_members {wall:.2} s, members {each:.2?} s, parallelism {:.2}",
        each.iter().sum::<f64>() / wall
    );
    // Where the time to mounted goes: seconds per step, and for the key.
    let up = read_json(&run1, "up.json");
    assert!(up["key_seconds"].as_f64().is_some_and(|k| k > 0.0), "{up}");
    let steps = up["steps"].as_array().expect("steps");
    for st in steps {
        assert!(st["seconds"].as_f64().is_some_and(|t| t >= 0.0), "{st}");
    }
    let format = steps
        .iter()
        .find(|st| st["step"] == "format_members")
        .expect("a format_members step");
    assert!(format["seconds"].as_f64().unwrap() > 0.0, "{format}");
    eprintln!(
        "set: up over 4 members, seconds per step: {}",
        steps
            .iter()
            .map(|st| format!("{} {}", st["step"].as_str().unwrap(), st["seconds"]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let st = read_json(&run1, "status.json");
    let set_id = st["set"]["id"]
        .as_str()
        .expect("status names the set")
        .to_string();
    assert_eq!(st["set"]["layout"], "luks-per-member");
    assert_eq!(st["set"]["chunk_bytes"], 512 << 10);
    let members = st["set"]["members"].as_array().unwrap();
    assert_eq!(members.len(), MEMBERS);
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m["index"], i, "{st}");
        assert_eq!(m["state"], "open", "{st}");
        assert!(m["serial"].as_str().unwrap().starts_with('a'), "{st}");
    }
    assert_eq!(st["stack"].as_array().unwrap().len(), 2, "{st}");
    let data_sum = std::fs::read_to_string(run1.out_dir.join("data.sum")).unwrap();
    for img in &a {
        assert!(
            !image_contains(img, &canary),
            "canary in the raw image {}",
            img.display()
        );
    }

    // Boot 2: attached in another order, other serials.
    let order = [2usize, 0, 3, 1];
    let shuffled: Vec<PathBuf> = order.iter().map(|&i| a[i].clone()).collect();
    let mut s = lib.clone();
    s += &format!(
        r#"
check r_up up --disk auto
check r_intact sh -c 'test "$(sha256sum /mnt/secretfs/data | cut -d" " -f1)" = "{}"'
check r_canary sh -c 'test "$(sort -u /mnt/secretfs/canary.txt)" = "$CANARY"'
check r_status to "$VM_OUT/status.json" "$SECRETFS" status --json
check r_down "$SECRETFS" down
"#,
        data_sum.trim()
    );
    // The XFS disk after a reboot: XFS without --fs; then its superblock
    // zeroed (unmounted, still open): refused with the hint, which works.
    s += r#"
check xr_up up --disk /dev/vda --name x1 --mount /mnt/x1
check xr_mounted grep -q '^/dev/mapper/x1 /mnt/x1 xfs ' /proc/mounts
check xr_intact sh -c 'test "$(cat /mnt/x1/canary)" = "$CANARY"'
check xr_unmount umount /mnt/x1
check xr_zero_superblock dd if=/dev/zero of=/dev/mapper/x1 bs=4096 count=1 conv=fsync status=none
to2 /dev/null /run/xr.err up --disk /dev/vda --name x1 --mount /mnt/x1; echo $? > /run/xr.rc
cat /run/xr.err
check xr_damaged_refused test "$(cat /run/xr.rc)" = 3
check xr_damaged_hint grep -q "secretfs made xfs on it: the filesystem is damaged.*xfs_repair /dev/mapper/x1" /run/xr.err
check xr_not_remade sh -c '! grep -q /mnt/x1 /proc/mounts && test -z "$(blkid -p -o value -s TYPE /dev/mapper/x1)"'
check xr_repair sh -c 'xfs_repair /dev/mapper/x1 > /run/xfs_repair.log 2>&1'
check xr_up_repaired up --disk /dev/vda --name x1 --mount /mnt/x1
check xr_intact_repaired sh -c 'test "$(cat /mnt/x1/canary)" = "$CANARY"'
check xr_down "$SECRETFS" down --name x1
"#;
    let mut disks = nvme(&shuffled, &["x0", "x1", "x2", "x3"]);
    disks.push(Disk::virtio(&xfs_disk));
    let run2 = boot("set-2-reordered", &aws, s, disks);
    run2.assert_checks(&[
        "r_up",
        "r_intact",
        "r_canary",
        "r_status",
        "r_down",
        "xr_up",
        "xr_mounted",
        "xr_intact",
        "xr_unmount",
        "xr_zero_superblock",
        "xr_damaged_refused",
        "xr_damaged_hint",
        "xr_not_remade",
        "xr_repair",
        "xr_up_repaired",
        "xr_intact_repaired",
        "xr_down",
    ]);
    let st = read_json(&run2, "status.json");
    assert_eq!(
        st["set"]["id"],
        set_id.as_str(),
        "another set after a reorder: {st}"
    );
    // Member i is on the image a[i], whose serial is now x(position).
    for (i, m) in st["set"]["members"].as_array().unwrap().iter().enumerate() {
        let pos = order.iter().position(|&o| o == i).unwrap();
        assert_eq!(m["serial"], format!("x{pos}"), "member {i}: {st}");
    }

    // Boot 3: member 3 replaced by a blank disk, then by a foreign one.
    let blank = dir.join("replacement.img");
    vm::sparse_file(&blank, MEMBER_SIZE);
    let kept: Vec<Vec<u8>> = a[..3].iter().map(|p| sha256(p)).collect();
    let mut s = lib.clone();
    s += r#"
to2 /dev/null /run/missing.err up --disk auto; echo $? > /run/missing.rc
cat /run/missing.err
check missing_refused test "$(cat /run/missing.rc)" = 3
check missing_named grep -q "member(s) 4 of it are not among the disks" /run/missing.err
check missing_nothing_mounted sh -c '! grep -q /mnt/secretfs /proc/mounts && ! dmsetup ls | grep -q secretfs'
check make_foreign /usr/sbin/mkfs.ext4 -q "$(dev b3)"
to2 /dev/null /run/foreign.err up --disk auto; echo $? > /run/foreign.rc
cat /run/foreign.err
check foreign_refused test "$(cat /run/foreign.rc)" = 3
check foreign_named grep -q "holds an ext4 signature" /run/foreign.err
check foreign_nothing_mounted sh -c '! grep -q /mnt/secretfs /proc/mounts && ! dmsetup ls | grep -q secretfs'
"#;
    let mut disks = nvme(&a[..3], &["b0", "b1", "b2"]);
    disks.push(Disk::nvme(&blank, "b3"));
    let run3 = boot("set-3-replaced", &aws, s, disks);
    run3.assert_checks(&[
        "missing_refused",
        "missing_named",
        "missing_nothing_mounted",
        "make_foreign",
        "foreign_refused",
        "foreign_named",
        "foreign_nothing_mounted",
    ]);
    for (p, before) in a[..3].iter().zip(&kept) {
        assert_eq!(&sha256(p), before, "a refused up changed {}", p.display());
    }

    // Boot 4: stop/start: every disk blank again.
    let fresh = images(&dir, "fresh");
    let mut s = lib;
    s += r#"
check new_up to "$VM_OUT/up.json" up --disk auto --json
check new_first_format test "$(json $VM_OUT/up.json 'd["first_format"]')" = True
check new_status to "$VM_OUT/status.json" "$SECRETFS" status --json
check new_write sh -c 'echo "$CANARY" > /mnt/secretfs/canary && sync'
# Crypto-shred: refused without --yes and a terminal, then done.
"$SECRETFS" shred < /dev/null 2>"$VM_OUT/shred-no.err"; echo $? > "$VM_OUT/shred-no.rc"
check shred_needs_yes test "$(cat $VM_OUT/shred-no.rc)" = 2
check shred_untouched grep -q "^/dev/mapper/secretfs /mnt/secretfs " /proc/mounts
# Functions, not `sh -c`: a child shell would not know `dev`.
no_luks() { for s in f0 f1 f2 f3; do d=$(dev $s); [ -b "$d" ] || return 1; ! cryptsetup isLuks "$d" || return 1; done; }
no_signature() { for s in f0 f1 f2 f3; do d=$(dev $s); [ -b "$d" ] || return 1; [ -z "$(blkid -p -o value -s TYPE "$d")" ] || return 1; done; }
# The controls: both checks fail while the headers are there.
fails() { ! "$@"; }
check shred_control_luks fails no_luks
check shred_control_signature fails no_signature
check shred to "$VM_OUT/shred.json" "$SECRETFS" shred --yes --json
check shred_four_members test "$(json $VM_OUT/shred.json 'len(d["luks_uuids"])')" = 4
check shred_nothing_left sh -c '! grep -q /mnt/secretfs /proc/mounts && ! dmsetup ls | grep -q secretfs'
check shred_no_luks no_luks
check shred_no_signature no_signature
check shred_blank_again to "$VM_OUT/up2.json" up --disk auto --json
check shred_new_volume test "$(json $VM_OUT/up2.json 'd["first_format"]')" = True
check shred_again "$SECRETFS" shred --yes
# XFS on a set: aligned to the stripe (su 512 KiB = 128 blocks, sw 4).
check sx_up to "$VM_OUT/sx-up.json" up --disk auto --fs xfs --json
check sx_first_format test "$(json $VM_OUT/sx-up.json 'd["first_format"]')" = True
check sx_mounted grep -q '^/dev/mapper/secretfs /mnt/secretfs xfs ' /proc/mounts
xfs_info /mnt/secretfs > /run/sx-info.txt; cat /run/sx-info.txt
check sx_stripe grep -q "sunit=128 *swidth=512 blks" /run/sx-info.txt
check sx_write sh -c 'head -c 32M /dev/urandom > /mnt/secretfs/data && sha256sum /mnt/secretfs/data | cut -d" " -f1 > /run/sx.sum && echo "$CANARY" > /mnt/secretfs/canary && sync'
check sx_down "$SECRETFS" down
check sx_reopen up --disk auto
check sx_reopen_xfs grep -q '^/dev/mapper/secretfs /mnt/secretfs xfs ' /proc/mounts
check sx_intact sh -c 'test "$(sha256sum /mnt/secretfs/data | cut -d" " -f1)" = "$(cat /run/sx.sum)"'
to2 /dev/null /run/sx-ext4.err up --disk auto --fs ext4; echo $? > /run/sx-ext4.rc
cat /run/sx-ext4.err
check sx_other_fs_refused test "$(cat /run/sx-ext4.rc)" = 3
check sx_other_fs_named grep -q "set .* holds a volume with xfs inside, not the ext4 asked for" /run/sx-ext4.err
check sx_unmount umount /mnt/secretfs
check sx_zero_superblock dd if=/dev/zero of=/dev/mapper/secretfs bs=4096 count=1 conv=fsync status=none
to2 /dev/null /run/sx.err up --disk auto; echo $? > /run/sx.rc
cat /run/sx.err
check sx_damaged_refused test "$(cat /run/sx.rc)" = 3
check sx_damaged_hint grep -q "xfs_repair /dev/mapper/secretfs" /run/sx.err
check sx_not_remade test -z "$(blkid -p -o value -s TYPE /dev/mapper/secretfs)"
check sx_shred "$SECRETFS" shred --yes
# A fresh XFS disk (the one of boot 1 after a stop/start).
check xs_up to "$VM_OUT/xs-up.json" up --disk /dev/vda --fs xfs --name x1 --mount /mnt/x1 --json
check xs_first_format test "$(json $VM_OUT/xs-up.json 'd["first_format"]')" = True
check xs_mounted grep -q '^/dev/mapper/x1 /mnt/x1 xfs ' /proc/mounts
check xs_down "$SECRETFS" down --name x1
# Shred killed between members: the set is closed, one member erased,
# three still ours. Shred of the (closed) volume by name refuses and
# points at --disk; naming devices finishes it, a member at a time or all.
check part_up up --disk auto
SECRETFS_FAULT=shred:kill "$SECRETFS" shred --yes 2>/dev/null; echo $? > /run/pk.rc
check part_killed test "$(cat /run/pk.rc)" = 137
luks_count() { n=0; for s in f0 f1 f2 f3; do cryptsetup isLuks "$(dev $s)" && n=$((n+1)); done; echo $n; }
check part_three_left test "$(luks_count)" = 3
to2 /dev/null /run/pn.err "$SECRETFS" shred --yes; echo $? > /run/pn.rc
cat /run/pn.err
check part_by_name_refused test "$(cat /run/pn.rc)" = 3
check part_by_name_says_disk grep -q -- "--disk" /run/pn.err
# One member named: it is erased; the three it cannot account for are named, exit 1.
ONE=$(for s in f0 f1 f2 f3; do d=$(dev $s); cryptsetup isLuks "$d" && { echo "$d"; break; }; done)
to2 /dev/null /run/p1.err "$SECRETFS" shred --yes --disk "$ONE"; echo $? > /run/p1.rc
cat /run/p1.err
check part_unresolved_exit_1 test "$(cat /run/p1.rc)" = 1
check part_unresolved_named test "$(grep -o 'member [0-9] of set [^ ]* (on none' /run/p1.err | wc -l)" = 3
check part_one_erased test "$(luks_count)" = 2
ALL="--disk $(dev f0) --disk $(dev f1) --disk $(dev f2) --disk $(dev f3)"
# Something foreign on one of them refuses the whole run: nothing erased.
BLANK=$(for s in f0 f1 f2 f3; do d=$(dev $s); cryptsetup isLuks "$d" || { echo "$d"; break; }; done)
check part_make_foreign mkfs.ext4 -q "$BLANK"
to2 /dev/null /run/pf.err "$SECRETFS" shred --yes $ALL; echo $? > /run/pf.rc
cat /run/pf.err
check part_foreign_refused test "$(cat /run/pf.rc)" = 3
check part_foreign_named grep -q "holds an ext4" /run/pf.err
check part_foreign_nothing_erased test "$(luks_count)" = 2
check part_unforeign dd if=/dev/zero of="$BLANK" bs=4M count=128 conv=fsync status=none
check part_finish to "$VM_OUT/shred3.json" "$SECRETFS" shred --yes --json $ALL
check part_finished_luks no_luks
check part_finished_signature no_signature
check part_two_blank test "$(json $VM_OUT/shred3.json 'len(d["already_blank"])')" = 2
check part_again to "$VM_OUT/shred4.json" "$SECRETFS" shred --yes --json $ALL
check part_again_nothing test "$(json $VM_OUT/shred4.json 'd["outcome"]')" = already_shredded
"#;
    let fresh_xfs = dir.join("xfs-fresh.img");
    vm::sparse_file(&fresh_xfs, XFS_DISK_SIZE);
    let mut disks = nvme(&fresh, &["f0", "f1", "f2", "f3"]);
    disks.push(Disk::virtio(&fresh_xfs));
    let run4 = boot("set-4-stop-start", &aws, s, disks);
    run4.assert_checks(&[
        "new_up",
        "new_first_format",
        "new_status",
        "new_write",
        "shred_needs_yes",
        "shred_untouched",
        "shred_control_luks",
        "shred_control_signature",
        "shred",
        "shred_four_members",
        "shred_nothing_left",
        "shred_no_luks",
        "shred_no_signature",
        "shred_blank_again",
        "shred_new_volume",
        "shred_again",
        "sx_up",
        "sx_first_format",
        "sx_mounted",
        "sx_stripe",
        "sx_write",
        "sx_down",
        "sx_reopen",
        "sx_reopen_xfs",
        "sx_intact",
        "sx_other_fs_refused",
        "sx_other_fs_named",
        "sx_unmount",
        "sx_zero_superblock",
        "sx_damaged_refused",
        "sx_damaged_hint",
        "sx_not_remade",
        "sx_shred",
        "xs_up",
        "xs_first_format",
        "xs_mounted",
        "xs_down",
        "part_up",
        "part_killed",
        "part_three_left",
        "part_by_name_refused",
        "part_by_name_says_disk",
        "part_unresolved_exit_1",
        "part_unresolved_named",
        "part_one_erased",
        "part_make_foreign",
        "part_foreign_refused",
        "part_foreign_named",
        "part_foreign_nothing_erased",
        "part_unforeign",
        "part_finish",
        "part_finished_luks",
        "part_finished_signature",
        "part_two_blank",
        "part_again",
        "part_again_nothing",
    ]);
    let st = read_json(&run4, "status.json");
    assert_ne!(
        st["set"]["id"],
        set_id.as_str(),
        "stop/start kept the old set id"
    );
    // The control: the search finds both magics in an image not shredded.
    for magic in [r"LUKS\xba\xbe", r"SKUL\xba\xbe"] {
        assert!(
            image_matches(&a[0], magic),
            "{magic} not found in {}",
            a[0].display()
        );
    }
    for img in [&xfs_disk, &fresh_xfs] {
        assert!(
            !image_contains(img, &canary),
            "canary in the raw image {}",
            img.display()
        );
    }
    for img in &fresh {
        assert!(
            !image_contains(img, &canary),
            "canary in the raw image {}",
            img.display()
        );
        // Shredded twice: neither header copy's magic anywhere.
        for magic in [r"LUKS\xba\xbe", r"SKUL\xba\xbe"] {
            assert!(
                !image_matches(img, magic),
                "{magic} left in the shredded image {}",
                img.display()
            );
        }
    }
    eprintln!(
        "set: boots {:.0}s, {:.0}s, {:.0}s, {:.0}s",
        run1.elapsed.as_secs_f64(),
        run2.elapsed.as_secs_f64(),
        run3.elapsed.as_secs_f64(),
        run4.elapsed.as_secs_f64()
    );
}
