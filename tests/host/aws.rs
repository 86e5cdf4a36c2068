//! `secretfs seal` and `secretfs check-key` against local AWS: a moto server
//! for KMS and S3, a fault-injecting proxy in front of it, and a fake IMDSv2.
//! They need moto (scripts/setup installs it) but not root; without moto they
//! fail, they do not skip.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::aws::{self, run, secretfs_cmd, FakeImds, Moto, Proxy, Run};

/// Upper bound for a run that should be quick (the default --timeout is 5m:
/// a fast failure that turned into a retry loop shows up here).
const QUICK: Duration = Duration::from_secs(60);

const CONTEXT: [(&str, &str); 2] = [("purpose", "secretfs"), ("host", "test-host")];

fn context_flags() -> Vec<String> {
    CONTEXT
        .iter()
        .flat_map(|(k, v)| ["--encryption-context".to_owned(), format!("{k}={v}")])
        .collect()
}

/// A random passphrase (64 hex characters, no newline) in a file of its own.
fn passphrase_file(moto: &Moto) -> (std::path::PathBuf, Vec<u8>) {
    let pass = aws::hex(&aws::random_bytes(32)).into_bytes();
    let path = moto
        .dir()
        .join(format!("pass-{}", aws::hex(&aws::random_bytes(4))));
    fs::write(&path, &pass).expect("writing the passphrase file");
    (path, pass)
}

fn seal(moto: &Moto, endpoint: &str, to: &str, extra: &[&str]) -> Run {
    let mut cmd = secretfs_cmd(endpoint);
    cmd.args(["seal", "--kms-key", &moto.alias, "--to", to])
        .args(context_flags())
        .args(extra);
    run(cmd, QUICK)
}

fn check_key(endpoint: &str, wrapped: &str, extra: &[&str], limit: Duration) -> Run {
    let mut cmd = secretfs_cmd(endpoint);
    cmd.args(["check-key", "--wrapped-key", wrapped])
        .args(context_flags())
        .args(extra);
    run(cmd, limit)
}

