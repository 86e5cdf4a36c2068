//! Real-kernel tests: a Debian kernel under QEMU runs the freshly built
//! `secretfs` against virtio and NVMe disks and loop files, with real
//! dm-crypt, ext4 and mount. moto (KMS + S3) and a fake IMDSv2 run on the host and
//! is reachable from the guest only through fenced guestfwd addresses: the
//! guest has no AWS credentials in its environment and gets them, and its
//! region, from instance metadata at 169.254.169.254, as on EC2.
//!
//! Each test boots one or more VMs (one at a time), asserts on the guest's
//! `CHECK` lines and JSON outputs, and then inspects the raw disk images
//! from the host after power-off.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, bytes_at, image_contains, read_json, report, Disk, VmRun, VmSpec};
use crate::common::LocalAws;

/// The encryption context every sealed key in these tests carries.
const CONTEXT: &str = "purpose=secretfs-vm-test";

/// A VM spec wired to local AWS, with the test's encryption context.
fn spec(name: &str, aws: &LocalAws, script: &str, disks: Vec<Disk>) -> VmSpec {
    let mut s = VmSpec::new(name, script);
    s.disks = disks;
    aws.attach(&mut s);
    s.env.push(("CONTEXT".into(), CONTEXT.into()));
    s.timeout = Duration::from_secs(300);
    s
}

/// A per-run canary (not a secret): 32 random hex characters.
fn canary() -> String {
    aws::hex(&aws::random_bytes(16))
}

/// Common guest-side helpers, prepended to each case's script.
const GUEST_LIB: &str = r#"
up() { "$SECRETFS" up --timeout 60s "$@"; }
is_mounted_from_mapper() { grep -q "^/dev/mapper/$1 $2 ext4 " /proc/mounts; }
luks_field() { cryptsetup luksDump "$1" | sed -n "s/^[[:space:]]*$2:[[:space:]]*//p" | head -n1; }
"#;

