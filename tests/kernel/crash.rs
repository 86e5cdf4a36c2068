//! Crash at every step, in a real kernel. The `fault-injection` build of
//! secretfs kills itself (SIGKILL) right after a named step; `up` run again
//! must converge to mounted, and a volume that held data must lose none.
//! Then the same with the power cut: every `up` pauses at its step, the VM
//! is powered off at once (sysrq `o`, no sync), and a second boot runs `up`.

use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, Disk, VmSpec};
use crate::common::LocalAws;

/// Steps of a first `up` on a file target, in order.
const FILE_POINTS: &[&str] = &[
    "key",
    "create_file",
    "attach_loop",
    "format",
    "open",
    "make_filesystem",
    "create_mount_point",
    "mount",
];
/// Steps of a re-open of a volume that holds data.
const REOPEN_POINTS: &[&str] = &["key", "attach_loop", "open", "make_filesystem", "mount"];
/// Steps of a first `up` on a disk, for the power cut.
const DISK_POINTS: &[&str] = &["format", "open", "make_filesystem", "mount"];
/// Steps of a re-open on a disk, for the power cut.
const DISK_REOPEN_POINTS: &[&str] = &["open", "make_filesystem", "mount"];

const GUEST_LIB: &str = r#"
head -c 48 /dev/urandom | base64 > /run/pass
up() { "$SECRETFS" up --passphrase-file /run/pass --pbkdf pbkdf2 "$@"; }
"#;

