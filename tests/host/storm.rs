//! The key path under load and mixed faults, on the host against moto
//! behind the fault proxy (tests/support/fault_proxy.py):
//!
//! - a boot storm: 200 concurrent `secretfs check-key` runs while KMS
//!   admits only N Decrypt calls a second (the rest are throttled); every
//!   run must succeed within its own `--timeout`;
//! - faults in patterns: resets, throttling, 5xx and stalls mixed, then
//!   recovery (exit 0 within the deadline); and faults that never stop
//!   (exit 4 within a second or two of the deadline).
//!
//! `SECRETFS_STORM_CLIENTS` and `SECRETFS_STORM_RATE` change the storm's
//! size and rate (defaults 200 and 20).

use std::fs::{self, File};
use std::process::Child;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::common::aws::{self, run, secretfs_cmd, Moto, Proxy, Run};

const CONTEXT: (&str, &str) = ("purpose", "storm");

/// The tests here measure time: one at a time, so the storm's hundreds of
/// processes do not slow the others' deadlines.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seals 64 random bytes under the test key into S3 at `key` (with boto3
/// through moto, not with secretfs). Returns the plaintext.
fn wrapped(moto: &Moto, key: &str) -> Vec<u8> {
    let pass = aws::random_bytes(64);
    moto.encrypt_to_object(key, &moto.key_id, &pass, &[CONTEXT], false);
    pass
}