#[test]
fn vm_raw_disk_lifecycle() {
    let aws = LocalAws::start();
    let key = aws.seal("disk/volume-key.bin", CONTEXT);
    let dir = vm::work_dir("raw-disk");
    let data = dir.join("data.img");
    let control = dir.join("control.img");
    vm::sparse_file(&data, 512 << 20);
    vm::sparse_file(&control, 64 << 20);
    let canary = canary();
    let script = format!(
        r#"{GUEST_LIB}
export CANARY={canary}
KEY={key}
check up_first to "$VM_OUT/up1.json" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check mounted is_mounted_from_mapper secretfs /mnt/secretfs
check mapper_node test -b /dev/mapper/secretfs
check write_canary sh -c 'for i in $(seq 2048); do echo "$CANARY"; done > /mnt/secretfs/canary.txt && sync'
stat -c '%i %Y' /mnt/secretfs/canary.txt > "$VM_OUT/inode1"
check up_again to "$VM_OUT/up2.json" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
stat -c '%i %Y' /mnt/secretfs/canary.txt > "$VM_OUT/inode2"
check up_again_unchanged cmp "$VM_OUT/inode1" "$VM_OUT/inode2"
check one_mount test "$(grep -c ' /mnt/secretfs ' /proc/mounts)" = 1
check status_json to "$VM_OUT/status.json" "$SECRETFS" status --json
cryptsetup luksDump /dev/vda > "$VM_OUT/luksdump.txt"
check dump_luks2 grep -q '^Version:[[:space:]]*2$' "$VM_OUT/luksdump.txt"
check dump_cipher grep -q 'cipher:[[:space:]]*aes-xts-plain64' "$VM_OUT/luksdump.txt"
check dump_key_bits grep -Eq 'Cipher key:[[:space:]]*512 bits' "$VM_OUT/luksdump.txt"
check dump_sector grep -Eq 'sector:[[:space:]]*4096' "$VM_OUT/luksdump.txt"
check dump_pbkdf2 grep -Eq 'PBKDF:[[:space:]]*pbkdf2' "$VM_OUT/luksdump.txt"
check dump_iterations grep -Eq 'Iterations:[[:space:]]*1000$' "$VM_OUT/luksdump.txt"
check dump_label grep -Eq '^Label:[[:space:]]*secretfs$' "$VM_OUT/luksdump.txt"
check dump_subsystem grep -Eq '^Subsystem:[[:space:]]*secretfs$' "$VM_OUT/luksdump.txt"
check dump_flags grep -Eq 'Flags:.*no-read-workqueue.*no-write-workqueue' "$VM_OUT/luksdump.txt"
check fs_two_backups sh -c 'dumpe2fs -h /dev/mapper/secretfs 2>/dev/null | grep -Eq "^Filesystem features:.* sparse_super2( |$)"'
check table_flags sh -c 'dmsetup table secretfs 2>/dev/null | grep -q no_read_workqueue || cryptsetup status secretfs | grep -q no_read_workqueue'
check down to "$VM_OUT/down.json" "$SECRETFS" down --json
check unmounted_after_down sh -c '! grep -q " /mnt/secretfs " /proc/mounts'
check mapping_closed test ! -e /dev/mapper/secretfs
check down_again "$SECRETFS" down
check up_reopen to "$VM_OUT/up3.json" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check canary_intact sh -c 'test "$(sort -u /mnt/secretfs/canary.txt)" = "$CANARY"'
check down_final "$SECRETFS" down
# The plaintext control: the same canary on a disk without encryption.
check control_write sh -c 'for i in $(seq 64); do echo "$CANARY"; done | dd of=/dev/vdb bs=4096 conv=fsync 2>/dev/null'
"#
    );
    let run = vm::run(&spec(
        "raw-disk",
        &aws,
        &script,
        vec![Disk::virtio(&data), Disk::virtio(&control)],
    ));
    report(&run);
    run.assert_checks(&[
        "up_first",
        "mounted",
        "mapper_node",
        "write_canary",
        "up_again",
        "up_again_unchanged",
        "one_mount",
        "status_json",
        "dump_luks2",
        "dump_cipher",
        "dump_key_bits",
        "dump_sector",
        "dump_pbkdf2",
        "dump_iterations",
        "dump_label",
        "dump_subsystem",
        "dump_flags",
        "fs_two_backups",
        "table_flags",
        "down",
        "unmounted_after_down",
        "mapping_closed",
        "down_again",
        "up_reopen",
        "canary_intact",
        "down_final",
        "control_write",
    ]);
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(80));

    let up1 = read_json(&run, "up1.json");
    assert_eq!(up1["outcome"], "up");
    assert_eq!(up1["first_format"], true);
    let up2 = read_json(&run, "up2.json");
    assert_eq!(up2["outcome"], "already_up", "{up2}");
    let up3 = read_json(&run, "up3.json");
    assert_eq!(up3["outcome"], "up");
    assert_eq!(
        up3["first_format"], false,
        "a re-open must not format: {up3}"
    );
    let steps: Vec<(String, String)> = up3["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        steps.contains(&("format".into(), "already_done".into())),
        "{steps:?}"
    );
    assert!(steps.contains(&("open".into(), "done".into())), "{steps:?}");
    let st = read_json(&run, "status.json");
    assert_eq!(st["open"], true);
    assert_eq!(st["device"], "/dev/vda");
    assert_eq!(st["luks"]["version"], 2);
    assert_eq!(st["luks"]["cipher"], "aes");
    assert_eq!(st["luks"]["cipher_mode"], "xts-plain64");
    assert_eq!(st["luks"]["key_bits"], 512);
    assert_eq!(st["luks"]["sector_size"], 4096);
    assert_eq!(st["luks"]["pbkdf"], "pbkdf2");
    assert_eq!(st["luks"]["pbkdf_iterations"], 1000);
    assert_eq!(
        st["luks"]["persistent_flags"],
        serde_json::json!(["no_read_workqueue", "no_write_workqueue"])
    );
    assert_eq!(st["label"], "secretfs");
    assert_eq!(st["subsystem"], "secretfs");
    assert_eq!(st["mounts"][0]["path"], "/mnt/secretfs");
    assert!(st["mounts"][0]["size_bytes"].as_u64().unwrap() > 400 << 20);
    let down = read_json(&run, "down.json");
    assert_eq!(down["outcome"], "down");

    // From the host, after power-off: ciphertext only on the encrypted
    // disk; the control proves the search would have found the plaintext.
    assert!(
        !image_contains(&data, &canary),
        "plaintext canary found on the encrypted disk image"
    );
    assert!(
        image_contains(&control, &canary),
        "the control canary was not found: the search is broken"
    );
}

