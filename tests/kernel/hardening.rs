//! Hardening: a table of bad inputs run against the real binary.
//!
//! Every case states its argv, a setup snippet, the exit code the README
//! promises and words its error line must contain. For each case the test
//! checks three things:
//!
//! 1. the exit code (2 usage, 3 refused, 4 key unavailable, 1 failed);
//! 2. one error line on stderr (`secretfs: error: ...`, or clap's
//!    `error: ...` with its usage trailer), containing the words; log lines
//!    (timestamped or leveled) may come before it, nothing else;
//! 3. the target unchanged: the size and the SHA-256 of the first and last
//!    MiB of the watched path (a disk, a partition, a file; "absent" must
//!    stay absent) before and after the run.
//!
//! The cases run in one boot of the real-kernel guest (tests/common/vm.rs),
//! as root, each with its own disk where the setup puts something on it;
//! the guest script is generated from the table and writes per-case rc,
//! stderr and fingerprints into `$VM_OUT/c/<case>/`; the host asserts.
//! S3 and KMS are moto behind the fault proxy (on the host) with
//! `--deny-marker denied`: S3 keys and KMS encryption contexts that contain
//! "denied" are refused as access denied. The "dm-crypt unavailable" case
//! needs a kernel without dm-crypt: a second boot with
//! `VmSpec::skip_modules`. The pure flag errors also run on the host
//! (unprivileged), without a VM.
//!
//! The report (every case, its exit code, time and error line) is printed
//! and written to `<target>/vmtest/hardening*/report.txt`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::aws::{self, Moto, Proxy};
use crate::common::vm::{self, shell_quote, Disk, VmSpec};

/// The encryption context of the sealed test keys.
const CONTEXT: &str = "purpose=hardening";
/// An encryption context the proxy denies KMS calls for (it holds
/// [`DENY_MARKER`]).
const DENIED_CONTEXT: &str = "purpose=hardening-denied";
/// The fault proxy's `--deny-marker`.
const DENY_MARKER: &str = "denied";
const MIB: u64 = 1 << 20;
/// Size of a case's own disk (sparse).
const DISK: u64 = 64 * MIB;
/// mkfs.xfs wants at least 300 MiB.
const XFS_DISK: u64 = 320 * MIB;
/// The guest kills a run that takes longer (every key case has
/// `--timeout 20s`).
const RUN_LIMIT_SECS: u32 = 120;

/// Which boot a case runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    /// The normal guest.
    Main,
    /// A guest whose kernel has no dm-crypt (and cannot load it).
    NoDmCrypt,
}

/// One bad input.
#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    /// Arguments after the binary; placeholders `@...@` (see [`Places`]).
    argv: Vec<String>,
    /// Words before the binary in the guest (e.g. setpriv ...).
    wrap: &'static str,
    /// Shell run (under `set -e`) before the first fingerprint.
    setup: String,
    /// Shell run after the second fingerprint (errors ignored).
    cleanup: String,
    /// The exit code the README promises.
    expect: i32,
    /// Words the error line must contain (case-insensitive).
    words: Vec<String>,
    /// Sizes of the case's own disks: `@DISK@`, `@DISK2@`.
    disks: Vec<u64>,
    /// The path whose bytes must not change.
    watch: String,
    /// Also run on the host, without root and without a VM.
    host: bool,
    boot: Boot,
}

impl Case {
    fn new(name: &'static str, expect: i32, words: &[&str], argv: Vec<String>) -> Case {
        Case {
            name,
            argv,
            wrap: "",
            setup: String::new(),
            cleanup: String::new(),
            expect,
            words: words.iter().map(|w| (*w).to_owned()).collect(),
            disks: Vec::new(),
            watch: String::new(),
            host: false,
            boot: Boot::Main,
        }
    }

    /// Gives the case its own disk (`@DISK@`, then `@DISK2@`), watched
    /// unless something else is.
    fn disk(self) -> Case {
        self.disk_of(DISK)
    }

    fn disk_of(mut self, size: u64) -> Case {
        self.disks.push(size);
        if self.watch.is_empty() {
            self.watch = "@DISK@".into();
        }
        self
    }

    fn watch(mut self, path: &str) -> Case {
        self.watch = path.into();
        self
    }

    fn setup(mut self, sh: &str) -> Case {
        self.setup = sh.trim().into();
        self
    }

    fn cleanup(mut self, sh: &str) -> Case {
        self.cleanup = sh.trim().into();
        self
    }

    fn host(mut self) -> Case {
        self.host = true;
        self
    }

    fn wrap(mut self, w: &'static str) -> Case {
        self.wrap = w;
        self
    }

