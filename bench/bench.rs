//! The benchmark suite. `scripts/bench` runs it (never `cargo test`: every
//! case is `#[ignore]`) with the release binary:
//!
//! ```text
//! cargo test --release --test bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Each case writes one JSON file into `<target>/bench/`; `bench/render.py`
//! turns them into `bench/RESULTS.md` and `bench/chart.png`. The cases check
//! that what they measured worked (exit codes, a re-open did not format);
//! they never assert on a time.
//!
//! - `bench_1_binary`: the machine, and the size of the stripped binary.
//! - `bench_2_key_fetch`: on the host, against moto: `secretfs check-key`
//!   (the key path of `up`) vs the recipe's `aws s3 cp` + `aws kms decrypt`.
//! - `bench_3_vm`: one boot of the test VM (tests/common/vm.rs) runs
//!   bench/guest.sh: time to mounted for the recipe, the hand-tuned floor
//!   and secretfs on fresh 2 GiB disks; 1/8/64 GiB scaling; re-open and
//!   `down`; peak memory; O_DIRECT throughput.
//! - `bench_4_before_after`: one more boot, `up` of this build against an
//!   older release binary (`SECRETFS_BENCH_BASELINE`, built by
//!   `scripts/bench --baseline REV`) on fresh 2 and 64 GiB disks.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::aws::{self, Moto};
use common::vm::{self, Disk, VmSpec};
use serde_json::{json, Value};

/// What the in-guest scripts share.
const GUEST_LIB: &str = include_str!("lib.sh");
/// The in-guest script of the main boot.
const GUEST_SCRIPT: &str = include_str!("guest.sh");
/// The in-guest script of the before/after boot.
const BEFORE_AFTER_SCRIPT: &str = include_str!("before_after.sh");
/// Rounds of the before/after boot (each: both binaries, 2 and 64 GiB).
const BEFORE_AFTER_ROUNDS: usize = 5;
/// The set boot's script (after lib.sh).
const SET_SCRIPT: &str = include_str!("set.sh");
/// Rounds of time-to-mounted, and of throughput, in the set boot.
const SET_ROUNDS: usize = 3;
const SET_FIO_ROUNDS: usize = 2;
/// Rounds of the mke2fs option variants in the set boot.
const SET_MKFS_ROUNDS: usize = 5;
/// The mke2fs option variants the set boot times on 8 TiB (bench/set.sh
/// names their options), and those it also times on 1 GiB.
const MKFS_BIG: [&str; 9] = [
    "stock",
    "cur",
    "nores",
    "onebackup",
    "g256",
    "g4096",
    "nores_g256",
    "i1m",
    "bigalloc",
];
const MKFS_SMALL: [&str; 2] = ["cur", "nores_g256"];
/// Guest RAM: cryptsetup caps argon2id's memory at half of it, so this lets
/// the default (1 GiB) through.
const GUEST_MEM_MIB: u32 = 3072;
/// Rounds of floor and secretfs on fresh 2 GiB disks.
const ROUNDS: usize = 5;
/// Rounds of each scaling size.
const SCALE_ROUNDS: usize = 3;
const SCALE_SIZES_GIB: [u64; 3] = [1, 8, 64];
/// Timed runs of each key-fetch variant (after one untimed warm-up each).
const KEY_FETCH_RUNS: usize = 7;
const CONTEXT: &str = "purpose=secretfs-bench";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_secretfs")
}

/// `<target>/bench`: where the cases write their JSON.
fn results_dir() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .expect("CARGO_TARGET_TMPDIR has a parent");
    let dir = target.join("bench");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn write_result(name: &str, value: &Value) {
    let path = results_dir().join(name);
    let text = serde_json::to_string_pretty(value).expect("serializing results");
    fs::write(&path, text + "\n").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    eprintln!("bench: wrote {}", path.display());
}

/// Timings of a debug build mean nothing here.
fn assert_release() {
    if cfg!(debug_assertions) {
        panic!("run the benchmark with --release (scripts/bench does)");
    }
    assert!(
        bin().contains("/release/"),
        "{} is not a release binary",
        bin()
    );
}