/// Stores at S3 `key` a blob made by boto3, not by secretfs (so the
/// check-key tests do not lean on seal): 64 random bytes KMS-encrypted under
/// the test key with CONTEXT. Returns the plaintext.
fn wrapped_s3(moto: &Moto, key: &str) -> Vec<u8> {
    let pass = aws::random_bytes(64);
    moto.encrypt_to_object(key, &moto.key_id, &pass, &CONTEXT, false);
    pass
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

// ---- a. the happy paths ------------------------------------------------

#[test]
fn seal_to_s3_then_check_key() {
    let moto = Moto::start();
    let (pass_path, pass) = passphrase_file(&moto);
    let uri = moto.s3_uri("hosts/a/key.bin");
    seal(
        &moto,
        &moto.endpoint(),
        &uri,
        &["--passphrase-file", pass_path.to_str().unwrap()],
    )
    .assert_code(0)
    .assert_no_leak(&pass);

    // The object is a KMS blob under our key, bound to the context.
    let blob = moto
        .get_object("hosts/a/key.bin")
        .expect("seal wrote no object");
    assert!(
        !aws::contains(&blob, &pass),
        "the stored blob holds the plaintext"
    );
    let (key_arn, plain) = moto.decrypt(&blob, &CONTEXT);
    assert_eq!(key_arn, moto.key_arn, "sealed under the wrong key");
    assert_eq!(
        plain, pass,
        "the blob does not decrypt to the given passphrase"
    );

    let r = check_key(&moto.endpoint(), &uri, &[], QUICK);
    r.assert_code(0).assert_no_leak(&pass);
    assert!(
        !r.message_lines().is_empty(),
        "check-key printed no confirmation on stderr"
    );

    let r = check_key(&moto.endpoint(), &uri, &["--json"], QUICK);
    r.assert_code(0).assert_no_leak(&pass);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {}", r.stdout()));
    assert_eq!(v["ok"], serde_json::Value::Bool(true), "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(pass.len() as u64), "{v}");
    assert!(v.get("source").is_some(), "no source in {v}");
}

#[test]
fn seal_generates_a_64_byte_passphrase_it_never_prints() {
    let moto = Moto::start();
    let uri = moto.s3_uri("generated.bin");
    let sealed = seal(&moto, &moto.endpoint(), &uri, &[]);
    sealed.assert_code(0);
    let blob = moto
        .get_object("generated.bin")
        .expect("seal wrote no object");
    let (key_arn, plain) = moto.decrypt(&blob, &CONTEXT);
    assert_eq!(key_arn, moto.key_arn);
    assert_eq!(
        plain.len(),
        64,
        "the generated passphrase is {} bytes",
        plain.len()
    );
    sealed.assert_no_leak(&plain);

    let r = check_key(&moto.endpoint(), &uri, &["--json"], QUICK);
    r.assert_code(0).assert_no_leak(&plain);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {}", r.stdout()));
    assert_eq!(v["bytes"].as_u64(), Some(64), "{v}");
}

#[test]
fn seal_to_a_file_mode_0600_then_check_key() {
    let moto = Moto::start();
    let (pass_path, pass) = passphrase_file(&moto);
    let blob_path = moto.dir().join("wrapped.bin");
    let blob_s = blob_path.to_str().unwrap();
    seal(
        &moto,
        &moto.endpoint(),
        blob_s,
        &["--passphrase-file", pass_path.to_str().unwrap()],
    )
    .assert_code(0)
    .assert_no_leak(&pass);

    let meta = fs::metadata(&blob_path).expect("seal wrote no file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "blob file mode");
    let blob = fs::read(&blob_path).unwrap();
    assert!(
        !aws::contains(&blob, &pass),
        "the blob file holds the plaintext"
    );
    assert_eq!(moto.decrypt(&blob, &CONTEXT).1, pass);

    check_key(&moto.endpoint(), blob_s, &[], QUICK)
        .assert_code(0)
        .assert_no_leak(&pass);
    // Pinning the right key, by id, ARN or alias, changes nothing.
    for id in [&moto.key_id, &moto.key_arn, &moto.alias] {
        check_key(&moto.endpoint(), blob_s, &["--kms-key-id", id], QUICK)
            .assert_code(0)
            .assert_no_leak(&pass);
    }
}

#[test]
fn a_base64_encoded_blob_is_accepted() {
    let moto = Moto::start();
    let (pass_path, pass) = passphrase_file(&moto);
    let raw_path = moto.dir().join("wrapped.bin");
    seal(
        &moto,
        &moto.endpoint(),
        raw_path.to_str().unwrap(),
        &["--passphrase-file", pass_path.to_str().unwrap()],
    )
    .assert_code(0);
    let b64 = format!("{}\n", aws::base64(&fs::read(&raw_path).unwrap()));

    let b64_path = moto.dir().join("wrapped.b64");
    fs::write(&b64_path, &b64).unwrap();
    check_key(&moto.endpoint(), b64_path.to_str().unwrap(), &[], QUICK)
        .assert_code(0)
        .assert_no_leak(&pass);

    moto.put_object("wrapped.b64", b64.as_bytes());
    check_key(
        &moto.endpoint(),
        &moto.s3_uri("wrapped.b64"),
        &["--json"],
        QUICK,
    )
    .assert_code(0)
    .assert_no_leak(&pass);
}

// ---- b. the key is unavailable ------------------------------------------

#[test]
fn wrong_encryption_context_is_key_unavailable() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "ctx.bin");
    let mut cmd = secretfs_cmd(&moto.endpoint());
    cmd.args(["check-key", "--wrapped-key", &moto.s3_uri("ctx.bin")])
        .args([
            "--encryption-context",
            "purpose=secretfs",
            "--encryption-context",
            "host=other-host",
        ]);
    let r = run(cmd, QUICK);
    r.assert_code(4)
        .assert_one_error_line()
        .assert_stderr_mentions(&["encryption context", "context", "InvalidCiphertext"])
        .assert_no_leak(&pass);

    // No context at all is as wrong.
    let mut cmd = secretfs_cmd(&moto.endpoint());
    cmd.args(["check-key", "--wrapped-key", &moto.s3_uri("ctx.bin")]);
    run(cmd, QUICK)
        .assert_code(4)
        .assert_one_error_line()
        .assert_no_leak(&pass);
}

#[test]
fn a_pinned_key_id_that_is_not_the_blobs_key_is_key_unavailable() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "pinned.bin");
    let uri = moto.s3_uri("pinned.bin");
    for other in [&moto.other_key_id, &moto.other_key_arn] {
        check_key(&moto.endpoint(), &uri, &["--kms-key-id", other], QUICK)
            .assert_code(4)
            .assert_one_error_line()
            .assert_stderr_mentions(&["key"])
            .assert_no_leak(&pass);
    }
    // The control: the right pin works.
    check_key(
        &moto.endpoint(),
        &uri,
        &["--kms-key-id", &moto.key_id],
        QUICK,
    )
    .assert_code(0);
}