#[test]
fn vm_loop_file_lifecycle() {
    let aws = LocalAws::start();
    let key = aws.seal("loop/volume-key.bin", CONTEXT);
    let dir = vm::work_dir("loop-file");
    let store = dir.join("store.img");
    let control = dir.join("control.img");
    vm::sparse_file(&store, 1 << 30);
    vm::sparse_file(&control, 64 << 20);
    let canary = canary();
    let script = format!(
        r#"{GUEST_LIB}
export CANARY={canary}
KEY={key}
IMG=/mnt/store/secretfs.img
check mkfs_store /usr/sbin/mkfs.ext4 -q -L store /dev/vda
mkdir -p /mnt/store
check mount_store mount /dev/vda /mnt/store
check up_create to "$VM_OUT/up1.json" up --file "$IMG" --size 512M --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check file_mode test "$(stat -c %a "$IMG")" = 600
check file_size test "$(stat -c %s "$IMG")" = 536870912
check file_sparse test "$(stat -c %b "$IMG")" -lt 200000
check loop_autoclear sh -c 'grep -l "$IMG" /sys/block/loop*/loop/backing_file | head -n1 | sed "s/backing_file/autoclear/" | xargs cat | grep -qx 1'
check mounted is_mounted_from_mapper secretfs /mnt/secretfs
check write_canary sh -c 'for i in $(seq 2048); do echo "$CANARY"; done > /mnt/secretfs/canary.txt && sync'
check up_again to "$VM_OUT/up2.json" up --file "$IMG" --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check one_loop test "$(grep -l "$IMG" /sys/block/loop*/loop/backing_file | wc -l)" = 1
check status_json to "$VM_OUT/status.json" "$SECRETFS" status --json
check down to "$VM_OUT/down.json" "$SECRETFS" down --json
check loop_detached sh -c '! grep -qs "$IMG" /sys/block/loop*/loop/backing_file'
check mapping_closed test ! -e /dev/mapper/secretfs
check up_reopen to "$VM_OUT/up3.json" up --file "$IMG" --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check canary_intact sh -c 'test "$(sort -u /mnt/secretfs/canary.txt)" = "$CANARY"'
check down_final "$SECRETFS" down
check umount_store umount /mnt/store
check control_write sh -c 'for i in $(seq 64); do echo "$CANARY"; done | dd of=/dev/vdb bs=4096 conv=fsync 2>/dev/null'
"#
    );
    let run = vm::run(&spec(
        "loop-file",
        &aws,
        &script,
        vec![Disk::virtio(&store), Disk::virtio(&control)],
    ));
    report(&run);
    run.assert_checks(&[
        "mkfs_store",
        "mount_store",
        "up_create",
        "file_mode",
        "file_size",
        "file_sparse",
        "loop_autoclear",
        "mounted",
        "write_canary",
        "up_again",
        "one_loop",
        "status_json",
        "down",
        "loop_detached",
        "mapping_closed",
        "up_reopen",
        "canary_intact",
        "down_final",
        "umount_store",
        "control_write",
    ]);
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(80));
    let up1 = read_json(&run, "up1.json");
    assert_eq!(up1["steps"][0]["step"], "create_file");
    assert_eq!(up1["steps"][0]["result"], "done");
    assert!(
        up1["device"].as_str().unwrap().starts_with("/dev/loop"),
        "{up1}"
    );
    assert_eq!(read_json(&run, "up2.json")["outcome"], "already_up");
    let up3 = read_json(&run, "up3.json");
    assert_eq!(
        (up3["outcome"].as_str(), up3["first_format"].as_bool()),
        (Some("up"), Some(false))
    );
    let st = read_json(&run, "status.json");
    assert_eq!(st["loop_file"], "/mnt/store/secretfs.img");
    assert_eq!(st["loop_attached_by_secretfs"], true);
    assert_eq!(st["luks"]["sector_size"], 4096);
    // The encrypted file lives on a plain ext4 disk: its ciphertext must
    // not show the canary, while the unencrypted control disk must.
    assert!(
        !image_contains(&store, &canary),
        "plaintext canary found in the store holding the encrypted file"
    );
    assert!(
        image_contains(&control, &canary),
        "the control canary was not found: the search is broken"
    );
}