/// A number from `SECRETFS_BENCH_<name>`, else `default` (for quick trial
/// runs; `scripts/bench` sets none).
fn knob(name: &str, default: usize) -> usize {
    std::env::var(format!("SECRETFS_BENCH_{name}"))
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("SECRETFS_BENCH_{name}={v:?}"))
        })
        .unwrap_or(default)
}

/// The first line a program prints (stdout, else stderr), or "" if it fails.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The host's 1-, 5- and 15-minute load averages (other work on the host
/// slows the emulated guest; the report shows them).
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `KEY: value` from a /proc file.
fn proc_field(file: &str, key: &str) -> String {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn machine() -> Value {
    let mem_kib: u64 = proc_field("/proc/meminfo", "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0);
    let dirty = !Command::new("git")
        .args(["diff", "--quiet", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map(|s| s.success())
        .unwrap_or(true);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_kib": mem_kib,
        "cpu_model": proc_field("/proc/cpuinfo", "model name"),
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "os": fs::read_to_string("/etc/os-release").unwrap_or_default().lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=")).unwrap_or("").trim_matches('"'),
        "qemu": first_line("qemu-system-x86_64", &["--version"]),
        "cryptsetup": first_line("cryptsetup", &["--version"]),
        "rustc": first_line("rustc", &["--version"]),
        "commit": first_line("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]),
        "dirty": dirty,
        "date": first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    })
}

#[test]
#[ignore = "a benchmark: run by scripts/bench"]
fn bench_1_binary() {
    assert_release();
    let bytes = fs::read(bin()).unwrap_or_else(|e| panic!("reading {}: {e}", bin()));
    assert!(bytes.starts_with(b"\x7fELF"), "{} is not ELF", bin());
    // A stripped ELF has no .symtab section (its name is in .shstrtab).
    let stripped = !aws::contains(&bytes, b"\0.symtab\0");
    write_result(
        "binary.json",
        &json!({
            "machine": machine(),
            "binary": {"path": bin(), "bytes": bytes.len(), "stripped": stripped},
        }),
    );
}

/// The recipe's key fetch, as one shell pipeline: the S3 object to stdout,
/// into `aws kms decrypt`; the plaintext (base64) goes to /dev/null.
const AWSCLI_PIPELINE: &str = r#"set -euo pipefail
"$AWS" s3 cp "$URI" - | "$AWS" kms decrypt --ciphertext-blob fileb:///dev/stdin \
  --encryption-context "$CONTEXT" --query Plaintext --output text > /dev/null"#;

fn aws_cli() -> PathBuf {
    let path = std::env::var_os("SECRETFS_BENCH_AWS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/bench-venv/bin/aws"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the AWS CLI is not installed at {} (scripts/bench installs it; SECRETFS_BENCH_AWS overrides)",
        path.display()
    );
    path
}

/// Runs `cmd` with no output kept; panics unless it exits 0. Its wall time.
fn timed_ok(mut cmd: Command, what: &str) -> Duration {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

#[test]
#[ignore = "a benchmark: run by scripts/bench"]
fn bench_2_key_fetch() {
    assert_release();
    let runs = knob("KEY_RUNS", KEY_FETCH_RUNS);
    let aws_bin = aws_cli();
    let moto = Moto::start();
    let uri = moto.s3_uri("bench/volume-key.bin");
    let seal = aws::secretfs_cmd(&moto.endpoint())
        .args([
            "seal",
            "--kms-key",
            &moto.alias,
            "--to",
            &uri,
            "--encryption-context",
            CONTEXT,
        ])
        .output()
        .expect("running secretfs seal");
    assert!(
        seal.status.success(),
        "seal failed: {}",
        String::from_utf8_lossy(&seal.stderr)
    );

    let secretfs = || {
        let mut c = aws::secretfs_cmd(&moto.endpoint());
        c.args([
            "check-key",
            "--wrapped-key",
            &uri,
            "--encryption-context",
            CONTEXT,
        ]);
        c
    };
    // The same clean environment as secretfs_cmd gives secretfs.
    let awscli = || {
        let mut c = Command::new("bash");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                c.env_remove(&name);
            }
        }
        let (id, secret) = aws::fake_credentials();
        c.args(["-c", AWSCLI_PIPELINE])
            .env("AWS", &aws_bin)
            .env("URI", &uri)
            .env("CONTEXT", CONTEXT)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", moto.endpoint());
        c
    };
    // One untimed warm-up each (page cache, moto's first-request work).
    timed_ok(secretfs(), "secretfs check-key");
    timed_ok(awscli(), "aws s3 cp | aws kms decrypt");
    let (mut sfs, mut cli) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which goes first.
        if i % 2 == 0 {
            sfs.push(timed_ok(secretfs(), "secretfs check-key").as_secs_f64());
            cli.push(timed_ok(awscli(), "aws s3 cp | aws kms decrypt").as_secs_f64());
        } else {
            cli.push(timed_ok(awscli(), "aws s3 cp | aws kms decrypt").as_secs_f64());
            sfs.push(timed_ok(secretfs(), "secretfs check-key").as_secs_f64());
        }
        eprintln!(
            "bench: key fetch #{}: secretfs {:.3}s, aws cli {:.3}s",
            i + 1,
            sfs[i],
            cli[i]
        );
    }
    // What check-key reports (the length only, never the key).
    let mut check = secretfs();
    check.arg("--json");
    let check = aws::run(check, Duration::from_secs(60));
    check.assert_code(0);
    let reported: Value = serde_json::from_slice(&check.stdout).expect("check-key --json");
    write_result(
        "key_fetch.json",
        &json!({
            "host_loadavg_after": loadavg(),
            "secretfs_check_key": sfs,
            "awscli": cli,
            "awscli_version": first_line(aws_bin.to_str().expect("utf-8 path"), &["--version"]),
            "key_bytes": reported["bytes"],
            "awscli_command": "aws s3 cp s3://B/K - | aws kms decrypt --ciphertext-blob fileb:///dev/stdin --encryption-context ... --query Plaintext --output text > /dev/null",
            "secretfs_command": "secretfs check-key --wrapped-key s3://B/K --encryption-context ...",
        }),
    );
}

/// Boots the bench VM with `script` (after bench/lib.sh) and a fresh sparse
/// disk per role (`D_<role>` in the guest); returns the run, its samples
/// and its info values. Fails unless the guest script exited 0.
fn boot(
    name: &str,
    script: &str,
    dir: &Path,
    roles: &[(String, u64)],
    mut env: Vec<(String, String)>,
) -> (vm::VmRun, Vec<Value>, serde_json::Map<String, Value>) {
    // The i440fx machine has 32 PCI slots; each virtio disk takes one.
    assert!(
        roles.len() <= 24,
        "{} disks: lower SECRETFS_BENCH_ROUNDS",
        roles.len()
    );
    let mut disks = Vec::new();
    for (i, (role, gib)) in roles.iter().enumerate() {
        let img = dir.join(format!("{role}.img"));
        vm::sparse_file(&img, gib << 30);
        disks.push(Disk::virtio(&img));
        let letter = char::from(b'a' + u8::try_from(i).expect("few disks"));
        env.push((format!("D_{role}"), format!("/dev/vd{letter}")));
    }
    let mut spec = VmSpec::new(name, &format!("{GUEST_LIB}\n{script}"));
    spec.disks = disks;
    spec.env = env;
    spec.mem_mib = GUEST_MEM_MIB;
    spec.timeout = Duration::from_secs(45 * 60);
    let run = vm::run(&spec);
    assert!(
        !run.timed_out && run.exit_code == Some(0),
        "the bench VM failed (exit {:?}, timed out: {}):\n{}",
        run.exit_code,
        run.timed_out,
        run.console_tail(80)
    );
    let mut samples = Vec::new();
    let mut info = serde_json::Map::new();
    let samples_path = run.out_dir.join("samples.jsonl");
    for line in fs::read_to_string(&samples_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", samples_path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("samples.jsonl: {e}: {line}"));
        if v["kind"] == "info" {
            info.insert(
                v["key"].as_str().expect("info key").to_owned(),
                v["value"].clone(),
            );
        } else {
            samples.push(v);
        }
    }
    // The images (some of them GiB of ciphertext) are not needed any more.
    for (role, _) in roles {
        let _ = fs::remove_file(dir.join(format!("{role}.img")));
    }
    (run, samples, info)
}

/// Checks what secretfs said it did (a first `up` formats, the second
/// re-opens) in every `*-format.json` and `*-reopen.json`; returns how many.
fn check_answers(out: &Path) -> usize {
    let mut checked = 0;
    for entry in fs::read_dir(out).expect("reading the VM's output") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let want = if name.ends_with("-format.json") {
            true
        } else if name.ends_with("-reopen.json") {
            false
        } else {
            continue;
        };
        let up = read_json(&path);
        assert_eq!(up["outcome"], "up", "{name}: {up}");
        assert_eq!(up["first_format"], want, "{name}: {up}");
        checked += 1;
    }
    checked
}