#[test]
fn a_missing_object_is_key_unavailable_at_once() {
    let moto = Moto::start();
    let r = check_key(
        &moto.endpoint(),
        &moto.s3_uri("hosts/missing.bin"),
        &["--timeout", "60s"],
        QUICK,
    );
    r.assert_code(4)
        .assert_one_error_line()
        .assert_stderr_mentions(&["hosts/missing.bin"]);
    assert!(
        r.elapsed < Duration::from_secs(20),
        "not found was retried: took {:?}",
        r.elapsed
    );

    // A missing file is the same.
    let path = moto.dir().join("no-such-blob.bin");
    let r = check_key(
        &moto.endpoint(),
        path.to_str().unwrap(),
        &["--timeout", "60s"],
        QUICK,
    );
    r.assert_code(4)
        .assert_one_error_line()
        .assert_stderr_mentions(&["no-such-blob.bin"]);
}

#[test]
fn an_object_too_large_for_a_blob_is_refused_without_reading_it_all() {
    let moto = Moto::start();
    // Its Content-Length says so: refused before the body is read.
    moto.put_object("large.bin", &aws::random_bytes(17 * 1024));
    check_key(
        &moto.endpoint(),
        &moto.s3_uri("large.bin"),
        &["--timeout", "60s"],
        QUICK,
    )
    .assert_code(4)
    .assert_one_error_line()
    .assert_stderr_mentions(&[&moto.s3_uri("large.bin")])
    .assert_stderr_mentions(&["is 17408 bytes"]);

    // No Content-Length and a body without end: the reading stops at the
    // cap, long before the deadline.
    wrapped_s3(&moto, "flood.bin");
    let proxy = Proxy::start(moto.port, &["--pattern", "flood", "--pattern-scope", "s3"]);
    let r = check_key(
        &proxy.endpoint(),
        &moto.s3_uri("flood.bin"),
        &["--timeout", "15s"],
        QUICK,
    );
    r.assert_code(4)
        .assert_one_error_line()
        .assert_stderr_mentions(&[&moto.s3_uri("flood.bin")])
        .assert_stderr_mentions(&["is more than 16384 bytes"]);
    assert!(
        r.elapsed < Duration::from_secs(10),
        "the endless body was read until the deadline: took {:?}",
        r.elapsed
    );
}

#[test]
fn a_wrong_expected_bucket_owner_is_key_unavailable() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "owner.bin");
    let proxy = Proxy::start(moto.port, &[]);
    let r = check_key(
        &proxy.endpoint(),
        &moto.s3_uri("owner.bin"),
        &[
            "--expected-bucket-owner",
            "999999999999",
            "--timeout",
            "60s",
        ],
        QUICK,
    );
    r.assert_code(4)
        .assert_one_error_line()
        .assert_stderr_mentions(&["owner", "denied", "AccessDenied"])
        .assert_no_leak(&pass);
    assert!(
        r.elapsed < Duration::from_secs(20),
        "access denied was retried: took {:?}",
        r.elapsed
    );
    let reqs = proxy.requests();
    assert!(
        count(&reqs, "owner=999999999999 action=owner-denied") >= 1,
        "the expected-bucket-owner header never reached S3:\n{}",
        proxy.log()
    );
    assert_eq!(
        count(&reqs, "TrentService.Decrypt"),
        0,
        "decrypted anyway:\n{}",
        proxy.log()
    );
}

#[test]
fn the_right_expected_bucket_owner_is_sent_and_accepted() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "owner.bin");
    let proxy = Proxy::start(moto.port, &[]);
    check_key(
        &proxy.endpoint(),
        &moto.s3_uri("owner.bin"),
        &["--expected-bucket-owner", "123456789012"],
        QUICK,
    )
    .assert_code(0)
    .assert_no_leak(&pass);
    let reqs = proxy.requests();
    assert!(
        count(&reqs, "owner=123456789012 action=forward status=200") >= 1,
        "the object was not fetched with the owner header:\n{}",
        proxy.log()
    );
}

// ---- c. retries and the deadline -----------------------------------------