    fn boot(mut self, b: Boot) -> Case {
        self.boot = b;
        self
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// `up ARGS... --name @NAME@ --mount @MNT@`: every case gets its own
/// volume name and mount point unless it names them itself, so a case that
/// wrongly succeeds cannot disturb the next.
fn up(args: &[&[&str]]) -> Vec<String> {
    let flat: Vec<&str> = args.concat();
    let has = |f: &str| {
        flat.iter()
            .any(|a| *a == f || a.starts_with(&format!("{f}=")))
    };
    let mut v = vec!["up".to_owned()];
    v.extend(strs(&flat));
    if !has("--name") {
        v.extend(strs(&["--name", "@NAME@"]));
    }
    if !has("--mount") {
        v.extend(strs(&["--mount", "@MNT@"]));
    }
    v
}

/// The good key, with its context and a short deadline.
const KEY: &[&str] = &[
    "--wrapped-key",
    "@GOOD@",
    "--encryption-context",
    CONTEXT,
    "--timeout",
    "20s",
];
const TIMEOUT: &[&str] = &["--timeout", "20s"];
const CTX: &[&str] = &["--encryption-context", CONTEXT];

/// The table. Placeholders: `@DISK@`, `@DISK2@` (the case's own disks),
/// `@DIR@` (its scratch directory, existing and empty), `@NAME@`, `@MNT@`
/// (its volume name and mount point), `@FLAGDISK@` (a disk shared by the
/// flag cases), `@OURS@` (a disk holding a secretfs volume sealed with
/// `@GOOD@`), `@GPT@` (a disk with a GPT and one partition), and the S3
/// URIs `@GOOD@`, `@WRONG@`, `@MISSING@`, `@OTHERKEY@`, `@S3DENIED@`,
/// `@KMSDENIED@`, `@CORRUPTED@`, `@SHORT@`, `@TRUNCATED@`, `@OVERSIZED@`,
/// and `@KEYID@` (the test key's id).
fn table() -> Vec<Case> {
    let mut t = Vec::new();

    // ---- malformed flag values: exit 2 before anything is looked at ----
    let flag = |name, words: &[&str], args: &[&str]| {
        Case::new(name, 2, words, up(&[&["--disk", "@FLAGDISK@"], args]))
            .watch("@FLAGDISK@")
            .host()
    };
    let size = |name, words: &[&str], args: &[&str]| {
        Case::new(name, 2, words, up(&[&["--file", "@DIR@/v.img"], args]))
            .watch("@DIR@/v.img")
            .host()
    };
    t.push(size("size_unit", &["--size", "2X"], &["--size", "2X"]));
    t.push(size("size_zero", &["--size", "zero"], &["--size", "0"]));
    t.push(size(
        "size_negative",
        &["--size", "-1G"],
        &["--size", "-1G"],
    ));
    t.push(size(
        "size_negative_eq",
        &["--size", "-1G"],
        &["--size=-1G"],
    ));
    t.push(size(
        "size_fraction",
        &["--size", "1.5G"],
        &["--size", "1.5G"],
    ));
    t.push(size(
        "size_overflow",
        &["--size", "too large"],
        &["--size", "99999999999999999999"],
    ));
    t.push(size(
        "size_exabytes",
        &["--size", "16384P"],
        &["--size", "16384P"],
    ));
    t.push(flag(
        "uri_empty",
        &["--wrapped-key", "s3://"],
        &["--wrapped-key", "s3://"],
    ));
    t.push(flag(
        "uri_one_slash",
        &["--wrapped-key", "s3:/x/y"],
        &["--wrapped-key", "s3:/x/y"],
    ));
    t.push(flag(
        "uri_short_bucket",
        &["--wrapped-key", "bucket name"],
        &["--wrapped-key", "s3://b/k"],
    ));
    t.push(flag(
        "uri_https",
        &["--wrapped-key", "https://x/y"],
        &["--wrapped-key", "https://x/y"],
    ));
    t.push(flag(
        "uri_no_key",
        &["--wrapped-key", "names no object"],
        &["--wrapped-key", "s3://secretfs-test/"],
    ));
    t.push(flag(
        "context_no_value",
        &["--encryption-context", "novalue"],
        &["--wrapped-key", "@GOOD@", "--encryption-context", "novalue"],
    ));
    t.push(flag(
        "context_empty_key",
        &["--encryption-context", "empty key"],
        &["--wrapped-key", "@GOOD@", "--encryption-context", "=v"],
    ));
    t.push(flag(
        "context_twice",
        &["'a'", "twice"],
        &[
            "--wrapped-key",
            "@GOOD@",
            "--encryption-context",
            "a=1",
            "--encryption-context",
            "a=2",
        ],
    ));
    t.push(flag(
        "timeout_word",
        &["--timeout", "soon"],
        &["--timeout", "soon"],
    ));
    t.push(flag(
        "timeout_zero",
        &["--timeout", "zero"],
        &["--timeout", "0s"],
    ));
    t.push(flag(
        "timeout_days",
        &["--timeout", "2days"],
        &["--timeout", "2days"],
    ));
    t.push(flag("name_slash", &["--name", "a/b"], &["--name", "a/b"]));
    t.push(flag("name_dash", &["--name", "-x"], &["--name", "-x"]));
    t.push(flag("name_dash_eq", &["--name", "-x"], &["--name=-x"]));
    let long_name = "n".repeat(65);
    t.push(flag(
        "name_too_long",
        &["--name", "64"],
        &["--name", &long_name],
    ));
    t.push(flag(
        "owner_short",
        &["--expected-bucket-owner", "12345"],
        &["--expected-bucket-owner", "12345"],
    ));
    t.push(flag(
        "kms_key_space",
        &["--kms-key-id", "has space"],
        &["--kms-key-id", "has space"],
    ));
    t.push(flag(
        "endpoint_ftp",
        &["--endpoint-url", "ftp://x"],
        &["--endpoint-url", "ftp://x"],
    ));
    t.push(flag(
        "region_upper",
        &["--region", "US"],
        &["--region", "US"],
    ));
    t.push(flag(
        "pbkdf_unknown",
        &["--pbkdf", "scrypt"],
        &["--pbkdf", "scrypt"],
    ));
    t.push(flag(
        "mount_relative",
        &["rel/dir", "absolute"],
        &["--mount", "rel/dir"],
    ));
    t.push(flag("mount_root", &["root filesystem"], &["--mount", "/"]));
    t.push(flag(
        "mount_options_bind",
        &["bind", "leave it out"],
        &["--mount-options", "noatime,bind"],
    ));
    t.push(flag(
        "mount_options_dev_and_nodev",
        &["nodev", "dev"],
        &["--mount-options", "dev,nodev"],
    ));
    t.push(flag(
        "disk_and_file",
        &["--disk", "--file"],
        &["--file", "@DIR@/v.img"],
    ));
    t.push(flag(
        "disk_and_size",
        &["--disk", "--size"],
        &["--size", "1G"],
    ));
    t.push(flag(
        "key_and_passphrase",
        &["--wrapped-key", "--passphrase-file"],
        &["--wrapped-key", "@GOOD@", "--passphrase-file", "@DIR@/pass"],
    ));
    t.push(flag(
        "config_missing",
        &["@DIR@/none.toml"],
        &["--config", "@DIR@/none.toml"],
    ));
    t.push(
        Case::new("no_target", 2, &["--disk", "--file"], up(&[KEY]))
            .watch("@FLAGDISK@")
            .host(),
    );

    // ---- bad config files: exit 2 ----
    t.push(
        Case::new(
            "config_bad_toml",
            2,
            &["@DIR@/c.toml"],
            up(&[&["--config", "@DIR@/c.toml"]]),
        )
        .setup("printf '[[[\\n' > @DIR@/c.toml")
        .watch("@FLAGDISK@"),
    );
    t.push(
        Case::new(
            "config_unknown_key",
            2,
            &["colour"],
            up(&[&["--config", "@DIR@/c.toml"]]),
        )
        .setup("printf 'disk = \"@FLAGDISK@\"\\ncolour = \"red\"\\n' > @DIR@/c.toml")
        .watch("@FLAGDISK@"),
    );
    t.push(
        Case::new(
            "config_bad_size",
            2,
            &["size", "2X"],
            up(&[&["--config", "@DIR@/c.toml"]]),
        )
        .setup("printf 'file = \"@DIR@/v.img\"\\nsize = \"2X\"\\n' > @DIR@/c.toml")
        .watch("@DIR@/v.img"),
    );

    // ---- usage errors found on the machine: exit 2 ----
    t.push(
        Case::new(
            "file_without_size",
            2,
            &["--size"],
            up(&[&["--file", "@DIR@/new.img"], KEY]),
        )
        .watch("@DIR@/new.img"),
    );
    t.push(
        Case::new(
            "file_missing_dir",
            2,
            &["@DIR@/no/such", "does not exist"],
            up(&[&["--file", "@DIR@/no/such/v.img", "--size", "64M"], KEY]),
        )
        .watch("@DIR@/no"),
    );
    t.push(
        Case::new(
            "file_size_too_small",
            2,
            &["--size", "too small"],
            up(&[&["--file", "@DIR@/v.img", "--size", "8M"], KEY]),
        )
        .watch("@DIR@/v.img"),
    );
    t.push(
        Case::new(
            "file_existing_too_small",
            2,
            &["@DIR@/small.img", "at least"],
            up(&[&["--file", "@DIR@/small.img"], KEY]),
        )
        .setup("truncate -s 8M @DIR@/small.img")
        .watch("@DIR@/small.img"),
    );
    t.push(
        Case::new(
            "file_is_directory",
            2,
            &["@DIR@", "directory"],
            up(&[&["--file", "@DIR@"], KEY]),
        )
        .watch("@DIR@"),
    );
    t.push(
        Case::new(
            "file_is_block_device",
            2,
            &["@FLAGDISK@", "block device", "--disk"],
            up(&[&["--file", "@FLAGDISK@"], KEY]),
        )
        .watch("@FLAGDISK@"),
    );
    t.push(
        Case::new(
            "disk_missing",
            2,
            &["/dev/vdzz", "does not exist"],
            up(&[&["--disk", "/dev/vdzz"], KEY]),
        )
        .watch("/dev/vdzz"),
    );
    t.push(
        Case::new(
            "disk_char_device",
            2,
            &["/dev/zero", "character device"],
            up(&[&["--disk", "/dev/zero"], KEY]),
        )
        .watch("/dev/zero"),
    );
    t.push(
        Case::new(
            "disk_directory",
            2,
            &["@DIR@", "directory"],
            up(&[&["--disk", "@DIR@"], KEY]),
        )
        .watch("@DIR@"),
    );
    t.push(
        Case::new(
            "disk_regular_file",
            2,
            &["@DIR@/plain.img", "regular file", "--file"],
            up(&[&["--disk", "@DIR@/plain.img"], KEY]),
        )
        .setup("truncate -s 64M @DIR@/plain.img")
        .watch("@DIR@/plain.img"),
    );
    t.push(
        Case::new(
            "not_root",
            2,
            &["needs root"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .wrap("setpriv --reuid=65534 --regid=65534 --clear-groups")
        .disk(),
    );

    // ---- refusals: exit 3, nothing written ----
    t.push(
        Case::new(
            "disk_partition",
            3,
            &["@GPT@1", "partition of @GPT@"],
            up(&[&["--disk", "@GPT@1", "--force"], KEY]),
        )
        .watch("@GPT@1"),
    );
    t.push(
        Case::new(
            "disk_partition_table",
            3,
            &["@GPT@", "gpt partition table", "--force"],
            up(&[&["--disk", "@GPT@"], KEY]),
        )
        .watch("@GPT@"),
    );
    t.push(
        Case::new(
            "disk_ext4",
            3,
            &["@DISK@", "ext4", "--force"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .setup("mkfs.ext4 -q -F -L foreign @DISK@")
        .disk(),
    );
    t.push(
        Case::new(
            "disk_xfs",
            3,
            &["@DISK@", "xfs", "--force"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .setup("mkfs.xfs -q -f @DISK@")
        .disk_of(XFS_DISK),
    );
    t.push(
        Case::new(
            "disk_swap",
            3,
            &["@DISK@", "swap", "--force"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .setup("mkswap -q @DISK@ >/dev/null")
        .disk(),
    );
    t.push(
        Case::new(
            "disk_swap_active",
            3,
            &["@DISK@", "in use as swap"],
            up(&[&["--disk", "@DISK@", "--force"], KEY]),
        )
        .setup("mkswap -q @DISK@ >/dev/null\nswapon @DISK@")
        .cleanup("swapoff @DISK@")
        .disk(),
    );
    t.push(
        Case::new(
            "disk_other_luks2",
            3,
            &["@DISK@", "LUKS2", "not made by secretfs", "--force"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .setup(
            "head -c 64 /dev/urandom > @DIR@/k
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file @DIR@/k @DISK@",
        )
        .disk(),
    );
    t.push(
        Case::new(
            "disk_luks1",
            3,
            &["@DISK@", "LUKS1", "--force"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .setup(
            "head -c 64 /dev/urandom > @DIR@/k
cryptsetup luksFormat --batch-mode --type luks1 --pbkdf-force-iterations 1000 --key-file @DIR@/k @DISK@",
        )
        .disk(),
    );
    t.push(
        Case::new(
            "disk_mounted",
            3,
            &["@DISK@", "mounted at @DIR@/m"],
            up(&[&["--disk", "@DISK@", "--force"], KEY]),
        )
        // Read-only: a mounted ext4 that the kernel writes to would change
        // the bytes compared, whatever secretfs does.
        .setup("mkfs.ext4 -q -F @DISK@\nmkdir @DIR@/m\nmount -o ro @DISK@ @DIR@/m")
        .cleanup("umount @DIR@/m")
        .disk(),
    );
    t.push(
        Case::new(
            "disk_held_by_crypt",
            3,
            &["@DISK@", "held by", "h_holder"],
            up(&[&["--disk", "@DISK@", "--force"], KEY]),
        )
        .setup(
            "head -c 64 /dev/urandom > @DIR@/k
cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file @DIR@/k @DISK@ h_holder",
        )
        .cleanup("cryptsetup close h_holder")
        .disk(),
    );
    t.push(
        Case::new(
            "disk_held_by_linear",
            3,
            &["@DISK@", "held by", "h_linear"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        .setup("dmsetup create h_linear --table \"0 $(blockdev --getsz @DISK@) linear @DISK@ 0\"")
        .cleanup("dmsetup remove h_linear")
        .disk(),
    );
    t.push(
        Case::new(
            "mount_point_in_use",
            3,
            &["@DIR@/busy", "already in use"],
            up(&[&["--disk", "@DISK@", "--mount", "@DIR@/busy"], KEY]),
        )
        .setup("mkdir @DIR@/busy\nmount -t tmpfs -o size=1M tmpfs @DIR@/busy")
        .cleanup("umount @DIR@/busy")
        .disk(),
    );
    t.push(
        Case::new(
            "mount_point_is_file",
            3,
            &["@DIR@/f", "not a directory"],
            up(&[&["--disk", "@DISK@", "--mount", "@DIR@/f"], KEY]),
        )
        .setup("echo not-a-directory > @DIR@/f")
        .disk(),
    );
    t.push(
        Case::new(
            "name_taken",
            3,
            &["/dev/mapper/h_taken", "already open on another device"],
            up(&[&["--disk", "@DISK@", "--name", "h_taken"], KEY]),
        )
        .setup(
            "printf 'a typed passphrase\\n' > @DIR@/pass
\"$SECRETFS\" up --disk @DISK2@ --name h_taken --mount @DIR@/t --passphrase-file @DIR@/pass --pbkdf pbkdf2",
        )
        .cleanup("\"$SECRETFS\" down --name h_taken")
        .disk()
        .disk(),
    );
    t.push(
        Case::new(
            "name_taken_not_luks",
            3,
            &["/dev/mapper/h_plain", "not a LUKS2 volume"],
            up(&[&["--disk", "@DISK@", "--name", "h_plain"], KEY]),
        )
        .setup(
            "truncate -s 16M @DIR@/p.img
head -c 64 /dev/urandom > @DIR@/k
cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file @DIR@/k @DIR@/p.img h_plain",
        )
        .cleanup("cryptsetup close h_plain")
        .disk(),
    );
    t.push(
        Case::new(
            "file_full_fs",
            3,
            &["@DIR@/small/v.img", "MiB free", "--size"],
            up(&[&["--file", "@DIR@/small/v.img", "--size", "64M"], KEY]),
        )
        .setup(
            "mkdir @DIR@/small
mount -t tmpfs -o size=16M tmpfs @DIR@/small
dd if=/dev/zero of=@DIR@/small/fill bs=1M status=none 2>/dev/null || true
test \"$(df --output=avail -B1 @DIR@/small | tail -n1)\" -lt 1048576",
        )
        .cleanup("umount @DIR@/small")
        .watch("@DIR@/small/v.img"),
    );

    // ---- "blank" is proven: foreign data without a signature, exit 3 ----
    t.push(
        Case::new(
            "file_random_data",
            3,
            &["@DIR@/v.img", "non-zero data", "no known signature", "--force"],
            up(&[&["--file", "@DIR@/v.img"], KEY]),
        )
        // A closed plain dm-crypt volume, an archive: noise from byte 0.
        .setup("truncate -s 64M @DIR@/v.img\nhead -c 2097152 /dev/urandom | dd of=@DIR@/v.img conv=notrunc status=none")
        .watch("@DIR@/v.img"),
    );
    t.push(
        Case::new(
            "disk_gpt_first_mib_zeroed",
            3,
            &["@DISK@", "non-zero data", "--force"],
            up(&[&["--disk", "@DISK@"], KEY]),
        )
        // The primary GPT is gone; the backup GPT at the end remains.
        .setup(
            "printf 'label: gpt\\n,,L\\n' | sfdisk -q --no-reread @DISK@ >/dev/null
dd if=/dev/zero of=@DISK@ bs=1M count=1 conv=notrunc,fsync status=none",
        )
        .disk(),
    );
    t.push(
        Case::new(
            "file_ext4_at_offset",
            3,
            &["@DIR@/v.img", "non-zero data", "offset 1049", "--force"],
            up(&[&["--file", "@DIR@/v.img"], KEY]),
        )
        // A filesystem that starts 1 MiB in, with no partition table.
        .setup("truncate -s 64M @DIR@/v.img\nmkfs.ext4 -q -F -E offset=1048576 @DIR@/v.img 32M")
        .watch("@DIR@/v.img"),
    );
    t.push(
        Case::new(
            "file_with_data",
            3,
            &["@DIR@/db.img", "non-zero data", "--force"],
            up(&[&["--file", "@DIR@/db.img"], KEY]),
        )
        // An existing database or archive file named by mistake.
        .setup(
            "truncate -s 64M @DIR@/db.img
head -c 65536 /dev/urandom | dd of=@DIR@/db.img bs=1M seek=20 conv=notrunc status=none",
        )
        .watch("@DIR@/db.img"),
    );

    // ---- settings that must not reach the disk (file targets: the main
    //      boot has no virtio names left) ----
    let blank = |name, code, words: &[&str], args: &[&str]| {
        Case::new(
            name,
            code,
            words,
            up(&[&["--file", "@DIR@/v.img"], args, KEY]),
        )
        .watch("@DIR@/v.img")
    };
    t.push(
        Case::new(
            "config_group_writable",
            2,
            &["@DIR@/c.toml", "writable by its group", "chmod go-w"],
            up(&[&["--config", "@DIR@/c.toml"], KEY]),
        )
        .setup(
            "truncate -s 64M @DIR@/v.img
printf 'file = \"@DIR@/v.img\"\\nforce = true\\n' > @DIR@/c.toml
chmod 664 @DIR@/c.toml",
        )
        .watch("@DIR@/v.img"),
    );
    t.push(
        Case::new(
            "config_not_owned_by_root",
            2,
            &["@DIR@/c.toml", "uid 4242", "chown root:root"],
            up(&[&["--config", "@DIR@/c.toml"], KEY]),
        )
        .setup(
            "truncate -s 64M @DIR@/v.img
printf 'file = \"@DIR@/v.img\"\\n' > @DIR@/c.toml
chown 4242 @DIR@/c.toml",
        )
        .watch("@DIR@/v.img"),
    );
    t.push(
        blank(
            "config_force_is_for_its_own_target",
            3,
            &["@DIR@/v.img", "ext4", "--force"],
            &["--config", "@DIR@/c.toml"],
        )
        .setup(
            "truncate -s 64M @DIR@/v.img @DIR@/other.img
mkfs.ext4 -q -F @DIR@/v.img
printf 'file = \"@DIR@/other.img\"\\nforce = true\\n' > @DIR@/c.toml",
        ),
    );
    t.push(
        Case::new(
            "config_force_no_force_flag",
            3,
            &["@DIR@/v.img", "ext4", "--force"],
            up(&[&["--config", "@DIR@/c.toml", "--no-force"], KEY]),
        )
        .setup(
            "truncate -s 64M @DIR@/v.img
mkfs.ext4 -q -F @DIR@/v.img
printf 'file = \"@DIR@/v.img\"\\nforce = true\\n' > @DIR@/c.toml",
        )
        .watch("@DIR@/v.img"),
    );
    t.push(
        blank(
            "mount_system_dir",
            3,
            &["/etc", "system directory"],
            &["--mount", "/etc"],
        )
        .setup("truncate -s 64M @DIR@/v.img"),
    );
    t.push(
        blank(
            "mount_system_dir_by_symlink",
            3,
            &["@DIR@/usr", "system directory /usr"],
            &["--mount", "@DIR@/usr"],
        )
        .setup("truncate -s 64M @DIR@/v.img\nln -s /usr @DIR@/usr"),
    );
    t.push(
        blank(
            "mount_point_not_empty",
            3,
            &["@DIR@/full", "not empty", "--mount-nonempty"],
            &["--mount", "@DIR@/full"],
        )
        .setup("truncate -s 64M @DIR@/v.img\nmkdir @DIR@/full\necho written-while-down > @DIR@/full/data"),
    );
    t.push(
        Case::new(
            "down_not_root",
            2,
            &["needs root"],
            strs(&["down", "--name", "h_open"]),
        )
        .wrap("setpriv --reuid=65534 --regid=65534 --clear-groups")
        .setup(
            "printf 'a typed passphrase\\n' > @DIR@/pass
\"$SECRETFS\" up --file @DIR@/v.img --size 64M --name h_open --mount @DIR@/o --passphrase-file @DIR@/pass --pbkdf pbkdf2",
        )
        .cleanup("\"$SECRETFS\" down --name h_open")
        .watch("@DIR@/v.img"),
    );

    // ---- the key cannot be had: exit 4, nothing written ----
    let key = |name, words: &[&str], args: &[&str]| {
        Case::new(name, 4, words, up(&[&["--disk", "@DISK@"], args])).disk()
    };
    // On a loop file that must not be created.
    let key_file = |name, words: &[&str], args: &[&str]| {
        Case::new(
            name,
            4,
            words,
            up(&[&["--file", "@DIR@/v.img", "--size", "64M"], args]),
        )
        .watch("@DIR@/v.img")
    };
    t.push(key(
        "s3_missing_object",
        &["hardening/missing.bin", "does not exist"],
        &[&["--wrapped-key", "@MISSING@"], CTX, TIMEOUT].concat(),
    ));
    t.push(key(
        "s3_wrong_bucket_owner",
        &["AccessDenied", "--expected-bucket-owner"],
        &[KEY, &["--expected-bucket-owner", "999999999999"]].concat(),
    ));
    t.push(key(
        "s3_access_denied",
        &["AccessDenied", "s3:GetObject"],
        &[&["--wrapped-key", "@S3DENIED@"], CTX, TIMEOUT].concat(),
    ));
    t.push(key(
        "kms_access_denied",
        &["AccessDeniedException", "kms:Decrypt"],
        &[
            "--wrapped-key",
            "@KMSDENIED@",
            "--encryption-context",
            DENIED_CONTEXT,
            "--timeout",
            "20s",
        ],
    ));
    t.push(key(
        "kms_wrong_context",
        &["InvalidCiphertextException", "--encryption-context"],
        &[
            "--wrapped-key",
            "@GOOD@",
            "--encryption-context",
            "purpose=other",
            "--timeout",
            "20s",
        ],
    ));
    t.push(key(
        "kms_other_key",
        &["--kms-key-id"],
        &[
            &["--wrapped-key", "@OTHERKEY@", "--kms-key-id", "@KEYID@"],
            CTX,
            TIMEOUT,
        ]
        .concat(),
    ));
    t.push(key(
        "blob_corrupted",
        &["InvalidCiphertextException", "corrupted"],
        &[&["--wrapped-key", "@CORRUPTED@"], CTX, TIMEOUT].concat(),
    ));
    t.push(key_file(
        "kms_no_context",
        &["InvalidCiphertextException", "--encryption-context"],
        &["--wrapped-key", "@GOOD@", "--timeout", "20s"],
    ));
    t.push(key_file(
        "blob_truncated_short",
        &["40 bytes", "truncated"],
        &[&["--wrapped-key", "@SHORT@"], CTX, TIMEOUT].concat(),
    ));
    t.push(key_file(
        "blob_truncated",
        &["InvalidCiphertextException"],
        &[&["--wrapped-key", "@TRUNCATED@"], CTX, TIMEOUT].concat(),
    ));
    t.push(key_file(
        "blob_oversized",
        &["17408 bytes", "right object"],
        &[&["--wrapped-key", "@OVERSIZED@"], CTX, TIMEOUT].concat(),
    ));
    t.push(key_file(
        "blob_file_missing",
        &["@DIR@/none.bin", "does not exist"],
        &[&["--wrapped-key", "@DIR@/none.bin"], CTX, TIMEOUT].concat(),
    ));
    t.push(
        key_file(
            "blob_file_empty",
            &["0 bytes"],
            &[&["--wrapped-key", "@DIR@/empty.bin"], CTX, TIMEOUT].concat(),
        )
        .setup(": > @DIR@/empty.bin"),
    );
    t.push(
        key_file(
            "blob_bad_base64",
            &["base64"],
            &[&["--wrapped-key", "@DIR@/b64.txt"], CTX, TIMEOUT].concat(),
        )
        .setup("printf 'QUJD=QUJD\\n' > @DIR@/b64.txt"),
    );
    // An existing secretfs volume (sealed with @GOOD@) and the wrong key.
    t.push(
        Case::new(
            "ours_plaintext_passphrase",
            4,
            &["does not open", "@OURS@", "header was not changed"],
            up(&[&["--disk", "@OURS@", "--passphrase-file", "@DIR@/pass"]]),
        )
        .setup("printf 'not the KMS key\\n' > @DIR@/pass")
        .watch("@OURS@"),
    );
    t.push(
        Case::new(
            "ours_wrong_key",
            4,
            &["does not open", "@OURS@", "header was not changed"],
            up(&[
                &["--disk", "@OURS@", "--wrapped-key", "@WRONG@"],
                CTX,
                TIMEOUT,
            ]),
        )
        .watch("@OURS@"),
    );
    t.push(
        Case::new(
            "ours_wrong_context",
            4,
            &["InvalidCiphertextException", "--encryption-context"],
            up(&[&[
                "--disk",
                "@OURS@",
                "--wrapped-key",
                "@GOOD@",
                "--encryption-context",
                "purpose=other",
                "--timeout",
                "20s",
            ]]),
        )
        .watch("@OURS@"),
    );

    // ---- the kernel says no: exit 1 (a boot without dm-crypt) ----
    // The guest must really lack dm-crypt, and be unable to load it.
    const NO_DM_CRYPT_CHECK: &str = "\
if grep -q '^dm_crypt ' /proc/modules; then echo 'dm_crypt is loaded'; exit 1; fi
if modprobe dm-crypt; then echo 'modprobe dm-crypt worked'; exit 1; fi
if dmsetup targets | grep -q '^crypt '; then echo 'the crypt target exists'; exit 1; fi
printf 'a typed passphrase\\n' > @DIR@/pass";
    t.push(
        Case::new(
            "no_dm_crypt_disk",
            1,
            &["dm-crypt"],
            up(&[&[
                "--disk",
                "@DISK@",
                "--passphrase-file",
                "@DIR@/pass",
                "--pbkdf",
                "pbkdf2",
            ]]),
        )
        .setup(NO_DM_CRYPT_CHECK)
        .disk()
        .boot(Boot::NoDmCrypt),
    );
    t.push(
        Case::new(
            "no_dm_crypt_file",
            1,
            &["dm-crypt"],
            up(&[&[
                "--file",
                "@DIR@/v.img",
                "--size",
                "64M",
                "--passphrase-file",
                "@DIR@/pass",
                "--pbkdf",
                "pbkdf2",
            ]]),
        )
        .setup(NO_DM_CRYPT_CHECK)
        .watch("@DIR@/v.img")
        .boot(Boot::NoDmCrypt),
    );
    t
}

/// Placeholder values for one case.
#[derive(Clone, Debug, Default)]
struct Places(Vec<(String, String)>);

impl Places {
    fn set(&mut self, key: &str, value: impl Into<String>) {
        let k = format!("@{key}@");
        self.0.retain(|(kk, _)| *kk != k);
        self.0.push((k, value.into()));
    }

    /// `s` with every placeholder replaced; panics on one left over.
    fn fill(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (k, v) in &self.0 {
            out = out.replace(k, v);
        }
        for (i, _) in out.match_indices('@') {
            let rest = &out[i + 1..];
            if let Some(j) = rest.find('@') {
                let name = &rest[..j];
                assert!(
                    name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
                    "placeholder @{name}@ has no value in {s:?}"
                );
            }
        }
        out
    }
}

/// The S3 objects the key cases use.
struct Objects {
    uris: Vec<(&'static str, String)>,
    key_id: String,
}

impl Objects {
    fn places(&self, p: &mut Places) {
        for (k, v) in &self.uris {
            p.set(k, v.clone());
        }
        p.set("KEYID", self.key_id.clone());
    }

    /// Made-up values for runs that never reach S3 (the host cases).
    fn offline() -> Objects {
        let names = [
            "GOOD",
            "WRONG",
            "MISSING",
            "OTHERKEY",
            "S3DENIED",
            "KMSDENIED",
            "CORRUPTED",
            "SHORT",
            "TRUNCATED",
            "OVERSIZED",
        ];
        Objects {
            uris: names
                .iter()
                .map(|n| {
                    (
                        *n,
                        format!("s3://secretfs-test/hardening/{}.bin", n.to_lowercase()),
                    )
                })
                .collect(),
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        }
    }

    /// Seals and stores them in moto (directly, not through the proxy).
    fn create(moto: &Moto) -> Objects {
        let ctx = [("purpose", "hardening")];
        let denied_ctx = [("purpose", "hardening-denied")];
        moto.encrypt_to_object(
            "hardening/good.bin",
            &moto.key_id,
            &aws::random_bytes(64),
            &ctx,
            false,
        );
        moto.encrypt_to_object(
            "hardening/wrong.bin",
            &moto.key_id,
            &aws::random_bytes(64),
            &ctx,
            false,
        );
        moto.encrypt_to_object(
            "hardening/other-key.bin",
            &moto.other_key_id,
            &aws::random_bytes(64),
            &ctx,
            false,
        );
        moto.encrypt_to_object(
            "hardening/kms-deny.bin",
            &moto.key_id,
            &aws::random_bytes(64),
            &denied_ctx,
            false,
        );
        let good = moto
            .get_object("hardening/good.bin")
            .expect("the good blob");
        assert!(good.len() > 100, "a moto blob of {} bytes", good.len());
        moto.put_object(&format!("hardening/{DENY_MARKER}/key.bin"), &good);
        let mut corrupted = good.clone();
        let n = corrupted.len();
        corrupted[n - 5] ^= 0x5a;
        corrupted[n / 2] ^= 0xa5;
        moto.put_object("hardening/corrupted.bin", &corrupted);
        moto.put_object("hardening/short.bin", &good[..40]);
        moto.put_object("hardening/truncated.bin", &good[..n - 16]);
        moto.put_object("hardening/oversized.bin", &aws::random_bytes(17 * 1024));
        assert!(
            !moto.s3_uri("hardening/kms-deny.bin").contains(DENY_MARKER),
            "the KMS-denied blob must be fetchable"
        );
        Objects {
            uris: vec![
                ("GOOD", moto.s3_uri("hardening/good.bin")),
                ("WRONG", moto.s3_uri("hardening/wrong.bin")),
                ("MISSING", moto.s3_uri("hardening/missing.bin")),
                ("OTHERKEY", moto.s3_uri("hardening/other-key.bin")),
                (
                    "S3DENIED",
                    moto.s3_uri(&format!("hardening/{DENY_MARKER}/key.bin")),
                ),
                ("KMSDENIED", moto.s3_uri("hardening/kms-deny.bin")),
                ("CORRUPTED", moto.s3_uri("hardening/corrupted.bin")),
                ("SHORT", moto.s3_uri("hardening/short.bin")),
                ("TRUNCATED", moto.s3_uri("hardening/truncated.bin")),
                ("OVERSIZED", moto.s3_uri("hardening/oversized.bin")),
            ],
            key_id: moto.key_id.clone(),
        }
    }
}

/// What one run left.
#[derive(Debug, Default)]
struct Outcome {
    setup_rc: Option<i32>,
    setup_log: String,
    rc: Option<i32>,
    stderr: String,
    before: String,
    after: String,
    ms: u64,
    /// The whole case in the guest: setup, fingerprints, run, cleanup.
    wall_ms: u64,
}

/// The error line of a run's stderr, or why there is not exactly one.
/// Log lines (timestamped or leveled) may precede it; clap's usage
/// trailer (blank line, `Usage:`, tips) may follow a clap `error:` line.
fn error_line(stderr: &str) -> Result<String, String> {
    let mut errors = Vec::new();
    let mut stray = Vec::new();
    let mut clap_trailer = false;
    for raw in stderr.lines() {
        let line = aws::strip_ansi(raw);
        if clap_trailer {
            continue;
        }
        if line.starts_with("secretfs: error: ") {
            errors.push(line);
        } else if line.starts_with("error: ") {
            errors.push(line);
            clap_trailer = true;
        } else if !line.trim().is_empty() && !aws::is_log_line(&line) {
            stray.push(line);
        }
    }
    match (errors.len(), stray.is_empty()) {
        (1, true) => Ok(errors.remove(0)),
        (n, _) => Err(format!(
            "{n} error lines and {} other non-log lines (wanted one error line): errors {errors:?}, others {stray:?}",
            stray.len()
        )),
    }
}

/// The problems of one case's outcome (empty: it passed).
fn judge(case: &Case, places: &Places, o: &Outcome) -> Vec<String> {
    let mut p = Vec::new();
    if o.setup_rc != Some(0) {
        p.push(format!(
            "SETUP FAILED (rc {:?}); the case did not run as meant:\n{}",
            o.setup_rc,
            o.setup_log.trim_end()
        ));
        return p;
    }
    if o.rc != Some(case.expect) {
        p.push(format!("exit code {:?}, README says {}", o.rc, case.expect));
    }
    match error_line(&o.stderr) {
        Ok(line) => {
            let lower = line.to_lowercase();
            for w in &case.words {
                let w = places.fill(w);
                if !lower.contains(&w.to_lowercase()) {
                    p.push(format!("the error line lacks {w:?}"));
                }
            }
        }
        Err(e) => p.push(e),
    }
    if o.before.trim().is_empty() || o.before != o.after {
        p.push(format!(
            "the target {} changed: before {:?}, after {:?}",
            places.fill(&case.watch),
            o.before.trim(),
            o.after.trim()
        ));
    }
    p
}

/// Judges every case, prints and saves the report, and panics listing the
/// failures.
fn report(title: &str, dir: &Path, results: &[(&Case, Places, Outcome)], extra: &str) {
    let mut text = String::new();
    let mut failed = Vec::new();
    let mut failed_text = String::new();
    for (case, places, o) in results {
        let problems = judge(case, places, o);
        let line = error_line(&o.stderr).unwrap_or_else(|_| {
            o.stderr
                .lines()
                .filter(|l| !aws::is_log_line(l))
                .collect::<Vec<_>>()
                .join(" | ")
        });
        let mut entry = format!(
            "{} {:<26} want {} got {:<4} {:>6}ms  {}\n",
            if problems.is_empty() { "PASS" } else { "FAIL" },
            case.name,
            case.expect,
            o.rc.map_or("-".into(), |c| c.to_string()),
            o.ms,
            line
        );
        for pr in &problems {
            let _ = writeln!(entry, "       ! {pr}");
        }
        if !problems.is_empty() {
            failed.push(case.name);
            failed_text.push_str(&entry);
        }
        text.push_str(&entry);
    }
    let secs =
        |f: fn(&Outcome) -> u64| results.iter().map(|(_, _, o)| f(o)).sum::<u64>() as f64 / 1000.0;
    let summary = format!(
        "{title}: {} cases, {} passed, {} failed; {:.1}s in secretfs runs of {:.1}s for the cases with their setup, fingerprints and cleanup{}\n",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        secs(|o| o.ms),
        secs(|o| o.wall_ms),
        extra
    );
    text.push_str(&summary);
    let _ = fs::write(dir.join("report.txt"), &text);
    eprintln!("{text}");
    assert!(
        failed.is_empty(),
        "{title}: {} of {} cases failed: {failed:?}\n{failed_text}(all cases: {})",
        failed.len(),
        results.len(),
        dir.join("report.txt").display()
    );
}

// ---- the guest side ---------------------------------------------------------

/// Helpers of the generated script.
const GUEST_LIB: &str = r#"
# Every exec is slow in an emulated guest: these helpers use bash builtins
# where they can.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /run/h /mnt/h "$VM_OUT/c" "$VM_OUT/prep"
# fp PATH: "size=N first=SHA last=SHA" of the first and last MiB, or what
# the path is when it is not a block device or regular file.
fp() {
  local p=$1 size flag sectors
  if [ -b "$p" ]; then
    read -r sectors < "/sys/class/block/${p##*/}/size" || return 1
    size=$((sectors * 512)); flag=iflag=direct,skip_bytes
  elif [ -f "$p" ] && [ ! -L "$p" ]; then size=$(stat -c %s "$p"); flag=iflag=skip_bytes
  elif [ -e "$p" ] || [ -L "$p" ]; then echo "exists: $(stat -c '%F %s %Y' "$p")"; return
  else echo absent; return
  fi
  local n=1048576 off=0 first last
  [ "$size" -gt "$n" ] && off=$((size - n))
  first=$(dd if="$p" bs=$n count=1 "$flag" status=none | sha256sum)
  last=$(dd if="$p" bs=$n count=1 skip=$off "$flag" status=none | sha256sum)
  echo "size=$size first=${first%% *} last=${last%% *}"
}
# run_case DIR CMD...: CMD's rc, stdout, stderr and time into DIR.
run_case() {
  local o=$1 rc=0 t0 t1 line= l
  shift
  t0=${EPOCHREALTIME/[.,]/}
  timeout -s KILL @LIMIT@ "$@" > "$o/stdout" 2> "$o/stderr" < /dev/null || rc=$?
  t1=${EPOCHREALTIME/[.,]/}
  echo "$rc" > "$o/rc"
  echo $(((t1 - t0) / 1000)) > "$o/ms"
  while IFS= read -r l; do
    case $l in "secretfs: error: "* | "error: "*) line=$l; break ;; esac
  done < "$o/stderr"
  echo "CASE ${o##*/} rc=$rc $(((t1 - t0) / 1000))ms $line"
}
# Undoes what a case that wrongly succeeded left: its mounts and mappings.
sweep() {
  local dev mnt rest i name
  local -a mnts=()
  while read -r dev mnt rest; do
    case $mnt in /mnt/h/*) mnts+=("$mnt") ;; esac
  done < /proc/mounts
  for ((i = ${#mnts[@]} - 1; i >= 0; i--)); do
    echo "sweep: unmounting ${mnts[i]}"; umount -l "${mnts[i]}"
  done
  while read -r name rest; do
    case $name in
      h_*) echo "sweep: closing $name"; cryptsetup close "$name" 2>/dev/null || dmsetup remove "$name" ;;
    esac
  done < <(dmsetup ls 2>/dev/null)
}
"#;

/// Writes the guest script for `cases` and returns it with each case's
/// placeholders and the disks to attach.
fn guest_plan<'a>(
    cases: &[&'a Case],
    base: &Places,
    work: &Path,
    shared: &[(&str, u64, &str)],
) -> (String, Vec<(&'a Case, Places)>, Vec<Disk>) {
    let mut disks = Vec::new();
    let mut next = 0u8;
    let mut alloc = |label: &str, size: u64, disks: &mut Vec<Disk>| -> String {
        assert!(next < 26, "more than 26 virtio disks");
        let img = work.join(format!("{label}.img"));
        vm::sparse_file(&img, size);
        disks.push(Disk::virtio(&img));
        let dev = format!("/dev/vd{}", (b'a' + next) as char);
        next += 1;
        dev
    };
    let mut base = base.clone();
    let mut script = GUEST_LIB.replace("@LIMIT@", &RUN_LIMIT_SECS.to_string());
    script.push_str("\n# ---- shared disks\n");
    for (label, size, prep) in shared {
        let dev = alloc(label, *size, &mut disks);
        base.set(&label.to_uppercase(), dev);
        let _ = write!(
            script,
            "( set -e\n{}\n) > \"$VM_OUT/prep/{label}.log\" 2>&1; echo $? > \"$VM_OUT/prep/{label}.rc\"\n\
             echo \"PREP {label} rc=$(cat \"$VM_OUT/prep/{label}.rc\")\"\n",
            base.fill(prep)
        );
    }
    let mut planned = Vec::new();
    for case in cases {
        let mut p = base.clone();
        p.set("DIR", format!("/run/h/{}", case.name));
        p.set("NAME", format!("h_{}", case.name));
        p.set("MNT", format!("/mnt/h/{}", case.name));
        for (i, size) in case.disks.iter().enumerate() {
            let dev = alloc(&format!("{}-{}", case.name, i + 1), *size, &mut disks);
            p.set(if i == 0 { "DISK" } else { "DISK2" }, dev);
        }
        let out = format!("\"$VM_OUT/c/{}\"", case.name);
        let argv: Vec<String> = case.argv.iter().map(|a| shell_quote(&p.fill(a))).collect();
        let watch = shell_quote(&p.fill(&case.watch));
        let _ = write!(
            script,
            "\n# ---- {name}\nc0=${{EPOCHREALTIME/[.,]/}}\nmkdir -p {out} /run/h/{name}\n\
             ( set -e\n{setup}\n) > {out}/setup.log 2>&1; echo $? > {out}/setup.rc\n\
             fp {watch} > {out}/before\n\
             run_case {out} {wrap} \"$SECRETFS\" {argv}\n\
             fp {watch} > {out}/after\n\
             ( {cleanup}\n) >> {out}/setup.log 2>&1\nsweep\n\
             echo $(((${{EPOCHREALTIME/[.,]/}} - c0) / 1000)) > {out}/wall_ms\n",
            name = case.name,
            setup = if case.setup.is_empty() {
                ":".into()
            } else {
                p.fill(&case.setup)
            },
            wrap = case.wrap,
            argv = argv.join(" "),
            cleanup = if case.cleanup.is_empty() {
                ":".into()
            } else {
                p.fill(&case.cleanup)
            },
        );
        planned.push((*case, p));
    }
    script.push_str("\necho HARDENING-DONE\n");
    (script, planned, disks)
}

fn read_outcome(out: &Path, case: &str) -> Outcome {
    let dir = out.join("c").join(case);
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    let num = |f: &str| read(f).trim().parse::<i32>().ok();
    Outcome {
        setup_rc: num("setup.rc"),
        setup_log: read("setup.log"),
        rc: num("rc"),
        stderr: read("stderr"),
        before: read("before"),
        after: read("after"),
        ms: read("ms").trim().parse().unwrap_or(0),
        wall_ms: read("wall_ms").trim().parse().unwrap_or(0),
    }
}

/// The guest's environment: static fake credentials (moto takes any), the
/// endpoint (the fault proxy on the host), no instance metadata.
fn aws_env() -> Vec<(String, String)> {
    let (id, secret) = aws::fake_credentials();
    [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL", vm::ENDPOINT_URL),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("NO_COLOR", "1"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// Boots one guest for the cases of `boot` and judges them.
fn run_boot(boot: Boot, dir_name: &str) {
    let all = table();
    let cases: Vec<&Case> = all.iter().filter(|c| c.boot == boot).collect();
    let work = vm::work_dir(dir_name);
    let (moto, proxy, objects) = if boot == Boot::Main {
        let moto = Moto::start();
        let objects = Objects::create(&moto);
        let proxy = Proxy::start(moto.port, &["--deny-marker", DENY_MARKER]);
        (Some(moto), Some(proxy), objects)
    } else {
        (None, None, Objects::offline())
    };
    let mut base = Places::default();
    objects.places(&mut base);
    let ours_prep = "\"$SECRETFS\" up --disk @OURS@ --name h_ours --mount /mnt/h/ours \
                     --wrapped-key @GOOD@ --encryption-context purpose=hardening --timeout 60s\n\
                     \"$SECRETFS\" down --name h_ours\n\
                     cryptsetup isLuks @OURS@";
    let gpt_prep = "printf 'label: gpt\\n,,L\\n' | sfdisk -q @GPT@\n\
                    for i in $(seq 100); do [ -b @GPT@1 ] && break; sleep 0.1; done\n\
                    test -b @GPT@1";
    let flag_prep = "dd if=/dev/urandom of=@FLAGDISK@ bs=1M count=1 status=none\n\
                     dd if=/dev/urandom of=@FLAGDISK@ bs=1M count=1 seek=63 status=none";
    let shared: Vec<(&str, u64, &str)> = if boot == Boot::Main {
        vec![
            ("flagdisk", DISK, flag_prep),
            ("ours", DISK, ours_prep),
            ("gpt", DISK, gpt_prep),
        ]
    } else {
        Vec::new()
    };
    let (script, planned, disks) = guest_plan(&cases, &base, &work, &shared);
    let mut spec = VmSpec::new(dir_name, &script);
    spec.disks = disks;
    spec.env = aws_env();
    spec.timeout = Duration::from_secs(1200);
    if let Some(p) = &proxy {
        spec.endpoint_port = Some(p.port);
    }
    if boot == Boot::NoDmCrypt {
        spec.skip_modules = vec!["dm-crypt".into()];
    }
    let run = vm::run(&spec);
    let mut prep_problems = Vec::new();
    for (label, _, _) in &shared {
        let rc = fs::read_to_string(run.out_dir.join("prep").join(format!("{label}.rc")))
            .unwrap_or_default();
        if rc.trim() != "0" {
            prep_problems.push(format!(
                "shared disk {label}: preparation failed (rc {:?}):\n{}",
                rc.trim(),
                fs::read_to_string(run.out_dir.join("prep").join(format!("{label}.log")))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        run.console.contains("HARDENING-DONE") && !run.timed_out,
        "the guest script did not finish (exit {:?}, timed out {})\n{}",
        run.exit_code,
        run.timed_out,
        run.console_tail(60)
    );
    let results: Vec<(&Case, Places, Outcome)> = planned
        .into_iter()
        .map(|(c, p)| {
            let o = read_outcome(&run.out_dir, c.name);
            (c, p, o)
        })
        .collect();
    if let Some(p) = &proxy {
        let _ = fs::write(work.join("proxy.log"), p.log());
    }
    drop(moto);
    let extra = format!(
        "; VM boot {:.1}s, whole run {:.1}s{}",
        run.boot_time.map_or(0.0, |d| d.as_secs_f64()),
        run.elapsed.as_secs_f64(),
        if prep_problems.is_empty() {
            String::new()
        } else {
            format!("\n{}", prep_problems.join("\n"))
        }
    );
    report(dir_name, &work, &results, &extra);
    assert!(prep_problems.is_empty(), "{}", prep_problems.join("\n"));
}

// ---- the tests -----------------------------------------------------------

#[test]
fn the_table_is_well_formed() {
    let t = table();
    let mut names = BTreeSet::new();
    for c in &t {
        assert!(names.insert(c.name), "case {} twice", c.name);
        assert!(
            c.name
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
                && c.name.len() <= 40,
            "case name {:?}",
            c.name
        );
        assert!(!c.watch.is_empty(), "{}: nothing watched", c.name);
        assert!(
            [1, 2, 3, 4].contains(&c.expect),
            "{}: exit {}",
            c.name,
            c.expect
        );
        assert!(!c.words.is_empty(), "{}: no words", c.name);
        assert!(c.disks.len() <= 2, "{}: more than two disks", c.name);
        if c.host {
            assert!(
                c.setup.is_empty() && c.disks.is_empty() && c.wrap.is_empty(),
                "{}: a host case has no setup, disks or wrapper",
                c.name
            );
        }
    }
    let main = t.iter().filter(|c| c.boot == Boot::Main).count();
    assert!(main >= 40, "only {main} cases in the main boot");
    let disks: usize = t
        .iter()
        .filter(|c| c.boot == Boot::Main)
        .map(|c| c.disks.len())
        .sum();
    assert!(
        disks + 3 <= 26,
        "{} virtio disks in the main boot",
        disks + 3
    );
    // Every placeholder resolves.
    let mut p = Places::default();
    Objects::offline().places(&mut p);
    for k in [
        "DIR", "NAME", "MNT", "DISK", "DISK2", "FLAGDISK", "OURS", "GPT",
    ] {
        p.set(k, "/x");
    }
    for c in &t {
        for s in c
            .argv
            .iter()
            .chain(&c.words)
            .chain([&c.setup, &c.cleanup, &c.watch])
        {
            p.fill(s);
        }
    }
}

#[test]
fn the_error_line_rule() {
    assert_eq!(
        error_line("2026-01-01T00:00:00.1Z  INFO x\nsecretfs: error: bad\n").unwrap(),
        "secretfs: error: bad"
    );
    assert!(error_line(
        "error: invalid value 'x' for '--size <SIZE>': no\n\nFor more information, try '--help'.\n"
    )
    .is_ok());
    assert!(error_line("secretfs: error: a\nsecretfs: error: b\n").is_err());
    assert!(error_line("thread 'main' panicked at x\nsecretfs: error: b\n").is_err());
    assert!(error_line("").is_err());
}

/// The pure flag errors on the host: no root (secretfs is dropped to
/// nobody when the tests run as root), no VM; the target is an image file.
#[test]
fn bad_flags_on_the_host() {
    let dir = tempfile::Builder::new()
        .prefix("secretfs-hardening-")
        .tempdir()
        .expect("a temp dir");
    let root = dir.path();
    {
        use std::os::unix::fs::PermissionsExt;
        // So that nobody can see (and not find) the case directories.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let flagdisk = root.join("flagdisk.img");
    {
        let mut f = fs::File::create(&flagdisk).unwrap();
        f.write_all(&aws::random_bytes(MIB as usize)).unwrap();
        f.set_len(4 * MIB).unwrap();
        f.seek(SeekFrom::Start(3 * MIB)).unwrap();
        f.write_all(&aws::random_bytes(MIB as usize)).unwrap();
    }
    let as_root = nix::unistd::geteuid().is_root();
    let mut base = Places::default();
    Objects::offline().places(&mut base);
    base.set("FLAGDISK", flagdisk.to_str().unwrap());
    let all = table();
    let mut results = Vec::new();
    for case in all.iter().filter(|c| c.host) {
        let mut p = base.clone();
        let cdir = root.join(case.name);
        fs::create_dir_all(&cdir).unwrap();
        p.set("DIR", cdir.to_str().unwrap());
        p.set("NAME", format!("h_{}", case.name));
        p.set("MNT", root.join("mnt").join(case.name).to_str().unwrap());
        let watch = PathBuf::from(p.fill(&case.watch));
        let before = fingerprint(&watch);
        let mut cmd = if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_secretfs"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_secretfs"))
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("NO_COLOR", "1")
            .args(case.argv.iter().map(|a| p.fill(a)));
        let r = aws::run(cmd, Duration::from_secs(30));
        let after = fingerprint(&watch);
        results.push((
            case,
            p,
            Outcome {
                setup_rc: Some(0),
                setup_log: String::new(),
                rc: r.code,
                stderr: r.stderr(),
                before,
                after,
                ms: r.elapsed.as_millis() as u64,
                wall_ms: r.elapsed.as_millis() as u64,
            },
        ));
    }
    let n = results.len();
    assert!(n >= 30, "only {n} host cases");
    report(
        "hardening-host",
        &vm::work_dir("hardening-host"),
        &results,
        &format!(
            "; {}",
            if as_root {
                "as nobody (setpriv)"
            } else {
                "unprivileged"
            }
        ),
    );
}

/// The host-side fingerprint, in the guest's format.
fn fingerprint(p: &Path) -> String {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return "absent\n".into();
    };
    if !meta.is_file() {
        return format!("exists: {:?} {}\n", meta.file_type(), meta.len());
    }
    let size = meta.len();
    let mut f = fs::File::open(p).unwrap();
    let mut sha = |off: u64| -> String {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(off)).unwrap();
        Read::by_ref(&mut f)
            .take(MIB)
            .read_to_end(&mut buf)
            .unwrap();
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&buf)?;
                c.wait_with_output()
            })
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)[..64].to_owned()
    };
    let first = sha(0);
    let last = sha(size.saturating_sub(MIB));
    format!("size={size} first={first} last={last}\n")
}

#[test]
fn vm_bad_inputs() {
    run_boot(Boot::Main, "hardening");
}

#[test]
fn vm_bad_inputs_without_dm_crypt() {
    run_boot(Boot::NoDmCrypt, "hardening-nodmcrypt");
}
