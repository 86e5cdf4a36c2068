//! Local AWS for the integration tests: a moto server (KMS + S3), a
//! fault-injecting proxy in front of it and a fake IMDSv2, all on 127.0.0.1.
//!
//! Each helper is a child process of the test that started it, killed by its
//! own PID on drop. The Python helpers also exit by themselves after a bounded
//! time and as soon as their stdin (a pipe from the test) closes, so a test
//! process that dies hard leaves nothing running for long.
//!
//! moto is found at `$SECRETFS_MOTO_SERVER` or
//! `<crate>/.cache/venv/bin/moto_server` (installed by `scripts/setup`); when
//! it is missing the tests fail, they never skip. The Python interpreter is
//! `$SECRETFS_MOTO_PYTHON`, or the one on moto_server's `#!` line (it has
//! boto3 too), or `python3`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long moto may take to answer after it was started.
const MOTO_READY: Duration = Duration::from_secs(15);
/// How long any helper may take to print its port.
const HELPER_READY: Duration = Duration::from_secs(15);
/// Upper bound on the life of every helper process (seconds): a real-guest
/// instance (tests/real_guest.rs) boots several times under one moto.
const HELPER_MAX_SECONDS: &str = "1800";

/// The crate's root directory.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/support`, where the Python helpers live.
pub fn support_dir() -> PathBuf {
    manifest_dir().join("tests").join("support")
}

/// The moto_server script; panics when it is not installed.
pub fn moto_server_path() -> PathBuf {
    let path = std::env::var_os("SECRETFS_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join(".cache/venv/bin/moto_server"));
    if !path.is_file() {
        panic!(
            "moto not installed: run scripts/setup (looked for {}; \
             SECRETFS_MOTO_SERVER overrides)",
            path.display()
        );
    }
    path
}

/// The interpreter named on a script's `#!` line, if it is a Python.
pub fn shebang_python(script: &Path) -> Option<PathBuf> {
    let mut head = [0u8; 512];
    let n = fs::File::open(script).ok()?.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    let first = text.lines().next()?.strip_prefix("#!")?.trim();
    let interp = PathBuf::from(first.split_whitespace().next()?);
    let is_python = interp
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("python"));
    (is_python && interp.is_file()).then_some(interp)
}

/// The Python that runs the helpers (must have boto3 for moto_setup.py).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SECRETFS_MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    shebang_python(&moto_server_path()).unwrap_or_else(|| PathBuf::from("python3"))
}

/// A free TCP port on 127.0.0.1 (free when asked; callers retry on a race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lower- or upper-case hex; panics on anything else.
pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex: {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Standard base64 with padding, on one line.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Fake access key id and secret for this test run (not secrets: moto
/// accepts any credentials).
pub fn fake_credentials() -> &'static (String, String) {
    static CREDS: OnceLock<(String, String)> = OnceLock::new();
    CREDS.get_or_init(|| {
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let id: String = random_bytes(16)
            .iter()
            .map(|b| UPPER[usize::from(*b) % UPPER.len()] as char)
            .collect();
        let secret: String = random_bytes(40)
            .iter()
            .map(|b| ANY[usize::from(*b) % ANY.len()] as char)
            .collect();
        (format!("AKIA{id}"), secret)
    })
}

/// Removes every AWS_* variable of the host from `cmd` and points the AWS
/// config and credentials files at /dev/null.
fn clean_aws_env(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
}

/// A child process of the test, killed by its PID on drop. Its stdout and
/// stderr go to `log_path`, except for helpers that print their port first.
struct Guarded {
    child: Child,
    /// Held open: the helper exits when it closes.
    stdin: Option<ChildStdin>,
    /// Held open so the helper never writes into a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
    log_path: PathBuf,
}

impl Guarded {
    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a Python helper that prints `PORT <n>` first; returns it and n.
fn start_port_helper(script: &str, args: &[&str], log_path: PathBuf) -> (Guarded, u16) {
    let log = fs::File::create(&log_path).expect("creating a helper log");
    let mut child = Command::new(python())
        .arg(support_dir().join(script))
        .args(args)
        .args(["--max-seconds", HELPER_MAX_SECONDS, "--watch-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script} with {}: {e}", python().display()));
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let res = reader.read_line(&mut line);
        let _ = tx.send((res.map(|_| line), reader));
    });
    let mut guarded = Guarded {
        child,
        stdin,
        _stdout: None,
        log_path,
    };
    let (line, reader) = match rx.recv_timeout(HELPER_READY) {
        Ok((Ok(line), reader)) => (line, reader),
        Ok((Err(e), _)) => panic!("{script}: reading its port: {e}\n{}", guarded.log()),
        Err(_) => panic!(
            "{script} printed no port within {HELPER_READY:?}\n{}",
            guarded.log()
        ),
    };
    guarded._stdout = Some(reader);
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| {
            panic!(
                "{script}: expected `PORT n`, got {line:?}\n{}",
                guarded.log()
            )
        });
    (guarded, port)
}