#[test]
fn kms_throttling_is_retried() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "throttle.bin");
    let proxy = Proxy::start(moto.port, &["--throttle", "3"]);
    check_key(
        &proxy.endpoint(),
        &moto.s3_uri("throttle.bin"),
        &["--timeout", "60s"],
        QUICK,
    )
    .assert_code(0)
    .assert_no_leak(&pass);
    let reqs = proxy.requests();
    assert_eq!(count(&reqs, "action=throttle"), 3, "{}", proxy.log());
    assert!(
        count(
            &reqs,
            "target=TrentService.Decrypt owner=- action=forward status=200"
        ) >= 1,
        "no Decrypt got through after the throttling:\n{}",
        proxy.log()
    );
}

#[test]
fn unavailable_services_are_retried() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "unavailable.bin");
    let proxy = Proxy::start(moto.port, &["--unavailable", "3"]);
    check_key(
        &proxy.endpoint(),
        &moto.s3_uri("unavailable.bin"),
        &["--timeout", "60s"],
        QUICK,
    )
    .assert_code(0)
    .assert_no_leak(&pass);
    let reqs = proxy.requests();
    assert_eq!(count(&reqs, "action=unavailable"), 3, "{}", proxy.log());
    assert!(
        count(
            &reqs,
            "TrentService.Decrypt owner=- action=forward status=200"
        ) >= 1,
        "{}",
        proxy.log()
    );
}

#[test]
fn reset_connections_are_retried() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "reset.bin");
    let proxy = Proxy::start(moto.port, &["--reset", "2"]);
    check_key(
        &proxy.endpoint(),
        &moto.s3_uri("reset.bin"),
        &["--timeout", "60s"],
        QUICK,
    )
    .assert_code(0)
    .assert_no_leak(&pass);
    let reqs = proxy.requests();
    assert_eq!(count(&reqs, "action=reset"), 2, "{}", proxy.log());
    assert!(
        count(
            &reqs,
            "TrentService.Decrypt owner=- action=forward status=200"
        ) >= 1,
        "{}",
        proxy.log()
    );
}

#[test]
fn a_service_that_never_recovers_fails_at_the_deadline() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "forever.bin");
    let proxy = Proxy::start(moto.port, &["--forever"]);
    let r = check_key(
        &proxy.endpoint(),
        &moto.s3_uri("forever.bin"),
        &["--timeout", "4s"],
        QUICK,
    );
    r.assert_code(4)
        .assert_one_error_line()
        .assert_stderr_mentions(&[
            "deadline",
            "timed out",
            "timeout",
            "gave up",
            "giving up",
            "4s",
        ])
        .assert_no_leak(&pass);
    assert!(
        r.elapsed >= Duration::from_secs(4) && r.elapsed <= Duration::from_secs(7),
        "--timeout 4s ended after {:?}",
        r.elapsed
    );
    assert!(
        proxy.requests().len() >= 2,
        "it never retried:\n{}",
        proxy.log()
    );
}

#[test]
fn a_stalled_service_fails_at_the_deadline() {
    let moto = Moto::start();
    wrapped_s3(&moto, "stall.bin");
    let proxy = Proxy::start(moto.port, &["--stall", "30", "--stall-count", "all"]);
    let r = check_key(
        &proxy.endpoint(),
        &moto.s3_uri("stall.bin"),
        &["--timeout", "3s"],
        QUICK,
    );
    r.assert_code(4).assert_one_error_line();
    assert!(
        r.elapsed >= Duration::from_secs(3) && r.elapsed <= Duration::from_secs(6),
        "--timeout 3s against a hung server ended after {:?}",
        r.elapsed
    );
}

// ---- d. credentials and region from the instance role --------------------

/// secretfs_cmd without credentials (and, unless `keep_region`, without a
/// region), IMDS enabled at `imds`.
fn instance_role_cmd(moto: &Moto, imds: &FakeImds, keep_region: bool) -> std::process::Command {
    let mut cmd = secretfs_cmd(&moto.endpoint());
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint());
    if !keep_region {
        cmd.env_remove("AWS_REGION");
    }
    cmd
}