#[test]
fn vm_reboot_and_stop_start() {
    let aws = LocalAws::start();
    let key = aws.seal("nvme/volume-key.bin", CONTEXT);
    let dir = vm::work_dir("reboot");
    let disk_a = dir.join("instance-store-a.img");
    let disk_b = dir.join("instance-store-b.img");
    vm::sparse_file(&disk_a, 512 << 20);
    vm::sparse_file(&disk_b, 512 << 20);
    let canary = canary();
    // The unit's configuration: --disk auto finds the instance-store NVMe
    // disk (QEMU's controller model stands in for Amazon's).
    let config = format!(
        "wrapped-key = \"{key}\"\nencryption-context = {{ purpose = \"secretfs-vm-test\" }}\ndisk = \"auto\"\ntimeout = \"2m\"\n"
    );
    let boot = |name: &str, disk: &Path, body: &str| -> VmRun {
        let script = format!(
            "{GUEST_LIB}\nexport CANARY={canary}\ncat > /run/secretfs.toml <<'EOF'\n{config}EOF\nexport SECRETFS_INSTANCE_STORE_MODEL='QEMU NVMe Ctrl'\n{body}"
        );
        let run = vm::run(&spec(name, &aws, &script, vec![Disk::nvme(disk, "eph0")]));
        report(&run);
        run
    };
    let first = boot(
        "reboot-1-first-boot",
        &disk_a,
        r#"
check up_first to "$VM_OUT/up.json" "$SECRETFS" up --config /run/secretfs.toml --json
check write_canary sh -c 'for i in $(seq 2048); do echo "$CANARY"; done > /mnt/secretfs/canary.txt && sync'
# No `down`: the power goes off with the volume open.
"#,
    );
    first.assert_checks(&["up_first", "write_canary"]);
    assert_eq!(read_json(&first, "up.json")["device"], "/dev/nvme0n1");
    assert_eq!(read_json(&first, "up.json")["first_format"], true);

    // The header area: everything before the data (what a re-open must
    // not change), read from the header on the host.
    let header_len = secretfs::luks::header::inspect(&disk_a)
        .unwrap()
        .expect("a LUKS2 header on the first boot's disk")
        .data_offset_bytes as usize;
    let header_before = bytes_at(&disk_a, 0, header_len);
    let reboot = boot(
        "reboot-2-reboot",
        &disk_a,
        r#"
check up_reopen to "$VM_OUT/up.json" "$SECRETFS" up --config /run/secretfs.toml --json
check canary_intact sh -c 'test "$(sort -u /mnt/secretfs/canary.txt)" = "$CANARY"'
check up_again "$SECRETFS" up --config /run/secretfs.toml
check down "$SECRETFS" down --config /run/secretfs.toml
"#,
    );
    reboot.assert_checks(&["up_reopen", "canary_intact", "up_again", "down"]);
    let up = read_json(&reboot, "up.json");
    assert_eq!(
        (up["outcome"].as_str(), up["first_format"].as_bool()),
        (Some("up"), Some(false)),
        "{up}"
    );
    assert!(
        reboot
            .console
            .contains("LUKS2 header found on /dev/nvme0n1 (ours); opening"),
        "{}",
        reboot.console_tail(40)
    );
    assert_eq!(
        bytes_at(&disk_a, 0, header_len),
        header_before,
        "the re-open changed the LUKS2 header area"
    );

    // Stop/start: the instance comes back with a blank disk in its place.
    let restart = boot(
        "reboot-3-stop-start",
        &disk_b,
        r#"
check up_new to "$VM_OUT/up.json" "$SECRETFS" up --config /run/secretfs.toml --json
check fresh_volume test ! -e /mnt/secretfs/canary.txt
check down "$SECRETFS" down --config /run/secretfs.toml
"#,
    );
    restart.assert_checks(&["up_new", "fresh_volume", "down"]);
    let up = read_json(&restart, "up.json");
    assert_eq!(up["first_format"], true, "{up}");
    for img in [&disk_a, &disk_b] {
        assert!(
            !image_contains(img, &canary),
            "plaintext canary on {}",
            img.display()
        );
    }
}