/// The disks of the VM run, in attachment order: (role, size in GiB).
fn vm_disks(rounds: usize, scale_rounds: usize) -> Vec<(String, u64)> {
    let mut disks = vec![("raw".to_owned(), 1), ("recipe".to_owned(), 2)];
    for r in 1..=rounds {
        disks.push((format!("floor_{r}"), 2));
        disks.push((format!("sfs_{r}"), 2));
    }
    for r in 1..=scale_rounds {
        for gib in SCALE_SIZES_GIB {
            disks.push((format!("scale_{gib}_{r}"), gib));
        }
    }
    disks.push(("mem_sfs".to_owned(), 2));
    disks.push(("mem_luks".to_owned(), 2));
    disks
}

fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "a benchmark: run by scripts/bench"]
fn bench_3_vm() {
    assert_release();
    let rounds = knob("ROUNDS", ROUNDS).max(1);
    let scale_rounds = knob("SCALE_ROUNDS", SCALE_ROUNDS).max(1);
    let dir = vm::work_dir("bench");
    let roles = vm_disks(rounds, scale_rounds);
    // The i440fx machine has 32 PCI slots; each virtio disk takes one.
    assert!(
        roles.len() <= 24,
        "{} disks: lower SECRETFS_BENCH_ROUNDS",
        roles.len()
    );
    let env = vec![
        ("ROUNDS".to_owned(), rounds.to_string()),
        ("SCALE_ROUNDS".to_owned(), scale_rounds.to_string()),
        (
            "SCALE_SIZES".to_owned(),
            SCALE_SIZES_GIB.map(|g| g.to_string()).join(" "),
        ),
    ];
    let load_before = loadavg();
    let (run, samples, info) = boot("bench", GUEST_SCRIPT, &dir, &roles, env);
    let load_after = loadavg();

    assert_eq!(
        check_answers(&run.out_dir),
        2 * (rounds + scale_rounds * SCALE_SIZES_GIB.len()),
        "secretfs --json answers missing in {}",
        run.out_dir.display()
    );

    let mut fio = serde_json::Map::new();
    for target in ["raw", "secretfs", "wq4k", "recipe"] {
        for qd in [1, 16] {
            let key = format!("{target}-qd{qd}");
            let v = read_json(&run.out_dir.join(format!("fio-{key}.json")));
            let read = &v["jobs"][0]["read"];
            assert!(read["io_bytes"].as_u64().unwrap_or(0) > 0, "fio {key}: {v}");
            fio.insert(
                key,
                json!({
                    "iops": read["iops"],
                    "bw_kib": read["bw"],
                    "lat_mean_us": read["lat_ns"]["mean"].as_f64().map(|ns| ns / 1000.0),
                }),
            );
        }
    }

    // The emulated CPU, as QEMU was told (the case directory's qemu.args).
    let qemu_args = fs::read_to_string(dir.join("qemu.args")).unwrap_or_default();
    let cpu = qemu_args
        .lines()
        .skip_while(|l| *l != "-cpu")
        .nth(1)
        .unwrap_or("")
        .to_owned();
    write_result(
        "vm.json",
        &json!({
            "guest": {
                "qemu_cpu": cpu,
                "accel": "tcg",
                "mem_mib": GUEST_MEM_MIB,
                "info": info,
            },
            "rounds": rounds,
            "scale_rounds": scale_rounds,
            "boot_seconds": run.boot_time.map(|d| d.as_secs_f64()),
            "host_loadavg_before": load_before,
            "host_loadavg_after": load_after,
            "vm_seconds": run.elapsed.as_secs_f64(),
            "samples": samples,
            "fio": fio,
            "console_log": run.console_log,
        }),
    );
}