#[test]
fn the_instance_role_provides_credentials_and_region() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "role.bin");
    let imds = FakeImds::start("ok");
    let mut cmd = instance_role_cmd(&moto, &imds, false);
    cmd.args([
        "check-key",
        "--wrapped-key",
        &moto.s3_uri("role.bin"),
        "--timeout",
        "60s",
    ])
    .args(context_flags());
    run(cmd, QUICK).assert_code(0).assert_no_leak(&pass);
    let log = imds.log();
    assert!(
        log.contains("PUT /latest/api/token -> 200"),
        "no IMDSv2 token taken:\n{log}"
    );
    assert!(
        log.contains("GET /latest/meta-data/iam/security-credentials/secretfs-test-role -> 200"),
        "no role credentials fetched:\n{log}"
    );
    assert!(
        log.contains("GET /latest/meta-data/placement/region -> 200"),
        "no region fetched:\n{log}"
    );
}

#[test]
fn an_imds_that_refuses_tokens_fails_fast() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "refused.bin");
    // The region stays set: this is about credentials only.
    let imds = FakeImds::start("refuse-token");
    let mut cmd = instance_role_cmd(&moto, &imds, true);
    cmd.args([
        "check-key",
        "--wrapped-key",
        &moto.s3_uri("refused.bin"),
        "--timeout",
        "60s",
    ])
    .args(context_flags());
    // Above --timeout: a binary that retries to the deadline ends by itself
    // and fails the elapsed check below, with its own stderr.
    let r = run(cmd, Duration::from_secs(90));
    assert!(
        r.elapsed < Duration::from_secs(15),
        "hung for {:?} (exit {:?}) on an IMDS that refuses tokens; stderr:\n{}",
        r.elapsed,
        r.code,
        r.stderr()
    );
    r.assert_code(4)
        .assert_one_error_line()
        .assert_no_leak(&pass);
    assert!(
        imds.log().contains("PUT /latest/api/token -> 403"),
        "IMDS never asked:\n{}",
        imds.log()
    );
}

#[test]
fn an_unreachable_imds_fails_by_the_deadline() {
    let moto = Moto::start();
    wrapped_s3(&moto, "dropped.bin");
    let imds = FakeImds::start("drop");
    let mut cmd = instance_role_cmd(&moto, &imds, true);
    cmd.args([
        "check-key",
        "--wrapped-key",
        &moto.s3_uri("dropped.bin"),
        "--timeout",
        "5s",
    ])
    .args(context_flags());
    let r = run(cmd, QUICK);
    r.assert_code(4).assert_one_error_line();
    assert!(
        r.elapsed < Duration::from_secs(15),
        "--timeout 5s ended after {:?}",
        r.elapsed
    );
}

// ---- e. seal refuses to overwrite ----------------------------------------

#[test]
fn seal_refuses_to_overwrite_a_file() {
    let moto = Moto::start();
    let blob_path = moto.dir().join("wrapped.bin");
    let blob_s = blob_path.to_str().unwrap();
    seal(&moto, &moto.endpoint(), blob_s, &[]).assert_code(0);
    let before = fs::read(&blob_path).unwrap();

    let (pass_path, pass) = passphrase_file(&moto);
    let r = seal(
        &moto,
        &moto.endpoint(),
        blob_s,
        &["--passphrase-file", pass_path.to_str().unwrap()],
    );
    r.assert_code(3)
        .assert_one_error_line()
        .assert_stderr_mentions(&["--force"])
        .assert_no_leak(&pass);
    assert_eq!(
        fs::read(&blob_path).unwrap(),
        before,
        "the refused seal changed the file"
    );

    seal(
        &moto,
        &moto.endpoint(),
        blob_s,
        &["--passphrase-file", pass_path.to_str().unwrap(), "--force"],
    )
    .assert_code(0)
    .assert_no_leak(&pass);
    assert_eq!(
        moto.decrypt(&fs::read(&blob_path).unwrap(), &CONTEXT).1,
        pass,
        "--force did not overwrite"
    );
}

#[test]
fn seal_refuses_to_overwrite_an_object() {
    let moto = Moto::start();
    let uri = moto.s3_uri("taken.bin");
    seal(&moto, &moto.endpoint(), &uri, &[]).assert_code(0);
    let before = moto.get_object("taken.bin").unwrap();

    let (pass_path, pass) = passphrase_file(&moto);
    seal(
        &moto,
        &moto.endpoint(),
        &uri,
        &["--passphrase-file", pass_path.to_str().unwrap()],
    )
    .assert_code(3)
    .assert_one_error_line()
    .assert_stderr_mentions(&["--force"])
    .assert_no_leak(&pass);
    assert_eq!(
        moto.get_object("taken.bin").unwrap(),
        before,
        "the refused seal changed the object"
    );
}

// ---- f. usage errors -----------------------------------------------------