#[test]
fn vm_sigkill_after_every_step_converges() {
    let dir = vm::work_dir("crash-kill");
    let store = dir.join("store.img");
    vm::sparse_file(&store, 2 << 30);
    let canary = aws::hex(&aws::random_bytes(16));
    let mut script = format!(
        r#"{GUEST_LIB}
export CANARY={canary}
check mkfs_store /usr/sbin/mkfs.ext4 -q /dev/vda
mkdir -p /mnt/store && check mount_store mount /dev/vda /mnt/store
"#
    );
    let mut expected = vec!["mkfs_store".to_string(), "mount_store".to_string()];
    for (i, p) in FILE_POINTS.iter().enumerate() {
        // A first `up` on a new file, killed after step p.
        let args = format!("--file /mnt/store/k{i}.img --size 64M --name k{i} --mount /mnt/k{i}");
        script += &format!(
            r#"
SECRETFS_FAULT={p}:kill up {args} 2> "$VM_OUT/k{i}-crash.err"; echo $? > "$VM_OUT/k{i}-crash.rc"
check k{i}_killed_at_{p} test "$(cat "$VM_OUT/k{i}-crash.rc")" = 137
check k{i}_converges up {args}
check k{i}_mounted grep -q "^/dev/mapper/k{i} /mnt/k{i} ext4 " /proc/mounts
check k{i}_write sh -c 'echo "$CANARY" > /mnt/k{i}/canary && sync'
check k{i}_again up {args}
"#
        );
        for c in [
            "killed_at_".to_string() + p,
            "converges".into(),
            "mounted".into(),
            "write".into(),
            "again".into(),
        ] {
            expected.push(format!("k{i}_{c}"));
        }
    }
    // Re-opening a volume that holds data, killed after each step.
    let args = "--file /mnt/store/data.img --size 64M --name data --mount /mnt/data";
    script += &format!(
        r#"
check data_create up {args}
check data_write sh -c 'echo "$CANARY" > /mnt/data/canary && sync'
"#
    );
    expected.extend(["data_create".into(), "data_write".into()]);
    for p in REOPEN_POINTS {
        script += &format!(
            r#"
check data_down_{p} "$SECRETFS" down --name data
SECRETFS_FAULT={p}:kill up {args} 2> /dev/null; echo $? > "$VM_OUT/data-{p}.rc"
check data_killed_at_{p} test "$(cat "$VM_OUT/data-{p}.rc")" = 137
check data_converges_{p} up {args}
check data_intact_{p} grep -qx "$CANARY" /mnt/data/canary
"#
        );
        for c in ["down", "killed_at", "converges", "intact"] {
            expected.push(format!("data_{c}_{p}"));
        }
    }
    let mut spec = VmSpec::new("crash-kill", &script);
    spec.disks = vec![Disk::virtio(&store)];
    spec.timeout = Duration::from_secs(600);
    let run = vm::run(&spec);
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    run.assert_checks(&expected);
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(60));
    eprintln!(
        "crash points covered by SIGKILL: {} first-up + {} re-open, in {:.0}s",
        FILE_POINTS.len(),
        REOPEN_POINTS.len(),
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn vm_power_cut_at_every_step_converges() {
    let dir = vm::work_dir("crash-power");
    let fresh: Vec<_> = (0..DISK_POINTS.len())
        .map(|i| dir.join(format!("fresh{i}.img")))
        .collect();
    let held: Vec<_> = (0..DISK_REOPEN_POINTS.len())
        .map(|i| dir.join(format!("held{i}.img")))
        .collect();
    for img in fresh.iter().chain(&held) {
        vm::sparse_file(img, 128 << 20);
    }
    let disks: Vec<Disk> = fresh.iter().chain(&held).map(Disk::virtio).collect();
    let dev = |n: usize| format!("/dev/vd{}", (b'a' + n as u8) as char);
    let canary = aws::hex(&aws::random_bytes(16));
    // The key must survive the power cut without being stored anywhere in
    // the clear: it is KMS-wrapped in (local) S3, as in production.
    let aws = LocalAws::start();
    let uri = aws.seal("crash/volume-key.bin", "purpose=crash");
    let lib = format!(
        "export CANARY={canary}\n\
         up() {{ \"$SECRETFS\" up --wrapped-key {uri} --encryption-context purpose=crash --timeout 60s \"$@\"; }}\n"
    );

    // Boot 1: volumes with data for the re-open points, then every `up`
    // paused at its step, then the power goes.
    let mut boot1 = lib.clone();
    for (j, _) in DISK_REOPEN_POINTS.iter().enumerate() {
        let d = dev(fresh.len() + j);
        boot1 += &format!(
            "check h{j}_create up --disk {d} --name h{j} --mount /mnt/h{j}\n\
             check h{j}_write sh -c 'echo \"$CANARY\" > /mnt/h{j}/canary && sync'\n\
             check h{j}_down \"$SECRETFS\" down --name h{j}\n"
        );
    }
    let mut paused = Vec::new();
    for (i, p) in DISK_POINTS.iter().enumerate() {
        boot1 += &format!(
            "SECRETFS_FAULT={p}:pause up --disk {} --name f{i} --mount /mnt/f{i} 2> /run/f{i}.err &\n",
            dev(i)
        );
        paused.push(format!("/run/f{i}.err"));
    }
    for (j, p) in DISK_REOPEN_POINTS.iter().enumerate() {
        boot1 += &format!(
            "SECRETFS_FAULT={p}:pause up --disk {} --name h{j} --mount /mnt/h{j} 2> /run/h{j}.err &\n",
            dev(fresh.len() + j)
        );
        paused.push(format!("/run/h{j}.err"));
    }
    boot1 += &format!(
        "for i in $(seq 900); do n=0; for f in {files}; do grep -q SECRETFS-FAULT-PAUSED $f 2>/dev/null && n=$((n+1)); done; \
         [ $n = {count} ] && break; sleep 0.2; done\n\
         echo \"paused: $n of {count}\"\n\
         check all_paused test $n = {count}\n\
         echo POWER-CUT\n\
         echo o > /proc/sysrq-trigger\n\
         sleep 30\n",
        files = paused.join(" "),
        count = paused.len()
    );
    let mut spec = VmSpec::new("crash-power-1", &boot1);
    spec.disks = disks;
    aws.attach(&mut spec);
    spec.timeout = Duration::from_secs(600);
    let run1 = vm::run(&spec);
    let mut expected1: Vec<String> = (0..DISK_REOPEN_POINTS.len())
        .flat_map(|j| ["create", "write", "down"].map(|c| format!("h{j}_{c}")))
        .collect();
    expected1.push("all_paused".into());
    // No exit marker after a power cut: assert the checks one by one.
    assert!(!run1.timed_out, "{}", run1.console_tail(40));
    assert!(
        run1.checks().iter().all(|(_, ok)| *ok),
        "{}",
        run1.console_tail(40)
    );
    for name in &expected1 {
        assert!(
            run1.passed(name),
            "missing CHECK ok {name}\n{}",
            run1.console_tail(40)
        );
    }
    assert!(
        run1.console.contains("POWER-CUT"),
        "{}",
        run1.console_tail(40)
    );
    assert_eq!(
        run1.exit_code, None,
        "the power cut should end the boot without the exit marker"
    );

    // Boot 2: the same disks; every `up` converges, data intact.
    let mut boot2 = lib;
    let mut expected2 = Vec::new();
    for (i, p) in DISK_POINTS.iter().enumerate() {
        boot2 += &format!(
            "check f{i}_converges_after_{p} up --disk {} --name f{i} --mount /mnt/f{i}\n\
             check f{i}_mounted grep -q '^/dev/mapper/f{i} /mnt/f{i} ext4 ' /proc/mounts\n",
            dev(i)
        );
        expected2.extend([format!("f{i}_converges_after_{p}"), format!("f{i}_mounted")]);
    }
    for (j, p) in DISK_REOPEN_POINTS.iter().enumerate() {
        boot2 += &format!(
            "check h{j}_converges_after_{p} up --disk {} --name h{j} --mount /mnt/h{j}\n\
             check h{j}_intact grep -qx \"$CANARY\" /mnt/h{j}/canary\n",
            dev(fresh.len() + j)
        );
        expected2.extend([format!("h{j}_converges_after_{p}"), format!("h{j}_intact")]);
    }
    spec.name = "crash-power-2".into();
    spec.script = boot2;
    let run2 = vm::run(&spec);
    run2.assert_checks(&expected2.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run2.exit_code, Some(0), "{}", run2.console_tail(60));
    eprintln!(
        "crash points covered by power cut: {} first-up + {} re-open, in {:.0}s + {:.0}s",
        DISK_POINTS.len(),
        DISK_REOPEN_POINTS.len(),
        run1.elapsed.as_secs_f64(),
        run2.elapsed.as_secs_f64()
    );
}