fn check_key(endpoint: &str, uri: &str, timeout: &str, limit: Duration) -> Run {
    let mut cmd = secretfs_cmd(endpoint);
    cmd.args([
        "check-key",
        "--wrapped-key",
        uri,
        "--encryption-context",
        &format!("{}={}", CONTEXT.0, CONTEXT.1),
        "--timeout",
        timeout,
    ]);
    run(cmd, limit)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with("REQ ") && l.contains(needle))
        .count()
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// Kills (by PID, via `Child::kill`) the runs still going when dropped.
struct Fleet(Vec<Option<Child>>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[test]
fn boot_storm_under_a_kms_rate_limit() {
    let _serial = serial();
    let clients = env_num("SECRETFS_STORM_CLIENTS", 200);
    let rate = env_num("SECRETFS_STORM_RATE", 20);
    let timeout = Duration::from_secs(180);
    let moto = Moto::start();
    let pass = wrapped(&moto, "storm/key.bin");
    let uri = moto.s3_uri("storm/key.bin");
    let proxy = Proxy::start(moto.port, &["--admit-per-second", &rate.to_string()]);
    let dir = tempfile::Builder::new()
        .prefix("secretfs-storm-")
        .tempdir()
        .expect("a temp dir");
    let context = format!("{}={}", CONTEXT.0, CONTEXT.1);
    let timeout_s = format!("{}s", timeout.as_secs());

    // Each run's exit code and the time it ended, polled every 20 ms (and
    // while the others are still being started).
    let mut ended: Vec<Option<(Option<i32>, Duration)>> = vec![None; clients];
    let poll =
        |fleet: &mut Fleet, ended: &mut Vec<Option<(Option<i32>, Duration)>>, start: Instant| {
            for (i, slot) in fleet.0.iter_mut().enumerate() {
                if let Some(c) = slot {
                    if let Ok(Some(st)) = c.try_wait() {
                        ended[i] = Some((st.code(), start.elapsed()));
                        *slot = None;
                    }
                }
            }
        };
    let start = Instant::now();
    let mut fleet = Fleet(Vec::with_capacity(clients));
    for i in 0..clients {
        let out = File::create(dir.path().join(format!("{i}.out"))).unwrap();
        let err = File::create(dir.path().join(format!("{i}.err"))).unwrap();
        let mut cmd = secretfs_cmd(&proxy.endpoint());
        cmd.args([
            "check-key",
            "--wrapped-key",
            &uri,
            "--encryption-context",
            &context,
            "--timeout",
            &timeout_s,
        ])
        .stdout(out)
        .stderr(err);
        fleet.0.push(Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting run {i}: {e}")),
        ));
        poll(&mut fleet, &mut ended, start);
    }
    let spawned = start.elapsed();
    let hard_limit = timeout + Duration::from_secs(30);
    while ended.iter().any(Option::is_none) && start.elapsed() < hard_limit {
        poll(&mut fleet, &mut ended, start);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(fleet); // kills any still running

    let mut times = Vec::new();
    let mut failures = Vec::new();
    for (i, e) in ended.iter().enumerate() {
        let out = fs::read(dir.path().join(format!("{i}.out"))).unwrap_or_default();
        let err = fs::read(dir.path().join(format!("{i}.err"))).unwrap_or_default();
        for stream in [&out, &err] {
            assert!(
                !aws::contains(stream, &pass)
                    && !aws::contains(stream, aws::hex(&pass).as_bytes())
                    && !aws::contains(stream, aws::base64(&pass).as_bytes()),
                "run {i} leaked the passphrase"
            );
        }
        match e {
            Some((Some(0), t)) => times.push(*t),
            other => failures.push(format!(
                "run {i}: {other:?}: {}",
                String::from_utf8_lossy(&err)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )),
        }
    }
    times.sort();
    let log = proxy.log();
    let throttled = count(&log, "action=throttle");
    let decrypts = count(&log, "TrentService.Decrypt");
    let pct = |p: usize| {
        times
            .get((times.len() * p / 100).min(times.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let summary = format!(
        "storm: {clients} concurrent check-key runs, KMS admitting {rate}/s: {} ok, {} failed; \
         all started within {:.1}s; from the first start: first success {:.1}s, median {:.1}s, \
         p90 {:.1}s, last success {:.1}s; \
         {decrypts} Decrypt calls, {throttled} throttled",
        times.len(),
        failures.len(),
        spawned.as_secs_f64(),
        pct(0),
        pct(50),
        pct(90),
        times.last().map_or(0.0, |d| d.as_secs_f64()),
    );
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{summary}\n{} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        throttled > 0,
        "the rate limit never throttled: the storm tested nothing\n{summary}"
    );
}

/// Resets, throttling, 5xx and stalls, mixed, on S3 and then on KMS; then
/// the service recovers: exit 0 well within the deadline.
#[test]
fn mixed_faults_then_recovery() {
    let _serial = serial();
    let moto = Moto::start();
    let pass = wrapped(&moto, "mixed/key.bin");
    let uri = moto.s3_uri("mixed/key.bin");
    // Requests 1-4 are GetObject (the 4th stalls, then succeeds), 5-8
    // Decrypt (likewise).
    let pattern = "reset,throttle,503,stall:2,reset,throttle,500,stall:2";
    let proxy = Proxy::start(moto.port, &["--pattern", pattern]);
    let r = check_key(&proxy.endpoint(), &uri, "30s", Duration::from_secs(60));
    r.assert_code(0).assert_no_leak(&pass);
    let log = proxy.log();
    for (what, n) in [
        ("action=pattern-reset ", 2),
        ("action=pattern-throttle ", 2),
        ("action=pattern-503 ", 1),
        ("action=pattern-500 ", 1),
        ("action=pattern-stall2s+pattern-ok", 2),
    ] {
        assert_eq!(count(&log, what), n, "{what}\n{log}");
    }
    assert_eq!(
        count(&log, "GET /"),
        4,
        "GetObject attempts (4 expected)\n{log}"
    );
    assert_eq!(
        count(&log, "TrentService.Decrypt"),
        4,
        "Decrypt attempts (4 expected)\n{log}"
    );
    eprintln!(
        "mixed faults (pattern {pattern}): recovered after {:.1}s",
        r.elapsed.as_secs_f64()
    );
    assert!(r.elapsed < Duration::from_secs(25), "took {:?}", r.elapsed);

    // KMS only: a slow failure among the others.
    let pattern = "throttle,reset,stall:1+503,500,throttle,ok";
    let proxy = Proxy::start(moto.port, &["--pattern", pattern, "--pattern-scope", "kms"]);
    let r = check_key(&proxy.endpoint(), &uri, "30s", Duration::from_secs(60));
    r.assert_code(0).assert_no_leak(&pass);
    let log = proxy.log();
    assert_eq!(count(&log, "TrentService.Decrypt"), 6, "{log}");
    assert_eq!(count(&log, "GET /"), 1, "{log}");
    eprintln!(
        "mixed KMS faults (pattern {pattern}): recovered after {:.1}s",
        r.elapsed.as_secs_f64()
    );
}

/// The same faults for ever: exit 4 at the deadline, not before and not
/// much after, with one error line that says why.
#[test]
fn mixed_faults_that_never_stop() {
    let _serial = serial();
    let moto = Moto::start();
    let pass = wrapped(&moto, "endless/key.bin");
    let uri = moto.s3_uri("endless/key.bin");
    for (scope, pattern) in [
        ("all", "reset,throttle,503,stall:1+500,loop"),
        ("kms", "throttle,500,reset,stall:1+503,loop"),
    ] {
        let proxy = Proxy::start(moto.port, &["--pattern", pattern, "--pattern-scope", scope]);
        let deadline = Duration::from_secs(6);
        let r = check_key(&proxy.endpoint(), &uri, "6s", Duration::from_secs(60));
        r.assert_code(4)
            .assert_one_error_line()
            .assert_stderr_mentions(&["gave up", "--timeout"])
            .assert_no_leak(&pass);
        assert!(
            r.elapsed >= deadline && r.elapsed <= deadline + Duration::from_secs(2),
            "--timeout 6s against endless faults ({pattern}) ended after {:?}",
            r.elapsed
        );
        let log = proxy.log();
        assert!(
            count(&log, "action=pattern-") >= 4,
            "too few attempts within 6s:\n{log}"
        );
        eprintln!(
            "endless faults (scope {scope}, pattern {pattern}): exit 4 after {:.1}s, {} attempts",
            r.elapsed.as_secs_f64(),
            count(&log, "action=pattern-")
        );
    }
}
