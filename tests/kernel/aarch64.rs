//! The aarch64 release binary on a real arm64 kernel: Debian's arm64 kernel
//! under `qemu-system-aarch64` (machine `virt`, cortex-a57, software
//! emulation), with the arm64 root scripts/setup extracts (libcryptsetup,
//! e2fsprogs, util-linux of Debian 12) in place of the host's. The binary is
//! the one in `dist/secretfs-VERSION-aarch64-linux-gnu.tar.gz`
//! (scripts/release, which scripts/test runs first).
//!
//! up on a blank virtio disk, write, down, up again: the data is back; after
//! power-off the canary is nowhere in the raw disk image.

use std::time::Duration;

use crate::common::aws::{hex, random_bytes};
use crate::common::vm::{self, Arch, Disk, VmSpec};

const SCRIPT: &str = r#"
check arch test "$(uname -m)" = aarch64
check binary_is_arm64 bash -c '"$SECRETFS" --version | grep -q "^secretfs "'
umask 077
head -c 64 /dev/urandom > /run/volume.key
check up "$SECRETFS" up --disk /dev/vda --passphrase-file /run/volume.key --pbkdf pbkdf2
check status "$SECRETFS" status
check write bash -c 'printf %s "$CANARY" > /mnt/secretfs/canary && head -c 4194304 /dev/urandom > /mnt/secretfs/random && sync'
check sums bash -c 'set -o pipefail; sha256sum /mnt/secretfs/canary /mnt/secretfs/random | cut -d" " -f1 > /run/sums \
  && test "$(wc -l < /run/sums)" = 2'
check down "$SECRETFS" down
check_fails closed test -e /dev/mapper/secretfs
check up_again "$SECRETFS" up --disk /dev/vda --passphrase-file /run/volume.key --pbkdf pbkdf2
check data_intact bash -c 'set -o pipefail; sha256sum /mnt/secretfs/canary /mnt/secretfs/random | cut -d" " -f1 | cmp -s - /run/sums'
check luks2_on_disk bash -c 'head -c 6 /dev/vda | od -An -c | grep -q "L   U   K   S"'
check down_again "$SECRETFS" down
"#;

#[test]
fn aarch64_binary_up_write_down_up_on_an_arm64_kernel() {
    let dir = vm::work_dir("aarch64");
    let (bin, _) = crate::common::release_binary("aarch64", &dir);
    let disk = dir.join("vda.img");
    vm::sparse_file(&disk, 1 << 30);
    let canary = format!("secretfs-canary-{}", hex(&random_bytes(16)));

    let mut spec = VmSpec::new("aarch64", SCRIPT);
    spec.arch = Arch::Aarch64;
    spec.binary = Some(bin);
    spec.disks = vec![Disk::virtio(&disk)];
    spec.env = vec![("CANARY".into(), canary.clone())];
    spec.timeout = Duration::from_secs(300);
    let run = vm::run(&spec);
    run.assert_checks(&[
        "arch",
        "binary_is_arm64",
        "up",
        "status",
        "write",
        "sums",
        "down",
        "closed",
        "up_again",
        "data_intact",
        "luks2_on_disk",
        "down_again",
    ]);
    vm::report(&run);
    assert!(
        !vm::image_contains(&disk, &canary),
        "the canary is readable in the raw disk image"
    );
}
