//! The local demo behind `scripts/demo`: everything `secretfs` does on an
//! EC2 instance, on this machine. moto plays KMS and S3, a fake IMDSv2
//! plays the instance role, and a Debian kernel under QEMU plays the
//! instance, with a blank virtio disk as its instance store.
//!
//! 1. On the host: `secretfs seal` makes a random passphrase, encrypts it
//!    with KMS under an encryption context and stores the blob in S3.
//! 2. In the guest (no AWS credentials in its environment): `secretfs up`
//!    fetches and unwraps the key, formats LUKS2, opens it, makes ext4 and
//!    mounts /mnt/secretfs; a file is written; `up` again does nothing;
//!    `down`, then `up` re-opens it with the file intact; `status`.
//! 3. On the host after power-off: the file's text is not in the raw disk.

use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, Disk, VmSpec};
use crate::common::LocalAws;

#[test]
fn demo() {
    println!("\n== secretfs demo: moto (KMS + S3), a fake IMDSv2, and a Debian guest under QEMU\n");
    let aws = LocalAws::start();
    let uri = aws.seal("demo/volume-key.bin", "purpose=secretfs-demo");
    println!("sealed a random 64-byte passphrase with KMS into {uri}");

    let dir = vm::work_dir("demo");
    let disk = dir.join("instance-store.img");
    vm::sparse_file(&disk, 1 << 30);
    let text = format!("hello from secretfs {}", aws::hex(&aws::random_bytes(8)));
    let script = format!(
        r#"
S={bin}
step() {{ printf '\n---- %s\n' "$*"; }}
step "secretfs up (first boot: blank disk)"
check up_first "$S" up --disk /dev/vda --wrapped-key {uri} --encryption-context purpose=secretfs-demo
echo '{text}' > /mnt/secretfs/hello.txt && sync
step "secretfs up again (already up: no action)"
check up_again "$S" up --disk /dev/vda --wrapped-key {uri} --encryption-context purpose=secretfs-demo
step "secretfs status"
"$S" status
step "secretfs down, then up (the reboot path: re-open, data kept)"
check down "$S" down
check up_reopen "$S" up --disk /dev/vda --wrapped-key {uri} --encryption-context purpose=secretfs-demo
check file_kept grep -qx '{text}' /mnt/secretfs/hello.txt
cat /mnt/secretfs/hello.txt
df -h /mnt/secretfs
check down_final "$S" down
"#,
        bin = env!("CARGO_BIN_EXE_secretfs"),
    );
    let mut spec = VmSpec::new("demo", &script);
    spec.disks = vec![Disk::virtio(&disk)];
    aws.attach(&mut spec);
    spec.timeout = Duration::from_secs(300);
    let run = vm::run(&spec);
    run.assert_checks(&[
        "up_first",
        "up_again",
        "down",
        "up_reopen",
        "file_kept",
        "down_final",
    ]);
    let on_disk = std::process::Command::new("grep")
        .args(["-q", "-a", "-F", &text])
        .arg(&disk)
        .status()
        .unwrap();
    assert_eq!(on_disk.code(), Some(1), "the plaintext is on the raw disk");
    println!(
        "\n== demo done in {:.0}s: the volume was created, re-opened with its data, and the raw disk \
         ({}) holds no plaintext of it.\n",
        run.elapsed.as_secs_f64(),
        disk.display()
    );
}
