//! The real-kernel test guest works: disks (virtio and NVMe), LUKS2 with
//! dm-crypt, ext4, loop devices, the fenced network to a local moto (as IMDS
//! and as the AWS endpoint) and the output share. Needs what scripts/setup
//! installs; boots a VM under QEMU (software emulation).

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::common::aws::Moto;
use crate::common::vm::{self, Disk, VmSpec};

const NVME_SERIAL: &str = "smoke-nvme-0";

const SCRIPT: &str = r#"
check vda_exists test -b /dev/vda
check nvme_exists test -b /dev/nvme0n1
check nvme_serial test "$(tr -d ' ' < /sys/block/nvme0n1/device/serial)" = "$NVME_SERIAL"
check no_aws_env bash -c '! env | grep -q "^AWS_"'
check secretfs_visible test -x "$SECRETFS"

key=/run/smoke.key
wrong=/run/wrong.key
check key_files bash -c "umask 077; head -c 64 /dev/urandom > $key && head -c 64 /dev/urandom > $wrong \
  && test \$(stat -c %s $key) = 64 && ! cmp -s $key $wrong"
check luks_format cryptsetup luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
  --batch-mode --key-file "$key" /dev/vda
check luks_version bash -c 'cryptsetup luksDump /dev/vda | grep -Eq "^Version:[[:space:]]+2$"'
check_fails wrong_key cryptsetup open --test-passphrase --key-file "$wrong" /dev/vda
check luks_open cryptsetup open --key-file "$key" /dev/vda smoke
check dm_crypt_active bash -c 'cryptsetup status smoke | grep -Eq "cipher:[[:space:]]+aes-xts-plain64"'
check mkfs_ext4 /sbin/mkfs.ext4 -q /dev/mapper/smoke
mkdir -p /mnt/smoke
check mount mount /dev/mapper/smoke /mnt/smoke
marker=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
check write_file bash -c 'echo "$1" > /mnt/smoke/hello && sync' _ "$marker"
check umount umount /mnt/smoke
check luks_close cryptsetup close smoke
check_fails mapper_gone test -e /dev/mapper/smoke
check reopen_read bash -c "cryptsetup open --key-file $key /dev/vda smoke && mount -o ro /dev/mapper/smoke /mnt/smoke \
  && grep -qx '$marker' /mnt/smoke/hello; rc=\$?; umount /mnt/smoke; cryptsetup close smoke; exit \$rc"

truncate -s 64M /run/loop.img
check loop_attach bash -c 'dev=$(losetup -f --show /run/loop.img) && test -b "$dev" \
  && losetup "$dev" | grep -q /run/loop.img && losetup -d "$dev"'

check imds_token bash -c 'tok=$(curl -sf --max-time 20 -X PUT \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token) \
  && test -n "$tok" \
  && curl -sf --max-time 20 -H "X-aws-ec2-metadata-token: $tok" \
    http://169.254.169.254/latest/meta-data/instance-id | grep -q .'
check endpoint curl -sf --max-time 20 -o /dev/null "$VM_ENDPOINT/moto-api/"
check_fails fence curl -sf --max-time 3 -o /dev/null "http://169.254.0.2:$MOTO_PORT/moto-api/"

check out_share bash -c 'echo smoke-ok > "$VM_OUT/result"'
"#;

#[test]
fn vm_smoke() {
    let moto = Moto::start();
    let dir = vm::work_dir("smoke");
    let vda = dir.join("vda.img");
    let nvme = dir.join("nvme0.img");
    vm::sparse_file(&vda, 512 << 20);
    vm::sparse_file(&nvme, 256 << 20);

    let mut spec = VmSpec::new("smoke", SCRIPT);
    spec.disks = vec![Disk::virtio(&vda), Disk::nvme(&nvme, NVME_SERIAL)];
    spec.imds_port = Some(moto.port);
    spec.endpoint_port = Some(moto.port);
    spec.env = vec![
        ("NVME_SERIAL".into(), NVME_SERIAL.into()),
        ("MOTO_PORT".into(), moto.port.to_string()),
    ];
    spec.timeout = Duration::from_secs(240);
    let run = vm::run(&spec);

    run.assert_checks(&[
        "vda_exists",
        "nvme_exists",
        "nvme_serial",
        "no_aws_env",
        "secretfs_visible",
        "key_files",
        "luks_format",
        "luks_version",
        "wrong_key",
        "luks_open",
        "dm_crypt_active",
        "mkfs_ext4",
        "mount",
        "write_file",
        "umount",
        "luks_close",
        "mapper_gone",
        "reopen_read",
        "loop_attach",
        "imds_token",
        "endpoint",
        "fence",
        "out_share",
    ]);
    assert_eq!(
        fs::read_to_string(run.out_dir.join("result"))
            .ok()
            .as_deref(),
        Some("smoke-ok\n"),
        "the guest's file did not reach the host output directory"
    );
    let luks_magic = fs::read(&vda)
        .map(|d| d.starts_with(b"LUKS\xba\xbe"))
        .unwrap_or(false);
    assert!(
        luks_magic,
        "{} has no LUKS header after the run",
        vda.display()
    );
    eprintln!(
        "vm_smoke: guest boot {:?}, VM run {:?}",
        run.boot_time.unwrap_or_default(),
        run.elapsed
    );
}

/// The prelude's `check` helpers report failures and turn them into a
/// non-zero exit (runs bash on the host, no VM).
#[test]
fn prelude_checks() {
    let prelude = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vm/prelude.sh"))
        .expect("reading tests/vm/prelude.sh");
    let run = |body: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{prelude}\n{body}"))
            .output()
            .expect("running bash");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, out) = run("check a true\ncheck_fails b false\necho done");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("CHECK ok a\n") && out.contains("CHECK ok b\n"),
        "{out}"
    );
    assert!(!out.contains("CHECK FAIL"), "{out}");

    let (code, out) = run("check a false\ncheck_fails b true\ncheck c true\necho done");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("CHECK FAIL a (rc=1)\n"), "{out}");
    assert!(
        out.contains("CHECK FAIL b (unexpectedly succeeded)\n"),
        "{out}"
    );
    assert!(
        out.contains("CHECK ok c\n") && out.contains("done\n"),
        "{out}"
    );

    let (code, _) = run("check a true\nexit 3");
    assert_eq!(code, Some(3));
}