/// The median of `case`'s totals (seconds).
fn median_total(samples: &[Value], case: &str) -> f64 {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|x| x["kind"] == "time" && x["case"] == case && x["step"] == "total")
        .filter_map(|x| x["seconds"].as_f64())
        .collect();
    assert!(!v.is_empty(), "no samples of {case}");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: run by scripts/bench --baseline REV"]
fn bench_4_before_after() {
    assert_release();
    let baseline = std::env::var("SECRETFS_BENCH_BASELINE").expect(
        "SECRETFS_BENCH_BASELINE names the older release binary (scripts/bench --baseline REV builds it)",
    );
    let rounds = knob("BA_ROUNDS", BEFORE_AFTER_ROUNDS).max(1);
    let dir = vm::work_dir("bench-before-after");
    let roles: Vec<(String, u64)> = (1..=rounds)
        .flat_map(|r| {
            [2u64, 64]
                .into_iter()
                .flat_map(move |gib| ["new", "old"].map(|w| (format!("ba_{w}_{gib}_{r}"), gib)))
        })
        .collect();
    let env = vec![
        ("ROUNDS".to_owned(), rounds.to_string()),
        ("BASELINE".to_owned(), baseline.clone()),
    ];
    let (run, samples, info) = boot("bench-before-after", BEFORE_AFTER_SCRIPT, &dir, &roles, env);
    assert_eq!(
        check_answers(&run.out_dir),
        2 * roles.len(),
        "secretfs --json answers missing in {}",
        run.out_dir.display()
    );
    let mut ratios = serde_json::Map::new();
    for gib in [2, 64] {
        for step in ["format", "reopen"] {
            let new = median_total(&samples, &format!("new_{gib}g_{step}"));
            let old = median_total(&samples, &format!("old_{gib}g_{step}"));
            eprintln!(
                "before/after {gib} GiB {step}: old {old:.3}s, new {new:.3}s, new/old {:.2}x",
                new / old
            );
            ratios.insert(
                format!("{gib}g_{step}"),
                json!({"old_median_s": old, "new_median_s": new, "new_over_old": new / old}),
            );
        }
    }
    write_result(
        "before_after.json",
        &json!({
            "baseline": baseline,
            "rounds": rounds,
            "info": info,
            "medians": ratios,
            "samples": samples,
            "boot_seconds": run.boot_time.map(|d| d.as_secs_f64()),
        }),
    );
}

