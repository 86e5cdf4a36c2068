//! Real-kernel tests: a Debian kernel under QEMU runs the freshly built
//! `secretfs` against virtio and NVMe disks and loop files, with real
//! dm-crypt, ext4 and mount. moto (KMS + S3) and a fake IMDSv2 run on the host and
//! is reachable from the guest only through fenced guestfwd addresses: the
//! guest has no AWS credentials in its environment and gets them, and its
//! region, from instance metadata at 169.254.169.254, as on EC2.
//!
//! The cases that need no reboot share one boot ([`SharedBoot`]); the
//! reboot and stop/start test boots three times. Each asserts on the
//! guest's `CHECK` lines and JSON outputs, and then inspects the raw disk
//! images from the host after power-off.

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

/// The cases that need a boot but no reboot, in one guest: each has disks
/// of its own (attached in the order asked for), its own output directory
/// `$VM_OUT/CASE` and its check names prefixed `CASE/` (prelude's
/// `$VM_CASE`), so that one failing case names itself and hides no other.
/// Each case starts from a closed default volume, whatever the one before
/// left.
struct SharedBoot {
    dir: std::path::PathBuf,
    disks: Vec<Disk>,
    script: String,
    expected: Vec<String>,
}

impl SharedBoot {
    fn new(name: &str) -> SharedBoot {
        SharedBoot {
            dir: vm::work_dir(name),
            disks: Vec::new(),
            script: format!("{GUEST_LIB}\nVM_OUT_ROOT=$VM_OUT\n"),
            expected: Vec::new(),
        }
    }

    /// A sparse image of `size` bytes for the case `case`, attached next;
    /// returns its path on the host and its device in the guest.
    fn disk(&mut self, case: &str, file: &str, size: u64) -> (std::path::PathBuf, String) {
        let p = self.dir.join(format!("{case}-{file}"));
        vm::sparse_file(&p, size);
        self.disks.push(Disk::virtio(&p));
        let dev = format!("/dev/vd{}", (b'a' + self.disks.len() as u8 - 1) as char);
        (p, dev)
    }

    /// Appends the case `case`'s script; every `check` line of it is
    /// expected to pass.
    fn case(&mut self, case: &str, body: &str) {
        self.expected
            .extend(vm::check_names(body).map(|n| format!("{case}/{n}")));
        self.script.push_str(&format!(
            "\n# ---- case {case}\n\"$SECRETFS\" down >/dev/null 2>&1\nVM_CASE={case}\nVM_OUT=$VM_OUT_ROOT/{case}\nmkdir -p \"$VM_OUT\"\n{body}\n"
        ));
    }

    fn run(self, aws: &LocalAws) -> VmRun {
        let mut spec = spec("cases", aws, &self.script, self.disks);
        spec.timeout = Duration::from_secs(600);
        let run = vm::run(&spec);
        report(&run);
        let expected: Vec<&str> = self.expected.iter().map(String::as_str).collect();
        run.assert_checks(&expected);
        assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(80));
        run
    }
}

/// The single-boot cases: a raw disk's lifecycle, a loop file's, the
/// refusals that leave disks unchanged, and ciphertext on disk against a
/// `cipher_null` control (with `--wipe` and an argon2id key slot).
#[test]
fn vm_single_boot_cases() {
    let aws = LocalAws::start();
    let mut boot = SharedBoot::new("cases");
    let raw_disk = raw_disk_lifecycle(&mut boot, &aws);
    let loop_file = loop_file_lifecycle(&mut boot, &aws);
    let refusals = refusals_leave_disks_unchanged(&mut boot, &aws);
    let ciphertext = random_data_is_ciphertext_on_disk(&mut boot, &aws);
    let run = boot.run(&aws);
    raw_disk(&run);
    loop_file(&run);
    refusals(&run);
    ciphertext(&run);
}

/// What the host checks of a case after power-off.
type AfterBoot = Box<dyn FnOnce(&VmRun)>;