#[test]
fn malformed_values_are_usage_errors() {
    // Nothing listens on port 9: a usage error must come before any call.
    let endpoint = "http://127.0.0.1:9";
    let cases: &[(&[&str], &str)] = &[
        (&["check-key", "--wrapped-key", "s3://"], "--wrapped-key"),
        (&["check-key", "--wrapped-key", "s3:/x"], "--wrapped-key"),
        (
            &["check-key", "--wrapped-key", "s3://bucket-only"],
            "--wrapped-key",
        ),
        (
            &[
                "check-key",
                "--wrapped-key",
                "s3://bucket/k",
                "--encryption-context",
                "novalue",
            ],
            "--encryption-context",
        ),
        (
            &[
                "check-key",
                "--wrapped-key",
                "s3://bucket/k",
                "--timeout",
                "soon",
            ],
            "--timeout",
        ),
        (
            &[
                "check-key",
                "--wrapped-key",
                "s3://bucket/k",
                "--expected-bucket-owner",
                "12345",
            ],
            "--expected-bucket-owner",
        ),
        (&["seal", "--kms-key", "alias/x", "--to", "s3://"], "--to"),
        (&["seal", "--to", "/tmp/x"], "--kms-key"),
        (&["check-key"], "--wrapped-key"),
    ];
    for (args, flag) in cases {
        let mut cmd = secretfs_cmd(endpoint);
        cmd.args(*args);
        let r = run(cmd, QUICK);
        r.assert_code(2).assert_stderr_mentions(&[flag]);
        assert!(
            r.elapsed < Duration::from_secs(10),
            "{args:?} took {:?}",
            r.elapsed
        );
    }
}

// ---- g. secret handling --------------------------------------------------

/// `SECRETFS_LOG=trace` plus the SDK's own body-logging switches: the
/// KMS Encrypt request (seal from stdin) and the Decrypt response
/// (check-key) hold the plaintext, and neither may reach the log.
#[test]
fn trace_logging_and_sdk_body_switches_leak_no_passphrase() {
    let moto = Moto::start();
    let uri = moto.s3_uri("traced.bin");
    let (pass_path, pass) = passphrase_file(&moto);
    let loud = |cmd: &mut std::process::Command| {
        cmd.env("SECRETFS_LOG", "trace")
            .env("LOG_SENSITIVE_BODIES", "true")
            .env("LOG_SIGNABLE_BODY", "true");
    };
    let mut cmd = secretfs_cmd(&moto.endpoint());
    cmd.args(["seal", "--kms-key", &moto.alias, "--to", &uri])
        .args(["--passphrase-file", "-"])
        .args(context_flags())
        .stdin(fs::File::open(&pass_path).unwrap());
    loud(&mut cmd);
    let sealed = run(cmd, QUICK);
    sealed.assert_code(0).assert_no_leak(&pass);
    // The filter took effect: the SDK logged at debug, secretfs at trace.
    assert!(
        sealed.stderr().contains("DEBUG") && sealed.stderr().lines().count() > 20,
        "seal logged too little for SECRETFS_LOG=trace to have applied"
    );
    let blob = moto.get_object("traced.bin").expect("seal wrote no object");
    assert_eq!(
        moto.decrypt(&blob, &CONTEXT).1,
        pass,
        "seal wrapped other bytes than stdin's"
    );

    let mut cmd = secretfs_cmd(&moto.endpoint());
    cmd.args(["check-key", "--wrapped-key", &uri])
        .args(context_flags());
    loud(&mut cmd);
    let r = run(cmd, QUICK);
    r.assert_code(0).assert_no_leak(&pass);
    assert!(
        r.stderr().contains("DEBUG"),
        "check-key logged no debug line"
    );

    // Generated inside KMS: the plaintext never reaches this host.
    let gen = moto.s3_uri("generated-traced.bin");
    let mut cmd = secretfs_cmd(&moto.endpoint());
    cmd.args(["seal", "--kms-key", &moto.alias, "--to", &gen])
        .args(context_flags());
    loud(&mut cmd);
    let sealed = run(cmd, QUICK);
    sealed.assert_code(0);
    let blob = moto.get_object("generated-traced.bin").expect("no object");
    let plain = moto.decrypt(&blob, &CONTEXT).1;
    assert_eq!(plain.len(), 64);
    sealed.assert_no_leak(&plain);
    assert!(
        !sealed.stderr().contains("\"Plaintext\""),
        "seal sent a Plaintext field to KMS"
    );
}