#[test]
fn vm_refusals_leave_disks_unchanged() {
    let aws = LocalAws::start();
    let key = aws.seal("refuse/volume-key.bin", CONTEXT);
    let wrong = aws.seal("refuse/other-key.bin", CONTEXT);
    let dir = vm::work_dir("refusals");
    let ext4 = dir.join("ext4.img");
    let busy = dir.join("busy.img");
    let ours = dir.join("ours.img");
    for img in [&ext4, &busy, &ours] {
        vm::sparse_file(img, 256 << 20);
    }
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mkfs.ext4");
    assert!(Command::new(mkfs)
        .args(["-q", "-F", "-L", "foreign"])
        .arg(&ext4)
        .status()
        .unwrap()
        .success());
    let forced = dir.join("forced.img");
    vm::sparse_file(&forced, 256 << 20);
    assert!(Command::new(mkfs)
        .args(["-q", "-F"])
        .arg(&forced)
        .status()
        .unwrap()
        .success());
    let ext4_head = bytes_at(&ext4, 0, 1 << 20);
    let ext4_tail = bytes_at(&ext4, (256 << 20) - (1 << 20), 1 << 20);
    let script = format!(
        r#"{GUEST_LIB}
KEY={key}
WRONG={wrong}
head1() {{ head -c 1048576 "$1" | sha256sum; }}
head16() {{ head -c 16777216 "$1" | sha256sum; }}
# 1. A disk holding ext4: exit 3, first MiB unchanged.
before=$(head1 /dev/vda)
"$SECRETFS" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/ext4.err"; echo $? > "$VM_OUT/ext4.rc"
check ext4_unchanged test "$before" = "$(head1 /dev/vda)"
# 2. A mounted disk: exit 3, even with --force. Mounted read-only, so that
# the kernel's own writes to a mounted ext4 (lazy init, superblock
# updates) cannot change the bytes compared.
/usr/sbin/mkfs.ext4 -q /dev/vdb && mkdir -p /mnt/other && mount -o ro /dev/vdb /mnt/other
before=$(head1 /dev/vdb)
"$SECRETFS" up --disk /dev/vdb --force --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/mounted.err"; echo $? > "$VM_OUT/mounted.rc"
check mounted_unchanged test "$before" = "$(head1 /dev/vdb)"
# 3. The mount point is taken by another filesystem: exit 3.
"$SECRETFS" up --disk /dev/vdc --mount /mnt/other --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/mountpoint.err"; echo $? > "$VM_OUT/mountpoint.rc"
check vdc_untouched test "$(head -c 1048576 /dev/vdc | tr -d '\0' | wc -c)" = 0
umount /mnt/other
# 4. Our volume, then the wrong key: exit 4, header unchanged.
check up_ours up --disk /dev/vdc --wrapped-key "$KEY" --encryption-context "$CONTEXT"
check down_ours "$SECRETFS" down
before=$(head16 /dev/vdc)
"$SECRETFS" up --disk /dev/vdc --wrapped-key "$WRONG" --encryption-context "$CONTEXT" 2> "$VM_OUT/wrongkey.err"; echo $? > "$VM_OUT/wrongkey.rc"
check header_unchanged test "$before" = "$(head16 /dev/vdc)"
check not_opened test ! -e /dev/mapper/secretfs
# 5. The wrong encryption context: exit 4.
"$SECRETFS" up --disk /dev/vdc --wrapped-key "$KEY" --encryption-context purpose=other 2> "$VM_OUT/context.err"; echo $? > "$VM_OUT/context.rc"
# 6. The mapping name is taken by another device: exit 3.
check up_ours_again up --disk /dev/vdc --wrapped-key "$KEY" --encryption-context "$CONTEXT"
before=$(head1 /dev/vdb)
"$SECRETFS" up --disk /dev/vdb --force --mount /mnt/x --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/name.err"; echo $? > "$VM_OUT/name.rc"
check name_unchanged test "$before" = "$(head1 /dev/vdb)"
check down_last "$SECRETFS" down
# 7. --force lifts only the foreign-signature refusal: another ext4 disk
# is formatted and mounted.
check force_formats to "$VM_OUT/force.json" up --disk /dev/vdd --force --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check force_luks sh -c 'cryptsetup luksDump /dev/vdd | grep -q "^Subsystem:[[:space:]]*secretfs$"'
check force_down "$SECRETFS" down
"#
    );
    let run = vm::run(&spec(
        "refusals",
        &aws,
        &script,
        vec![
            Disk::virtio(&ext4),
            Disk::virtio(&busy),
            Disk::virtio(&ours),
            Disk::virtio(&forced),
        ],
    ));
    report(&run);
    run.assert_checks(&[
        "ext4_unchanged",
        "mounted_unchanged",
        "vdc_untouched",
        "up_ours",
        "down_ours",
        "header_unchanged",
        "not_opened",
        "up_ours_again",
        "name_unchanged",
        "down_last",
        "force_formats",
        "force_luks",
        "force_down",
    ]);
    assert_eq!(read_json(&run, "force.json")["first_format"], true);
    let outcome = |case: &str| -> (i32, String) {
        let rc = std::fs::read_to_string(run.out_dir.join(format!("{case}.rc")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let err = std::fs::read_to_string(run.out_dir.join(format!("{case}.err"))).unwrap();
        let line = err
            .lines()
            .filter(|l| l.starts_with("secretfs: error: "))
            .collect::<Vec<_>>();
        assert_eq!(line.len(), 1, "{case}: one error line expected: {err}");
        (rc, line[0].to_string())
    };
    for (case, code, words) in [
        ("ext4", 3, &["/dev/vda", "ext4", "--force"][..]),
        ("mounted", 3, &["/dev/vdb", "mounted at /mnt/other"]),
        ("mountpoint", 3, &["/mnt/other", "already in use"]),
        (
            "wrongkey",
            4,
            &["does not open", "/dev/vdc", "header was not changed"],
        ),
        (
            "context",
            4,
            &["InvalidCiphertextException", "encryption-context"],
        ),
        (
            "name",
            3,
            &["/dev/mapper/secretfs", "already open on another device"],
        ),
    ] {
        let (rc, line) = outcome(case);
        assert_eq!(rc, code, "{case}: {line}");
        for w in words {
            assert!(line.contains(w), "{case}: {line:?} lacks {w:?}");
        }
    }
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(80));
    assert_eq!(
        bytes_at(&ext4, 0, 1 << 20),
        ext4_head,
        "the ext4 disk's first MiB changed"
    );
    assert_eq!(
        bytes_at(&ext4, (256 << 20) - (1 << 20), 1 << 20),
        ext4_tail,
        "the ext4 disk's last MiB changed"
    );
}

/// The 4096-byte-aligned blocks of `img` that equal a block of `data`.
fn shared_blocks(img: &Path, data: &[u8]) -> usize {
    use std::collections::HashSet;
    use std::io::Read;
    let wanted: HashSet<&[u8]> = data.chunks_exact(4096).collect();
    let mut f = std::fs::File::open(img).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut found = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        // Reads of a regular file return whole chunks until the end.
        found += buf[..n]
            .chunks_exact(4096)
            .filter(|b| wanted.contains(b))
            .count();
    }
    found
}

