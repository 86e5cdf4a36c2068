//! Secret hygiene in a real kernel: while `secretfs up` holds the
//! passphrase (paused by the fault hook right after the key was fetched)
//! and after a full run, the passphrase, in raw, hex and base64 form, must
//! not appear in the process's command line or environment, in any file the
//! guest wrote (/run, /root, /mnt with the volume, /dev/shm, the upper layers
//! of /tmp and /var/tmp), in the console log, or in any stdout/stderr; the
//! buffer must be mlocked; and SIGABRT must leave no core dump while a
//! control process in the same guest does dump core.
//!
//! The test never writes the secret anywhere: the guest gets only SHA-256
//! digests of its forms (`tests/support/find_secret.py` hashes every window).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, Disk, VmSpec};
use crate::common::LocalAws;
use base64::Engine;
use sha2::{Digest, Sha256};

const CONTEXT: (&str, &str) = ("purpose", "secretfs-hygiene");

fn find_secret() -> PathBuf {
    aws::support_dir().join("find_secret.py")
}

/// Writes `LENGTH SHA256 FORM` lines for each form of the secret.
fn write_needles(path: &Path, secret: &[u8]) {
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("raw", secret.to_vec()),
        ("hex", aws::hex(secret).into_bytes()),
        ("HEX", aws::hex(secret).to_uppercase().into_bytes()),
        (
            "base64",
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .into_bytes(),
        ),
        (
            "base64-nopad",
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(secret)
                .into_bytes(),
        ),
    ];
    let text: String = forms
        .iter()
        .map(|(name, v)| format!("{} {:x} {name}\n", v.len(), Sha256::digest(v)))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn search(needles: &Path, paths: &[&Path]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(find_secret())
        .arg(needles)
        .args(paths)
        .output()
        .expect("running find_secret.py");
    assert!(
        out.status.success(),
        "find_secret.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_no_hits(what: &str, v: &serde_json::Value) {
    assert!(
        v["files"].as_u64().unwrap() > 0,
        "{what}: nothing was searched: {v}"
    );
    assert_eq!(
        v["hits"],
        serde_json::json!([]),
        "{what}: the passphrase was found: {v}"
    );
}

#[test]
fn vm_the_passphrase_leaves_no_trace() {
    let aws = LocalAws::start();
    let moto = &aws.moto;
    let ctx = format!("{}={}", CONTEXT.0, CONTEXT.1);
    let uri = aws.seal("hygiene/volume-key.bin", &ctx);
    let blob = moto
        .get_object("hygiene/volume-key.bin")
        .expect("the sealed blob");
    let (_, secret) = moto.decrypt(&blob, &[CONTEXT]);
    assert_eq!(secret.len(), 64);

    let dir = vm::work_dir("hygiene");
    let needles = dir.join("needles");
    write_needles(&needles, &secret);
    drop(secret);
    let disk = dir.join("disk.img");
    vm::sparse_file(&disk, 256 << 20);
    let script = format!(
        r#"
KEY={uri}
CTX={ctx}
NEEDLES={needles}
FIND={find}
# Core dumps go to /run/cores; a control process proves they work here.
mkdir -p /run/cores
echo '/run/cores/core.%e.%p' > /proc/sys/kernel/core_pattern
ulimit -c unlimited
sleep 60 & ctl=$!
sleep 0.5; kill -ABRT $ctl; wait $ctl
check control_dumps_core sh -c 'ls /run/cores/core.sleep.* > /dev/null 2>&1'
rm -f /run/cores/*

# 1. Paused with the passphrase in memory.
SECRETFS_FAULT=key:pause "$SECRETFS" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CTX" \
  > "$VM_OUT/paused.out" 2> "$VM_OUT/paused.err" &
pid=$!
for i in $(seq 600); do grep -q SECRETFS-FAULT-PAUSED "$VM_OUT/paused.err" && break; sleep 0.2; done
check paused grep -q "SECRETFS-FAULT-PAUSED $pid" "$VM_OUT/paused.err"
grep VmLck /proc/$pid/status > "$VM_OUT/vmlck"
check search_proc to "$VM_OUT/proc.json" python3 "$FIND" "$NEEDLES" /proc/$pid/cmdline /proc/$pid/environ
kill -ABRT $pid
wait $pid; echo $? > "$VM_OUT/abrt.rc"
check no_core_dump sh -c '! ls /run/cores/ | grep -q .'
check nothing_opened test ! -e /dev/mapper/secretfs

# 2. A whole run, then everything the guest wrote.
check up to2 "$VM_OUT/up.out" "$VM_OUT/up.err" "$SECRETFS" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CTX"
check up_json to "$VM_OUT/up-again.json" "$SECRETFS" up --disk /dev/vda --wrapped-key "$KEY" --encryption-context "$CTX" --json
echo data > /mnt/secretfs/file && sync
check status to "$VM_OUT/status.out" "$SECRETFS" status
check etc_read_only sh -c '! touch /etc/secretfs-probe 2>/dev/null'
check var_read_only sh -c '! touch /var/secretfs-probe 2>/dev/null'
check search_files to /run/files.json python3 "$FIND" "$NEEDLES" /run /root /mnt /dev/shm
cp /run/files.json "$VM_OUT/files.json"
check down to2 "$VM_OUT/down.out" "$VM_OUT/down.err" "$SECRETFS" down
"#,
        needles = needles.display(),
        find = find_secret().display(),
    );
    let mut spec = VmSpec::new("hygiene", &script);
    spec.disks = vec![Disk::virtio(&disk)];
    aws.attach(&mut spec);
    spec.timeout = Duration::from_secs(420);
    let run = vm::run(&spec);
    run.assert_checks(&[
        "control_dumps_core",
        "paused",
        "search_proc",
        "no_core_dump",
        "nothing_opened",
        "up",
        "up_json",
        "status",
        "etc_read_only",
        "var_read_only",
        "search_files",
        "down",
    ]);
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(60));

    let read = |f: &str| std::fs::read_to_string(run.out_dir.join(f)).unwrap();
    assert_eq!(
        read("abrt.rc").trim(),
        "134",
        "SIGABRT should end the paused process"
    );
    let vmlck: u64 = read("vmlck")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        vmlck > 0,
        "the passphrase buffer is not mlocked: {}",
        read("vmlck")
    );

    let proc: serde_json::Value = serde_json::from_str(&read("proc.json")).unwrap();
    assert_no_hits("/proc/PID/cmdline and environ", &proc);
    let files: serde_json::Value = serde_json::from_str(&read("files.json")).unwrap();
    assert_no_hits("files the guest wrote", &files);
    assert!(
        files["files"].as_u64().unwrap() >= 3,
        "too few files searched to mean anything: {files}"
    );

    // Host side: the console and every captured output.
    let mut outputs: Vec<PathBuf> = std::fs::read_dir(&run.out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "out" || e == "err" || e == "json")
        })
        .collect();
    outputs.push(run.console_log.clone());
    let refs: Vec<&Path> = outputs.iter().map(PathBuf::as_path).collect();
    let host = search(&needles, &refs);
    assert_no_hits("console log and outputs", &host);
    // The searches followed real key fetches.
    for f in ["paused.err", "up.err"] {
        assert!(
            read(f).contains("KMS decrypted the key (64 bytes)"),
            "{f}: {}",
            read(f)
        );
    }
}

#[test]
fn find_secret_finds_what_it_should() {
    // The search itself must be able to fail: plant each form and find it.
    let dir = tempfile::tempdir().unwrap();
    let secret = aws::random_bytes(64);
    let needles = dir.path().join("needles");
    write_needles(&needles, &secret);
    let forms = [
        secret.clone(),
        aws::hex(&secret).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(&secret)
            .into_bytes(),
    ];
    for (i, form) in forms.iter().enumerate() {
        let f = dir.path().join(format!("planted-{i}"));
        let mut body = aws::random_bytes(100);
        body.extend_from_slice(form);
        body.extend_from_slice(&aws::random_bytes(50));
        std::fs::write(&f, body).unwrap();
        let v = search(&needles, &[&f]);
        // base64 with padding also contains its unpadded form.
        assert!(
            !v["hits"].as_array().unwrap().is_empty(),
            "form {i} not found: {v}"
        );
    }
    let clean = dir.path().join("clean");
    std::fs::write(&clean, aws::random_bytes(4096)).unwrap();
    assert_eq!(search(&needles, &[&clean])["hits"], serde_json::json!([]));
}