/// Plain http to a host that is neither loopback nor link-local is refused
/// before any connection, wherever the endpoint is named; `--allow-http`
/// lets it through (shown without traffic: the key file is missing, which
/// is found first).
#[test]
fn cleartext_endpoints_to_remote_hosts_are_refused() {
    let remote = "http://192.0.2.1:4566";
    let args = [
        "check-key",
        "--wrapped-key",
        "/nonexistent/secretfs-key.bin",
    ];
    let mut cmd = secretfs_cmd("http://127.0.0.1:9");
    cmd.args(args).args(["--endpoint-url", remote]);
    run(cmd, QUICK).assert_code(2).assert_stderr_mentions(&[
        "--endpoint-url",
        remote,
        "--allow-http",
    ]);
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    ] {
        let mut cmd = secretfs_cmd("http://127.0.0.1:9");
        cmd.args(args).env(var, remote);
        run(cmd, QUICK)
            .assert_code(2)
            .assert_stderr_mentions(&[var, "--allow-http"]);
    }
    let mut cmd = secretfs_cmd("http://127.0.0.1:9");
    cmd.args(args)
        .args(["--endpoint-url", remote, "--allow-http"]);
    run(cmd, QUICK)
        .assert_code(4)
        .assert_stderr_mentions(&["does not exist"]);
}

/// The AWS profile's `endpoint_url` (which only the SDK reads) is held to
/// the same rule: plain http to a remote host is refused before any
/// request (exit 4, naming it and `--allow-http`); plain http to loopback
/// passes (and then finds nothing listening).
#[test]
fn a_cleartext_endpoint_in_the_aws_profile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("key.bin");
    fs::write(&blob, aws::random_bytes(64)).unwrap();
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o600)).unwrap();
    let check = |endpoint: &str| {
        let profile = dir.path().join("config");
        fs::write(
            &profile,
            format!("[default]\nregion = us-east-1\nendpoint_url = {endpoint}\n"),
        )
        .unwrap();
        let mut cmd = secretfs_cmd("http://127.0.0.1:9");
        cmd.env_remove("AWS_ENDPOINT_URL")
            .env("AWS_CONFIG_FILE", &profile)
            .args(["check-key", "--wrapped-key"])
            .arg(&blob)
            .args(["--timeout", "2s"]);
        run(cmd, QUICK)
    };
    check("http://192.0.2.1:4566")
        .assert_code(4)
        .assert_stderr_mentions(&[
            "profile's endpoint_url",
            "http://192.0.2.1:4566",
            "--allow-http",
        ]);
    let local = check("http://127.0.0.1:9");
    assert!(
        !local.stderr().contains("profile's endpoint_url"),
        "a loopback endpoint in the profile was refused:\n{}",
        local.stderr()
    );
}

// ---- h. re-wrapping a blob ------------------------------------------------

fn rewrap(endpoint: &str, wrapped: &str, new_key: &str, extra: &[&str]) -> Run {
    let mut cmd = secretfs_cmd(endpoint);
    cmd.args(["rewrap", "--wrapped-key", wrapped, "--new-kms-key", new_key])
        .args(extra)
        // Loud: the ReEncrypt exchange must carry no plaintext to log.
        .env("SECRETFS_LOG", "trace")
        .env("LOG_SENSITIVE_BODIES", "true");
    run(cmd, QUICK)
}

/// `rewrap --wrapped-key` proves the new blob before it writes: with
/// Decrypt under the new key denied (ReEncrypt to it still allowed, as a
/// key policy without kms:Decrypt for the caller does), it stops with exit
/// 4 naming kms:Decrypt and the key, and the blob is unchanged and still
/// opens; with Decrypt allowed it is re-wrapped.
#[test]
fn rewrap_refuses_a_new_key_that_does_not_decrypt() {
    let moto = Moto::start();
    let pass = wrapped_s3(&moto, "fleet/key.bin");
    let uri = moto.s3_uri("fleet/key.bin");
    let before = moto.get_object("fleet/key.bin").unwrap();
    let deny = format!("Decrypt:{}", moto.other_key_arn);
    let proxy = Proxy::start(moto.port, &["--deny-kms", &deny]);
    let ctx = context_flags();
    let ctx: Vec<&str> = ctx.iter().map(String::as_str).collect();
    let r = rewrap(&proxy.endpoint(), &uri, &moto.other_key_id, &ctx);
    r.assert_code(4)
        .assert_no_leak(&pass)
        .assert_stderr_mentions(&[
            "kms:Decrypt",
            &moto.other_key_arn,
            "before anything was written",
        ]);
    assert_eq!(
        moto.get_object("fleet/key.bin").unwrap(),
        before,
        "a rewrap whose new key does not decrypt wrote the object"
    );
    check_key(&proxy.endpoint(), &uri, &[], QUICK).assert_code(0);
    rewrap(&moto.endpoint(), &uri, &moto.other_key_id, &ctx).assert_code(0);
    assert_eq!(
        moto.decrypt(&moto.get_object("fleet/key.bin").unwrap(), &CONTEXT),
        (moto.other_key_arn.clone(), pass)
    );
}