/// The median bandwidth (MiB/s, read + write) of the fio runs of one case.
fn fio_median(out: &Path, case: &str, rw: &str, jobs: u32, rounds: usize) -> f64 {
    let mut v: Vec<f64> = (1..=rounds)
        .map(|r| {
            let j = read_json(&out.join(format!("fio-{case}-{rw}-j{jobs}-r{r}.json")));
            let job = &j["jobs"][0];
            (job["read"]["bw_bytes"].as_f64().unwrap_or(0.0)
                + job["write"]["bw_bytes"].as_f64().unwrap_or(0.0))
                / f64::from(1u32 << 20)
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The set cases' time to mounted split by `up --json`: the key, each kind
/// of step (summed over the members), and the rest (process start,
/// observation, planning), each the median over the rounds.
fn where_the_time_goes(out: &Path, samples: &[Value], rounds: usize) -> Vec<String> {
    const COLUMNS: [&str; 7] = [
        "format",
        "format_members",
        "mark_ready",
        "open",
        "open_members",
        "create_stripe",
        "make_filesystem",
    ];
    let mut lines = vec![
        String::new(),
        format!(
            "| seconds (median) | total | key | {} | mount | other |",
            COLUMNS.join(" | ")
        ),
        format!("|---|---|---|{}---|---|", "---|".repeat(COLUMNS.len())),
    ];
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for c in ["1", "4", "8", "small", "big", "smallxfs"] {
        for step in ["format", "reopen"] {
            let case = format!("set_{c}_{step}");
            // One column of rounds per table column; None: no such step.
            let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); COLUMNS.len() + 4];
            for r in 1..=rounds {
                let path = out.join("json").join(format!("{case}-r{r}.json"));
                let up: Value = serde_json::from_slice(
                    &fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let total = samples
                    .iter()
                    .find(|x| {
                        x["kind"] == "time"
                            && x["case"] == case.as_str()
                            && x["step"] == "total"
                            && x["round"] == r
                    })
                    .and_then(|x| x["seconds"].as_f64())
                    .unwrap_or_else(|| panic!("no total of {case} round {r}"));
                let key = up["key_seconds"].as_f64().unwrap_or(0.0);
                // The seconds of every step of that name; None without one.
                let of = |name: &str| -> Option<f64> {
                    let times: Vec<f64> = up["steps"]
                        .as_array()
                        .expect("steps")
                        .iter()
                        .filter(|s| s["step"] == name)
                        .filter_map(|s| s["seconds"].as_f64())
                        .collect();
                    (!times.is_empty()).then(|| times.iter().sum())
                };
                let all: f64 = up["steps"]
                    .as_array()
                    .expect("steps")
                    .iter()
                    .filter_map(|s| s["seconds"].as_f64())
                    .sum();
                cols[0].push(Some(total));
                cols[1].push(Some(key));
                for (i, name) in COLUMNS.iter().enumerate() {
                    cols[i + 2].push(of(name));
                }
                cols[COLUMNS.len() + 2].push(of("mount"));
                cols[COLUMNS.len() + 3].push(Some(total - key - all));
            }
            let label = match c {
                "big" => "1 member of 8 TiB".to_string(),
                "small" => "1 member of 1 GiB".to_string(),
                "smallxfs" => "1 member of 1 GiB, XFS".to_string(),
                n => format!("{n} member{}", if n == "1" { "" } else { "s" }),
            };
            lines.push(format!(
                "| {label}, {} | {} |",
                if step == "format" {
                    "first format"
                } else {
                    "re-open"
                },
                cols.into_iter()
                    .map(|v| match v.into_iter().collect::<Option<Vec<f64>>>() {
                        Some(v) => format!("{:.2}", median(v)),
                        None => "–".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
    }
    // How parallel the members' formats ran: the sum of the members'
    // process times over the wall time of format_members (1.0: one after
    // another; at most the vCPUs).
    lines.push(String::new());
    lines.push("| member phase parallelism (median) | 4 members | 8 members |".into());
    lines.push("|---|---|---|".into());
    let mut row = vec!["sum of the members' times / format_members".to_string()];
    for c in ["4", "8"] {
        let v: Vec<f64> = (1..=rounds)
            .filter_map(|r| {
                let path = out.join("json").join(format!("set_{c}_format-r{r}.json"));
                let up: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
                let step = up["steps"]
                    .as_array()?
                    .iter()
                    .find(|s| s["step"] == "format_members")?
                    .clone();
                let sum: f64 = step["members"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_f64)
                    .sum();
                Some(sum / step["seconds"].as_f64()?)
            })
            .collect();
        row.push(if v.is_empty() {
            "–".into()
        } else {
            format!("{:.2}", median(v))
        });
    }
    lines.push(format!("| {} |", row.join(" | ")));
    lines
}

/// The one sample of `kind` for `case`, `step` (time only) and `round`.
fn sample_of(samples: &[Value], kind: &str, case: &str, step: &str, round: usize) -> f64 {
    let field = if kind == "time" { "seconds" } else { "bytes" };
    samples
        .iter()
        .find(|x| {
            x["kind"] == kind
                && x["case"] == case
                && (kind != "time" || x["step"] == step)
                && x["round"] == round
        })
        .and_then(|x| x[field].as_f64())
        .unwrap_or_else(|| panic!("no {kind} sample of {case} round {round}"))
}

/// The mke2fs option variants of the set boot: per variant and size, the
/// medians of mkfs, of the mount after it, of the two (time to a mounted
/// filesystem on an open mapping) and of the bytes mkfs wrote; against the
/// current options (`cur`), and 8 TiB against 1 GiB.
fn mkfs_options(
    samples: &[Value],
    info: &serde_json::Map<String, Value>,
    rounds: usize,
    m: &mut serde_json::Map<String, Value>,
) -> Vec<String> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // (mkfs, mount, both, bytes) medians of one size's variant.
    let of = |tag: &str, v: &str| {
        let case = format!("mkfs_{tag}_{v}");
        let mount = format!("mount_{tag}_{v}");
        let r = 1..=rounds;
        let mk: Vec<f64> = r
            .clone()
            .map(|r| sample_of(samples, "time", &case, "total", r))
            .collect();
        let mo: Vec<f64> = r
            .clone()
            .map(|r| sample_of(samples, "time", &mount, "total", r))
            .collect();
        let both = mk.iter().zip(&mo).map(|(a, b)| a + b).collect();
        let bytes = r
            .map(|r| sample_of(samples, "written", &case, "", r))
            .collect();
        (median(mk), median(mo), median(both), median(bytes))
    };
    let text = |key: String| {
        info.get(&key)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let mut lines = vec![
        String::new(),
        format!(
            "mke2fs options ({}), medians of {rounds} rounds: mkfs.ext4 on a fresh dm-crypt mapping of \
             one member, then the mount secretfs does (to mounted = the two, same round).",
            text("mkfs_version".into())
        ),
        String::new(),
        "| size, variant | options | mkfs s | mount s | to mounted s | vs cur | MiB written | groups per flex | inodes | backups |".into(),
        "|---|---|---|---|---|---|---|---|---|---|".into(),
    ];
    for (tag, label, variants) in [
        ("big", "8 TiB", &MKFS_BIG[..]),
        ("small", "1 GiB", &MKFS_SMALL[..]),
    ] {
        let (_, _, cur, _) = of(tag, "cur");
        for v in variants {
            let (mk, mo, both, bytes) = of(tag, v);
            m.insert(
                format!("mkfs_{tag}_{v}"),
                json!({"mkfs_s": mk, "mount_s": mo, "to_mounted_s": both, "bytes": bytes}),
            );
            let info_of = |what: &str| text(format!("mkfs_{tag}_{v}_{what}"));
            lines.push(format!(
                "| {label}, {v} | `{}` | {mk:.2} | {mo:.2} | {both:.2} | {:.2}× | {:.1} | {} | {} | {} |",
                info_of("options"),
                both / cur,
                bytes / f64::from(1u32 << 20),
                info_of("groups_per_flex"),
                info_of("inodes"),
                info_of("backups"),
            ));
        }
    }
    lines.push(String::new());
    for v in MKFS_SMALL {
        let (_, _, big, _) = of("big", v);
        let (_, _, small, _) = of("small", v);
        m.insert(
            format!("mkfs_{v}_big_over_small"),
            json!({"big_s": big, "small_s": small, "ratio": big / small}),
        );
        lines.push(format!(
            "- 8 TiB / 1 GiB, mkfs + mount, {v}: {:.2}× ({big:.2} s / {small:.2} s)",
            big / small
        ));
    }
    lines
}

#[test]
#[ignore = "a benchmark: run by scripts/bench"]
fn bench_5_set() {
    assert_release();
    let rounds = knob("SET_ROUNDS", SET_ROUNDS).max(1);
    let fio_rounds = knob("SET_FIO_ROUNDS", SET_FIO_ROUNDS).max(1);
    let mkfs_rounds = knob("SET_MKFS_ROUNDS", SET_MKFS_ROUNDS).max(1);
    let dir = vm::work_dir("bench-set");
    let roles: Vec<(String, u64)> = std::iter::once("one".to_string())
        .chain((0..4).map(|i| format!("m{i}")))
        .map(|r| (r, 2))
        .collect();
    let env = vec![
        ("ROUNDS".to_owned(), rounds.to_string()),
        ("FIO_ROUNDS".to_owned(), fio_rounds.to_string()),
        ("MKFS_ROUNDS".to_owned(), mkfs_rounds.to_string()),
    ];
    let (run, samples, info) = boot("bench-set", SET_SCRIPT, &dir, &roles, env);
    let mut m = serde_json::Map::new();
    let mut lines = vec![
        format!("Medians of {rounds} rounds (time) and {fio_rounds} rounds (fio, 5 s each), one boot, 2 vCPUs (TCG)."),
        String::new(),
        "| time to mounted | first format | re-open |".into(),
        "|---|---|---|".into(),
    ];
    for (a, b) in [
        ("4", "1"),
        ("8", "1"),
        ("big", "small"),
        ("smallxfs", "small"),
    ] {
        let mut row = format!(
            "| {} |",
            match a {
                "big" => "one member of 8 TiB vs 1 GiB".to_string(),
                "smallxfs" => "XFS vs ext4, one member of 1 GiB".to_string(),
                n => format!("{n} members vs 1"),
            }
        );
        for step in ["format", "reopen"] {
            let x = median_total(&samples, &format!("set_{a}_{step}"));
            let y = median_total(&samples, &format!("set_{b}_{step}"));
            m.insert(
                format!("{a}_over_{b}_{step}"),
                json!({"a_s": x, "b_s": y, "ratio": x / y}),
            );
            row += &format!(" {:.2}× ({x:.2} s / {y:.2} s) |", x / y);
        }
        lines.push(row);
    }
    lines.extend(where_the_time_goes(&run.out_dir, &samples, rounds));
    lines.extend(mkfs_options(&samples, &info, mkfs_rounds, &mut m));
    lines.extend([
        String::new(),
        "| fio (MiB/s) | sfs1 | sfs4 | sfs4/sfs1 | raw4 (layout b) | raw4/sfs4 | chunk 64K/512K | chunk 2M/512K |".into(),
        "|---|---|---|---|---|---|---|---|".into(),
    ]);
    for rw in ["write", "read", "randwrite", "randread"] {
        for jobs in [1, 4] {
            let f = |c: &str| fio_median(&run.out_dir, c, rw, jobs, fio_rounds);
            let (one, four, raw, c64, c2m) = (
                f("sfs1"),
                f("sfs4"),
                f("raw4"),
                f("chunk64"),
                f("chunk2048"),
            );
            m.insert(
                format!("fio_{rw}_j{jobs}"),
                json!({"sfs1": one, "sfs4": four, "raw4": raw, "chunk64": c64, "chunk2048": c2m}),
            );
            lines.push(format!(
                "| {rw} {} job{} | {one:.0} | {four:.0} | {:.2}× | {raw:.0} | {:.2}× | {:.2}× | {:.2}× |",
                jobs,
                if jobs == 1 { "" } else { "s" },
                four / one,
                raw / four,
                c64 / four,
                c2m / four
            ));
        }
    }
    let md = lines.join("\n") + "\n";
    eprintln!("{md}");
    fs::write(results_dir().join("set.md"), &md).expect("writing set.md");
    write_result(
        "set.json",
        &json!({"rounds": rounds, "fio_rounds": fio_rounds, "mkfs_rounds": mkfs_rounds, "info": info, "ratios": m, "samples": samples}),
    );
}