fn raw_disk_lifecycle(boot: &mut SharedBoot, aws: &LocalAws) -> AfterBoot {
    const CASE: &str = "raw_disk";
    let key = aws.seal("disk/volume-key.bin", CONTEXT);
    let (data, data_dev) = boot.disk(CASE, "data.img", 512 << 20);
    let (control, control_dev) = boot.disk(CASE, "control.img", 64 << 20);
    let canary = canary();
    boot.case(
        CASE,
        &format!(
            r#"export CANARY={canary}
KEY={key}
check up_first to "$VM_OUT/up1.json" up --disk {data_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check mounted is_mounted_from_mapper secretfs /mnt/secretfs
check mapper_node test -b /dev/mapper/secretfs
check write_canary sh -c 'for i in $(seq 2048); do echo "$CANARY"; done > /mnt/secretfs/canary.txt && sync'
stat -c '%i %Y' /mnt/secretfs/canary.txt > "$VM_OUT/inode1"
check up_again to "$VM_OUT/up2.json" up --disk {data_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
stat -c '%i %Y' /mnt/secretfs/canary.txt > "$VM_OUT/inode2"
check up_again_unchanged cmp "$VM_OUT/inode1" "$VM_OUT/inode2"
check one_mount test "$(grep -c ' /mnt/secretfs ' /proc/mounts)" = 1
check status_json to "$VM_OUT/status.json" "$SECRETFS" status --json
cryptsetup luksDump {data_dev} > "$VM_OUT/luksdump.txt"
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
check up_reopen to "$VM_OUT/up3.json" up --disk {data_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check canary_intact sh -c 'test "$(sort -u /mnt/secretfs/canary.txt)" = "$CANARY"'
check down_final "$SECRETFS" down
# The plaintext control: the same canary on a disk without encryption.
check control_write sh -c 'for i in $(seq 64); do echo "$CANARY"; done | dd of={control_dev} bs=4096 conv=fsync 2>/dev/null'
"#
        ),
    );
    Box::new(move |run| {
        let json = |f: &str| read_json(run, &format!("{CASE}/{f}"));
        let up1 = json("up1.json");
        assert_eq!(up1["outcome"], "up");
        assert_eq!(up1["first_format"], true);
        let up2 = json("up2.json");
        assert_eq!(up2["outcome"], "already_up", "{up2}");
        let up3 = json("up3.json");
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
        let st = json("status.json");
        assert_eq!(st["open"], true);
        assert_eq!(st["device"], data_dev.as_str());
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
        assert_eq!(json("down.json")["outcome"], "down");

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
    })
}

fn loop_file_lifecycle(boot: &mut SharedBoot, aws: &LocalAws) -> AfterBoot {
    const CASE: &str = "loop_file";
    let key = aws.seal("loop/volume-key.bin", CONTEXT);
    let (store, store_dev) = boot.disk(CASE, "store.img", 1 << 30);
    let (control, control_dev) = boot.disk(CASE, "control.img", 64 << 20);
    let canary = canary();
    boot.case(
        CASE,
        &format!(
            r#"export CANARY={canary}
KEY={key}
IMG=/mnt/store/secretfs.img
check mkfs_store /usr/sbin/mkfs.ext4 -q -L store {store_dev}
mkdir -p /mnt/store
check mount_store mount {store_dev} /mnt/store
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
check control_write sh -c 'for i in $(seq 64); do echo "$CANARY"; done | dd of={control_dev} bs=4096 conv=fsync 2>/dev/null'
"#
        ),
    );
    Box::new(move |run| {
        let json = |f: &str| read_json(run, &format!("{CASE}/{f}"));
        let up1 = json("up1.json");
        assert_eq!(up1["steps"][0]["step"], "create_file");
        assert_eq!(up1["steps"][0]["result"], "done");
        assert!(
            up1["device"].as_str().unwrap().starts_with("/dev/loop"),
            "{up1}"
        );
        assert_eq!(json("up2.json")["outcome"], "already_up");
        let up3 = json("up3.json");
        assert_eq!(
            (up3["outcome"].as_str(), up3["first_format"].as_bool()),
            (Some("up"), Some(false))
        );
        let st = json("status.json");
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
    })
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

fn refusals_leave_disks_unchanged(boot: &mut SharedBoot, aws: &LocalAws) -> AfterBoot {
    const CASE: &str = "refusals";
    let key = aws.seal("refuse/volume-key.bin", CONTEXT);
    let wrong = aws.seal("refuse/other-key.bin", CONTEXT);
    let (ext4, ext4_dev) = boot.disk(CASE, "ext4.img", 256 << 20);
    let (_, busy_dev) = boot.disk(CASE, "busy.img", 256 << 20);
    let (_, ours_dev) = boot.disk(CASE, "ours.img", 256 << 20);
    let (forced, forced_dev) = boot.disk(CASE, "forced.img", 256 << 20);
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mkfs.ext4");
    for (img, args) in [
        (&ext4, &["-q", "-F", "-L", "foreign"][..]),
        (&forced, &["-q", "-F"]),
    ] {
        assert!(Command::new(mkfs)
            .args(args)
            .arg(img)
            .status()
            .unwrap()
            .success());
    }
    let ext4_head = bytes_at(&ext4, 0, 1 << 20);
    let ext4_tail = bytes_at(&ext4, (256 << 20) - (1 << 20), 1 << 20);
    boot.case(
        CASE,
        &format!(
            r#"KEY={key}
WRONG={wrong}
head1() {{ head -c 1048576 "$1" | sha256sum; }}
head16() {{ head -c 16777216 "$1" | sha256sum; }}
# 1. A disk holding ext4: exit 3, first MiB unchanged.
before=$(head1 {ext4_dev})
"$SECRETFS" up --disk {ext4_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/ext4.err"; echo $? > "$VM_OUT/ext4.rc"
check ext4_unchanged test "$before" = "$(head1 {ext4_dev})"
# 2. A mounted disk: exit 3, even with --force. Mounted read-only, so that
# the kernel's own writes to a mounted ext4 (lazy init, superblock
# updates) cannot change the bytes compared.
/usr/sbin/mkfs.ext4 -q {busy_dev} && mkdir -p /mnt/other && mount -o ro {busy_dev} /mnt/other
before=$(head1 {busy_dev})
"$SECRETFS" up --disk {busy_dev} --force --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/mounted.err"; echo $? > "$VM_OUT/mounted.rc"
check mounted_unchanged test "$before" = "$(head1 {busy_dev})"
# 3. The mount point is taken by another filesystem: exit 3.
"$SECRETFS" up --disk {ours_dev} --mount /mnt/other --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/mountpoint.err"; echo $? > "$VM_OUT/mountpoint.rc"
check vdc_untouched test "$(head -c 1048576 {ours_dev} | tr -d '\0' | wc -c)" = 0
umount /mnt/other
# 4. Our volume, then the wrong key: exit 4, header unchanged.
check up_ours up --disk {ours_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT"
check down_ours "$SECRETFS" down
before=$(head16 {ours_dev})
"$SECRETFS" up --disk {ours_dev} --wrapped-key "$WRONG" --encryption-context "$CONTEXT" 2> "$VM_OUT/wrongkey.err"; echo $? > "$VM_OUT/wrongkey.rc"
check header_unchanged test "$before" = "$(head16 {ours_dev})"
check not_opened test ! -e /dev/mapper/secretfs
# 5. The wrong encryption context: exit 4.
"$SECRETFS" up --disk {ours_dev} --wrapped-key "$KEY" --encryption-context purpose=other 2> "$VM_OUT/context.err"; echo $? > "$VM_OUT/context.rc"
# 6. The mapping name is taken by another device: exit 3.
check up_ours_again up --disk {ours_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT"
before=$(head1 {busy_dev})
"$SECRETFS" up --disk {busy_dev} --force --mount /mnt/x --wrapped-key "$KEY" --encryption-context "$CONTEXT" 2> "$VM_OUT/name.err"; echo $? > "$VM_OUT/name.rc"
check name_unchanged test "$before" = "$(head1 {busy_dev})"
check down_last "$SECRETFS" down
# 7. --force lifts only the foreign-signature refusal: another ext4 disk
# is formatted and mounted.
check force_formats to "$VM_OUT/force.json" up --disk {forced_dev} --force --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check force_luks sh -c 'cryptsetup luksDump {forced_dev} | grep -q "^Subsystem:[[:space:]]*secretfs$"'
check force_down "$SECRETFS" down
"#
        ),
    );
    Box::new(move |run| {
        let out = run.out_dir.join(CASE);
        assert_eq!(
            read_json(run, &format!("{CASE}/force.json"))["first_format"],
            true
        );
        let outcome = |case: &str| -> (i32, String) {
            let rc = std::fs::read_to_string(out.join(format!("{case}.rc")))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let err = std::fs::read_to_string(out.join(format!("{case}.err"))).unwrap();
            let line = err
                .lines()
                .filter(|l| l.starts_with("secretfs: error: "))
                .collect::<Vec<_>>();
            assert_eq!(line.len(), 1, "{case}: one error line expected: {err}");
            (rc, line[0].to_string())
        };
        for (case, code, words) in [
            ("ext4", 3, vec![ext4_dev.as_str(), "ext4", "--force"]),
            (
                "mounted",
                3,
                vec![busy_dev.as_str(), "mounted at /mnt/other"],
            ),
            ("mountpoint", 3, vec!["/mnt/other", "already in use"]),
            (
                "wrongkey",
                4,
                vec!["does not open", ours_dev.as_str(), "header was not changed"],
            ),
            (
                "context",
                4,
                vec!["InvalidCiphertextException", "encryption-context"],
            ),
            (
                "name",
                3,
                vec!["/dev/mapper/secretfs", "already open on another device"],
            ),
        ] {
            let (rc, line) = outcome(case);
            assert_eq!(rc, code, "{case}: {line}");
            for w in words {
                assert!(line.contains(w), "{case}: {line:?} lacks {w:?}");
            }
        }
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
    })
}

fn random_data_is_ciphertext_on_disk(boot: &mut SharedBoot, aws: &LocalAws) -> AfterBoot {
    const CASE: &str = "ciphertext";
    let key = aws.seal("plaintext/volume-key.bin", CONTEXT);
    let (ours, ours_dev) = boot.disk(CASE, "secretfs.img", 256 << 20);
    let (null, null_dev) = boot.disk(CASE, "cipher-null.img", 64 << 20);
    let (wiped, wiped_dev) = boot.disk(CASE, "wiped.img", 64 << 20);
    let (_, typed_dev) = boot.disk(CASE, "typed.img", 64 << 20);
    boot.case(
        CASE,
        &format!(
            r#"KEY={key}
# 1 MiB of random data (not a secret: the host checks for it afterwards).
head -c 1048576 /dev/urandom > "$VM_OUT/random.bin"
check up up --disk {ours_dev} --wrapped-key "$KEY" --encryption-context "$CONTEXT"
check write_ours sh -c 'cp "$VM_OUT/random.bin" /mnt/secretfs/random.bin && sync'
check read_back cmp "$VM_OUT/random.bin" /mnt/secretfs/random.bin
check down "$SECRETFS" down
# The control: LUKS2 with cipher_null, the same data written through it.
head -c 32 /dev/urandom > /run/null.key
check null_format cryptsetup luksFormat --type luks2 --batch-mode --cipher cipher_null-ecb --key-size 256 \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /run/null.key {null_dev}
check null_open cryptsetup open --key-file /run/null.key {null_dev} nullvol
check write_null dd if="$VM_OUT/random.bin" of=/dev/mapper/nullvol bs=1M oflag=direct status=none
check null_close cryptsetup close nullvol
# --wipe: the whole new volume overwritten with zeros after the format.
check wipe to "$VM_OUT/wipe.json" up --wipe --disk {wiped_dev} --name wiped --mount /mnt/wiped --wrapped-key "$KEY" --encryption-context "$CONTEXT" --json
check wipe_down "$SECRETFS" down --name wiped
# A typed passphrase (here on stdin) gets argon2id under --pbkdf auto.
head -c 24 /dev/urandom | base64 > /run/typed
check argon2id_up sh -c '"$SECRETFS" up --disk {typed_dev} --name typed --mount /mnt/typed --passphrase-file - < /run/typed'
check argon2id_slot sh -c 'cryptsetup luksDump {typed_dev} | grep -Eq "PBKDF:[[:space:]]*argon2id"'
check argon2id_down "$SECRETFS" down --name typed
check argon2id_reopen sh -c '"$SECRETFS" up --disk {typed_dev} --name typed --mount /mnt/typed --passphrase-file - < /run/typed'
check argon2id_down_again "$SECRETFS" down --name typed
"#
        ),
    );
    Box::new(move |run| {
        let wipe = read_json(run, &format!("{CASE}/wipe.json"));
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
        let random = std::fs::read(run.out_dir.join(CASE).join("random.bin")).unwrap();
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
    })
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