/// True once something answers HTTP on 127.0.0.1:port.
fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    matches!(s.read(&mut head), Ok(n) if n >= 7 && head.starts_with(b"HTTP/1."))
}

/// A moto server with a KMS key (aliased), a second key and a bucket.
pub struct Moto {
    pub port: u16,
    /// Key id of the key behind `alias`.
    pub key_id: String,
    pub key_arn: String,
    /// `alias/secretfs-test`.
    pub alias: String,
    /// A second key, for "encrypted under another key" cases.
    pub other_key_id: String,
    pub other_key_arn: String,
    /// `secretfs-test`.
    pub bucket: String,
    proc: Guarded,
    dir: TempDir,
}

impl Moto {
    /// Starts moto on a free port, waits until it answers, and creates the
    /// keys and the bucket. Panics (never skips) when moto is not installed.
    pub fn start() -> Moto {
        let server = moto_server_path();
        let dir = tempfile::Builder::new()
            .prefix("secretfs-moto-")
            .tempdir()
            .expect("creating a temp dir");
        let mut last_log = String::new();
        for attempt in 1..=3 {
            let port = free_port();
            let log_path = dir.path().join(format!("moto-{attempt}.log"));
            let log = fs::File::create(&log_path).expect("creating moto's log");
            let log2 = log.try_clone().expect("cloning a file handle");
            let port_s = port.to_string();
            let server_args = ["-H", "127.0.0.1", "-p", port_s.as_str()];
            // Run the moto_server script inside moto_guard.py when it is a
            // Python script, so moto is bounded in time and dies with us.
            let mut cmd = match shebang_python(&server) {
                Some(py) => {
                    let mut c = Command::new(py);
                    c.arg(support_dir().join("moto_guard.py"))
                        .args(["--max-seconds", HELPER_MAX_SECONDS, "--watch-stdin"])
                        .arg(&server);
                    c
                }
                None => Command::new(&server),
            };
            // moto uses botocore itself: keep the host's AWS setup out of it.
            clean_aws_env(&mut cmd).env("AWS_EC2_METADATA_DISABLED", "true");
            let mut child = cmd
                .args(server_args)
                .stdin(Stdio::piped())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
            let stdin = child.stdin.take();
            let mut proc = Guarded {
                child,
                stdin,
                _stdout: None,
                log_path,
            };
            let deadline = Instant::now() + MOTO_READY;
            let ready = loop {
                if answers_http(port) {
                    break true;
                }
                if proc.exited().is_some() || Instant::now() >= deadline {
                    break false;
                }
                thread::sleep(Duration::from_millis(50));
            };
            if !ready {
                last_log = proc.log();
                continue; // port taken meanwhile, or a slow start: try again
            }
            let endpoint = format!("http://127.0.0.1:{port}");
            let setup = try_moto_tool(&endpoint, &["setup"])
                .unwrap_or_else(|e| panic!("{e}\n--- moto's log\n{}", proc.log()));
            let field = |name: &str| -> String {
                setup[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("moto_setup.py printed no {name}: {setup}"))
                    .to_owned()
            };
            return Moto {
                port,
                key_id: field("key_id"),
                key_arn: field("key_arn"),
                alias: field("alias"),
                other_key_id: field("other_key_id"),
                other_key_arn: field("other_key_arn"),
                bucket: field("bucket"),
                proc,
                dir,
            };
        }
        panic!(
            "moto ({}) did not answer within {MOTO_READY:?} after 3 tries; its log:\n{last_log}",
            server.display()
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<key>`.
    pub fn s3_uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// A scratch directory that lives as long as this server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What moto logged (one line per request).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Runs a `moto_setup.py` subcommand against this server.
    pub fn tool(&self, args: &[&str]) -> serde_json::Value {
        try_moto_tool(&self.endpoint(), args)
            .unwrap_or_else(|e| panic!("{e}\n--- moto's log\n{}", self.log()))
    }

    /// The object's bytes, or None if there is no such object.
    pub fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        let head = self.tool(&["head", "--bucket", &self.bucket, "--key", key]);
        if head["exists"] != serde_json::Value::Bool(true) {
            return None;
        }
        let out = self.dir().join(format!("get-{}", hex(&random_bytes(8))));
        let out_s = out.to_str().expect("utf-8 temp path");
        self.tool(&[
            "get",
            "--bucket",
            &self.bucket,
            "--key",
            key,
            "--out",
            out_s,
        ]);
        let bytes = fs::read(&out).expect("reading a fetched object");
        let _ = fs::remove_file(&out);
        Some(bytes)
    }

    /// Deletes the object at `key` in the bucket.
    pub fn delete_object(&self, key: &str) {
        self.tool(&["delete", "--bucket", &self.bucket, "--key", key]);
    }

    /// Disables the KMS key `key_id`: from then on KMS refuses to use it
    /// (`DisabledException`, as moto_guard.py makes moto answer).
    pub fn disable_key(&self, key_id: &str) {
        let out = self.tool(&["disable-key", "--key-id", key_id]);
        assert_eq!(out["key_state"], "Disabled", "{out}");
    }

    /// A new KMS key (`description` says what for); its ARN.
    pub fn create_key(&self, description: &str) -> String {
        let out = self.tool(&["create-key", "--description", description]);
        out["key_arn"]
            .as_str()
            .expect("create-key printed key_arn")
            .to_owned()
    }

    /// Stores `body` at `key` in the bucket.
    pub fn put_object(&self, key: &str, body: &[u8]) {
        let path = self.dir().join(format!("put-{}", hex(&random_bytes(8))));
        fs::write(&path, body).expect("writing a temp file");
        let path_s = path.to_str().expect("utf-8 temp path");
        self.tool(&[
            "put",
            "--bucket",
            &self.bucket,
            "--key",
            key,
            "--file",
            path_s,
        ]);
        let _ = fs::remove_file(&path);
    }

    /// KMS-encrypts `plaintext` under `key_id` with the given context (as
    /// `aws kms encrypt` would, independently of secretfs) and stores the
    /// blob at `key` in the bucket; base64-encoded if `base64`.
    pub fn encrypt_to_object(
        &self,
        key: &str,
        key_id: &str,
        plaintext: &[u8],
        context: &[(&str, &str)],
        base64: bool,
    ) {
        let path = self.dir().join(format!("plain-{}", hex(&random_bytes(8))));
        fs::write(&path, plaintext).expect("writing a temp file");
        let mut args: Vec<String> = [
            "encrypt",
            "--plaintext-file",
            path.to_str().expect("utf-8 temp path"),
            "--key-id",
            key_id,
            "--bucket",
            &self.bucket,
            "--key",
            key,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (k, v) in context {
            args.push("--context".to_owned());
            args.push(format!("{k}={v}"));
        }
        if base64 {
            args.push("--base64".to_owned());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.tool(&argv);
        let _ = fs::remove_file(&path);
    }

    /// KMS-decrypts a blob (raw or base64) with the given encryption
    /// context; returns (ARN of the key that encrypted it, plaintext).
    pub fn decrypt(&self, blob: &[u8], context: &[(&str, &str)]) -> (String, Vec<u8>) {
        let path = self.dir().join(format!("blob-{}", hex(&random_bytes(8))));
        fs::write(&path, blob).expect("writing a temp file");
        let mut args = vec![
            "decrypt".to_owned(),
            "--file".to_owned(),
            path.to_str().expect("utf-8 temp path").to_owned(),
        ];
        for (k, v) in context {
            args.push("--context".to_owned());
            args.push(format!("{k}={v}"));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.tool(&argv);
        let _ = fs::remove_file(&path);
        let key = out["key_id"].as_str().expect("key_id").to_owned();
        let plain = unhex(out["plaintext_hex"].as_str().expect("plaintext_hex"));
        (key, plain)
    }
}

/// Runs `moto_setup.py --endpoint ENDPOINT ARGS...`; its JSON output.
pub fn moto_tool(endpoint: &str, args: &[&str]) -> serde_json::Value {
    try_moto_tool(endpoint, args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_moto_tool(endpoint: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(python());
    let out = clean_aws_env(&mut cmd)
        .arg(support_dir().join("moto_setup.py"))
        .args(["--endpoint", endpoint])
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running moto_setup.py with {}: {e}", python().display()))?;
    if !out.status.success() {
        return Err(format!(
            "moto_setup.py {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "moto_setup.py {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The fault-injecting proxy (`tests/support/fault_proxy.py`) in front of a
/// server on 127.0.0.1.
pub struct Proxy {
    pub port: u16,
    proc: Guarded,
    _dir: TempDir,
}

impl Proxy {
    /// Starts the proxy forwarding to 127.0.0.1:`upstream_port` with the
    /// given fault flags (e.g. `&["--throttle", "3"]`).
    pub fn start(upstream_port: u16, args: &[&str]) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("secretfs-proxy-")
            .tempdir()
            .expect("creating a temp dir");
        let upstream = upstream_port.to_string();
        let mut all = vec!["--upstream", upstream.as_str()];
        all.extend_from_slice(args);
        let (proc, port) = start_port_helper("fault_proxy.py", &all, dir.path().join("proxy.log"));
        Proxy {
            port,
            proc,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the proxy logged: one `REQ ...` line per request.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The `REQ` lines of the log.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("REQ "))
            .map(str::to_owned)
            .collect()
    }
}

/// The fake IMDSv2 (`tests/support/fake_imds.py`).
pub struct FakeImds {
    pub port: u16,
    proc: Guarded,
    _dir: TempDir,
}

impl FakeImds {
    /// Starts it in `mode`: "ok", "refuse-token" or "drop".
    pub fn start(mode: &str) -> FakeImds {
        FakeImds::start_with(mode, &[])
    }

    /// As [`FakeImds::start`], with more flags (e.g. `--region`).
    pub fn start_with(mode: &str, args: &[&str]) -> FakeImds {
        let dir = tempfile::Builder::new()
            .prefix("secretfs-imds-")
            .tempdir()
            .expect("creating a temp dir");
        let mut all = vec!["--mode", mode];
        all.extend_from_slice(args);
        let (proc, port) = start_port_helper("fake_imds.py", &all, dir.path().join("imds.log"));
        FakeImds {
            port,
            proc,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, for AWS_EC2_METADATA_SERVICE_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything it logged: one `REQ ...` line per request.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// The secretfs binary with a clean AWS environment aimed at `moto_endpoint`:
/// every AWS_* variable of the host removed, then fake static credentials,
/// region us-east-1, IMDS disabled, `AWS_ENDPOINT_URL`, and empty config and
/// credentials files, so nothing of the host's AWS setup can leak in.
pub fn secretfs_cmd(moto_endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretfs"));
    clean_aws_env(&mut cmd);
    let (id, secret) = fake_credentials();
    cmd.env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", moto_endpoint)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// What a finished secretfs run left.
#[derive(Debug)]
pub struct Run {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    /// The command line, for messages.
    pub what: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with the whole run unless it exited with `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "`{}` exited {:?}, wanted {code}, after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.code,
            self.elapsed,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Panics unless stderr (lower-cased) contains one of `words`.
    pub fn assert_stderr_mentions(&self, words: &[&str]) -> &Self {
        let err = self.stderr().to_lowercase();
        assert!(
            words.iter().any(|w| err.contains(&w.to_lowercase())),
            "`{}`: stderr mentions none of {words:?}:\n{}",
            self.what,
            self.stderr()
        );
        self
    }

    /// Panics if `secret` shows up on stdout or stderr: as bytes, in hex
    /// (either case) or in base64.
    pub fn assert_no_leak(&self, secret: &[u8]) -> &Self {
        let forms = secret_forms(secret);
        for (stream, name) in [(&self.stdout, "stdout"), (&self.stderr, "stderr")] {
            let leaked = leaked_forms(stream, secret);
            if !leaked.is_empty() {
                // Shown with every form blacked out: a failing test must
                // not print the secret either.
                let mut shown = stream.clone();
                for form in &forms {
                    shown = redact(&shown, form);
                }
                panic!(
                    "`{}` leaked the passphrase on {name} (forms {leaked:?} of raw, hex, HEX, base64), \
                     shown redacted:\n{}",
                    self.what,
                    String::from_utf8_lossy(&shown)
                );
            }
        }
        self
    }

    /// The stderr lines that are not log lines (a log line starts with a
    /// timestamp or a level word).
    pub fn message_lines(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .map(strip_ansi)
            .filter(|l| !l.trim().is_empty() && !is_log_line(l))
            .collect()
    }

    /// The contract: an error is ONE line on stderr, besides log lines (or,
    /// if it is logged itself, exactly one ERROR log line and nothing else).
    pub fn assert_one_error_line(&self) -> &Self {
        let plain = self.message_lines();
        let logged_errors = self
            .stderr()
            .lines()
            .map(strip_ansi)
            .filter(|l| is_log_line(l) && l.contains("ERROR"))
            .count();
        assert!(
            plain.len() == 1 || (plain.is_empty() && logged_errors == 1),
            "`{}`: wanted one error line on stderr, got {} plain and {} logged:\n{}",
            self.what,
            plain.len(),
            logged_errors,
            self.stderr()
        );
        self
    }
}

/// True when `hay` contains `needle`.
/// `hay` with every occurrence of `needle` replaced by `[SECRET]`.
fn redact(hay: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(b"[SECRET]");
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// The forms a secret could be printed in: raw, hex, HEX, base64.
pub fn secret_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    assert!(!secret.is_empty());
    vec![
        secret.to_vec(),
        hex(secret).into_bytes(),
        hex(secret).to_uppercase().into_bytes(),
        base64(secret).into_bytes(),
    ]
}

/// Which of [`secret_forms`] occur in `hay` (their indices).
pub fn leaked_forms(hay: &[u8], secret: &[u8]) -> Vec<usize> {
    let forms = secret_forms(secret);
    (0..forms.len())
        .filter(|&i| contains(hay, &forms[i]))
        .collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `line` without ANSI escape sequences.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether a stderr line is a log line (it starts with a timestamp or a
/// level word), not a message.
pub fn is_log_line(line: &str) -> bool {
    let t = line.trim_start();
    if t.len() >= 10 && t.as_bytes()[..4].iter().all(u8::is_ascii_digit) && t.as_bytes()[4] == b'-'
    {
        return true; // 2026-01-01T00:00:00Z ...
    }
    ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
        .iter()
        .any(|lvl| {
            t.strip_prefix(lvl)
                .is_some_and(|rest| rest.starts_with([' ', ':', ']']))
        })
}

/// Runs `cmd` to completion, killing it (and failing the test) if it takes
/// longer than `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Run {
    let what = describe(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for secretfs") {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "`{what}` did not finish within {limit:?}; killed it\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Run {
        code: status.code(),
        stdout,
        stderr,
        elapsed,
        what,
    }
}

/// `secretfs ARGS...` (without the environment) for messages.
fn describe(cmd: &Command) -> String {
    let mut s = String::from("secretfs");
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