#[test]
fn vm_random_data_is_ciphertext_on_disk_and_plaintext_under_cipher_null() {
    let aws = LocalAws::start();
    let key = aws.seal("plaintext/volume-key.bin", CONTEXT);
    let dir = vm::work_dir("plaintext");
    let ours = dir.join("secretfs.img");
    let null = dir.join("cipher-null.img");
    vm::sparse_file(&ours, 256 << 20);
    vm::sparse_file(&null, 64 << 20);
    let script = format!(
        r#"{GUEST_LIB}
KEY={key}
# 1 MiB of random data (not a secret: the host checks for it afterwards).
head -c 1048576 /dev/urandom > "$VM_OUT/random.bin"
check up up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CONTEXT"
check write_ours sh -c 'cp "$VM_OUT/random.bin" /mnt/secretfs/random.bin && sync'
check read_back cmp "$VM_OUT/random.bin" /mnt/secretfs/random.bin
check down "$SECRETFS" down
# The control: LUKS2 with cipher_null, the same data written through it.
head -c 32 /dev/urandom > /run/null.key
check null_format cryptsetup luksFormat --type luks2 --batch-mode --cipher cipher_null-ecb --key-size 256 \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /run/null.key /dev/vdb
check null_open cryptsetup open --key-file /run/null.key /dev/vdb nullvol
check write_null dd if="$VM_OUT/random.bin" of=/dev/mapper/nullvol bs=1M oflag=direct status=none
check null_close cryptsetup close nullvol
# --wipe: the whole new volume overwritten with zeros after the format.
check wipe to "$VM_OUT/wipe.json" up --wipe --disk /dev/vdc --name wiped --mount /mnt/wiped --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check wipe_down "$SECRETFS" down --name wiped
# A typed passphrase (here on stdin) gets argon2id under --pbkdf auto.
head -c 24 /dev/urandom | base64 > /run/typed
check argon2id_up sh -c '"$SECRETFS" up --disk /dev/vdd --name typed --mount /mnt/typed --passphrase-file - < /run/typed'
check argon2id_slot sh -c 'cryptsetup luksDump /dev/vdd | grep -Eq "PBKDF:[[:space:]]*argon2id"'
check argon2id_down "$SECRETFS" down --name typed
check argon2id_reopen sh -c '"$SECRETFS" up --disk /dev/vdd --name typed --mount /mnt/typed --passphrase-file - < /run/typed'
check argon2id_down_again "$SECRETFS" down --name typed
"#
    );
    let wiped = dir.join("wiped.img");
    let typed = dir.join("typed.img");
    vm::sparse_file(&wiped, 64 << 20);
    vm::sparse_file(&typed, 64 << 20);
    let disks = vec![
        Disk::virtio(&ours),
        Disk::virtio(&null),
        Disk::virtio(&wiped),
        Disk::virtio(&typed),
    ];
    let run = vm::run(&spec("plaintext", &aws, &script, disks));
    report(&run);
    run.assert_checks(&[
        "up",
        "write_ours",
        "read_back",
        "down",
        "null_format",
        "null_open",
        "write_null",
        "null_close",
        "wipe",
        "wipe_down",
        "argon2id_up",
        "argon2id_slot",
        "argon2id_down",
        "argon2id_reopen",
        "argon2id_down_again",
    ]);
    let wipe = read_json(&run, "wipe.json");
    let wipe_step = wipe["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "wipe")
        .map(|s| s["result"].clone());
    assert_eq!(wipe_step, Some(serde_json::json!("done")), "{wipe}");
    // A wiped volume is fully allocated on the host: every block was written.
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&wiped).unwrap().blocks() * 512;
    assert!(allocated >= 60 << 20, "--wipe wrote only {allocated} bytes");
    let random = std::fs::read(run.out_dir.join("random.bin")).unwrap();
    assert_eq!(random.len(), 1 << 20);
    assert_eq!(
        shared_blocks(&ours, &random),
        0,
        "plaintext blocks found on the secretfs disk image"
    );
    assert_eq!(
        shared_blocks(&null, &random),
        256,
        "the cipher_null control must show every block in the clear"
    );
}