/// `rewrap --wrapped-key`: a blob in S3 re-wrapped in place and a blob file
/// re-wrapped into a new file, both under the second key by KMS ReEncrypt
/// (the passphrase inside unchanged, never in any output at trace level);
/// a wrong context and an existing `--to` are refused with nothing
/// written; once the first key is disabled the re-wrapped blobs still
/// open and the one left under it does not (so disabling takes effect).
#[test]
fn rewrap_moves_a_blob_to_another_key_and_survives_the_old_keys_disabling() {
    let moto = Moto::start();
    let ep = moto.endpoint();
    let pass = wrapped_s3(&moto, "fleet/key.bin");
    let uri = moto.s3_uri("fleet/key.bin");
    let before = moto.get_object("fleet/key.bin").unwrap();

    let r = rewrap(
        &ep,
        &uri,
        &moto.other_key_id,
        &["--encryption-context", "purpose=other"],
    );
    r.assert_code(4).assert_no_leak(&pass);
    assert_eq!(
        moto.get_object("fleet/key.bin").unwrap(),
        before,
        "a refused rewrap wrote the object"
    );

    let ctx = context_flags();
    let ctx: Vec<&str> = ctx.iter().map(String::as_str).collect();
    let r = rewrap(&ep, &uri, &moto.other_key_id, &ctx);
    r.assert_code(0).assert_no_leak(&pass);
    assert!(
        r.stderr().contains("DEBUG"),
        "the trace filter did not apply"
    );
    let after = moto.get_object("fleet/key.bin").unwrap();
    assert_ne!(after, before, "the object was not rewritten");
    assert_eq!(
        moto.decrypt(&after, &CONTEXT),
        (moto.other_key_arn.clone(), pass.clone())
    );

    let (pass_path, pass2) = passphrase_file(&moto);
    let a = moto.dir().join("a.bin");
    let b = moto.dir().join("b.bin");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    seal(
        &moto,
        &ep,
        a_s,
        &["--passphrase-file", pass_path.to_str().unwrap()],
    )
    .assert_code(0);
    let mut json = ctx.clone();
    json.extend(["--to", b_s, "--json"]);
    let r = rewrap(&ep, a_s, &moto.other_key_id, &json);
    r.assert_code(0).assert_no_leak(&pass2);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("--json printed JSON");
    assert_eq!(v["blob"]["key_id"], moto.other_key_arn.as_str(), "{v}");
    assert_eq!(v["blob"]["from_key_id"], moto.key_arn.as_str(), "{v}");
    assert_eq!(
        moto.decrypt(&fs::read(&b).unwrap(), &CONTEXT),
        (moto.other_key_arn.clone(), pass2.clone())
    );
    assert_eq!(
        fs::metadata(&b).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        moto.decrypt(&fs::read(&a).unwrap(), &CONTEXT).0,
        moto.key_arn,
        "the source file changed"
    );
    let b_bytes = fs::read(&b).unwrap();
    rewrap(&ep, a_s, &moto.other_key_id, &json)
        .assert_code(3)
        .assert_stderr_mentions(&["already exists", "--force"]);
    assert_eq!(
        fs::read(&b).unwrap(),
        b_bytes,
        "an existing --to was replaced"
    );

    moto.disable_key(&moto.key_id);
    for blob in [uri.as_str(), b_s] {
        let r = check_key(&ep, blob, &["--json"], QUICK);
        r.assert_code(0);
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert!(v["bytes"].as_u64().is_some(), "{v}");
    }
    check_key(&ep, a_s, &[], QUICK)
        .assert_code(4)
        .assert_stderr_mentions(&["disabled"]);
}
