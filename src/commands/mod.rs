//! One module per subcommand, each `run(args)`: settings from the flags
//! and the config file, then observe → plan → execute. What they share
//! (logging, JSON output, the root check) is here.

pub mod check_key;
pub mod down;
pub mod generate;
pub mod install_unit;
pub mod rewrap;
pub mod rotate;
pub mod seal;
pub mod setup_local_disks;
pub mod shred;
pub mod status;
pub mod swap;
pub mod up;
pub mod wait;

use std::io::Write;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::error::{usage, Failure};
use crate::luks;
use crate::names;

/// Environment variables that make the AWS SDK log request and response
/// bodies (KMS Encrypt's and Decrypt's hold the plaintext): removed at
/// start, whatever their value.
pub const SDK_BODY_LOGGING_ENV: [&str; 2] = ["LOG_SENSITIVE_BODIES", "LOG_SIGNABLE_BODY"];

/// Process-wide hardening and logging; call first thing in `main`, while
/// the process has one thread.
pub fn init(cli: &Cli) {
    // No core dumps and no ptrace by other users' processes: the
    // passphrase must never reach a core file.
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    for v in SDK_BODY_LOGGING_ENV {
        // Single-threaded here, so nothing reads the environment meanwhile.
        std::env::remove_var(v);
    }
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // The SDK's own warnings (one per failed IMDS or region lookup) repeat
    // what the retry loop reports once per attempt: keep them for -vv.
    let sdk = if cli.verbose > 1 { "debug" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env(names::ENV_LOG).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},aws_config={sdk},aws_runtime={sdk},aws_smithy_runtime={sdk},\
             aws_smithy_http_client={sdk},aws_sdk_kms={sdk},aws_sdk_s3={sdk},hyper=warn,rustls=warn"
        ))
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(nix::unistd::isatty(std::io::stderr()).unwrap_or(false))
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            loggable(m.target(), *m.level())
        }));
    let _ = tracing_subscriber::registry().with(fmt).try_init();
    luks::set_up_logging();
    // Only where a key is handled: the rest gain nothing from it.
    if matches!(
        cli.command,
        Command::Up(_)
            | Command::Swap(_)
            | Command::Seal(_)
            | Command::CheckKey(_)
            | Command::Rotate(_)
            | Command::SetupLocalDisks(_)
            | Command::Member
    ) {
        crate::keys::lock_all_memory();
    }
}

/// Whether an event may be logged at all, whatever `SECRETFS_LOG` says:
/// other crates' trace level is off, because there the SDK and its HTTP
/// stack log requests and responses with their bodies (and KMS bodies hold
/// plaintext keys).
fn loggable(target: &str, level: tracing::Level) -> bool {
    let ours = target == "secretfs" || target.starts_with("secretfs::");
    ours || level <= tracing::Level::DEBUG
}

/// The subcommand's name, as the user typed it.
fn command_name(cli: &Cli) -> &'static str {
    match &cli.command {
        Command::Up(_) => "up",
        Command::Down(_) => "down",
        Command::Status(_) => "status",
        Command::Seal(_) => "seal",
        Command::CheckKey(_) => "check-key",
        Command::Rotate(_) => "rotate",
        Command::Rewrap(_) => "rewrap",
        Command::Shred(_) => "shred",
        Command::Swap(_) => "swap",
        Command::Wait(_) => "wait",
        Command::InstallUnit(_) => "install-unit",
        Command::SetupLocalDisks(_) => "setup-local-disks",
        Command::Generate(_) => "generate",
        Command::Member => crate::names::MEMBER_COMMAND,
    }
}

/// Whether the command asked for JSON on stdout.
pub fn wants_json(cli: &Cli) -> bool {
    match &cli.command {
        Command::Up(a) => a.json,
        Command::Down(a) => a.json,
        Command::Status(a) => a.json,
        Command::Seal(a) => a.json,
        Command::CheckKey(a) => a.json,
        Command::Rotate(a) => a.json,
        Command::Rewrap(a) => a.json,
        Command::Shred(a) => a.json,
        Command::Swap(a) => a.json,
        Command::Wait(_)
        | Command::InstallUnit(_)
        | Command::SetupLocalDisks(_)
        | Command::Generate(_)
        | Command::Member => false,
    }
}

/// Runs the parsed command.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Up(a) => up::run(a),
        Command::Down(a) => down::run(a),
        Command::Status(a) => status::run(a),
        Command::Seal(a) => seal::run(a),
        Command::CheckKey(a) => check_key::run(a),
        Command::Rotate(a) => rotate::run(a),
        Command::Rewrap(a) => rewrap::run(a),
        Command::Shred(a) => shred::run(a),
        Command::Swap(a) => swap::run(a),
        Command::Wait(a) => wait::run(a),
        Command::InstallUnit(a) => install_unit::run(a),
        Command::SetupLocalDisks(a) => setup_local_disks::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Member => {
            // Its answer is on stdout, its exit code the one it answered
            // with; main adds nothing.
            let code = crate::member::child_main(crate::exec::format_member);
            std::process::exit(code.into())
        }
    }
}

/// Writes one JSON object and a newline to stdout, without the wrapped
/// data keys of any token in it (see [`without_wrapped_keys`]).
pub fn print_json(v: &impl Serialize) -> Result<()> {
    let mut v = serde_json::to_value(v).context("writing JSON")?;
    without_wrapped_keys(&mut v);
    JSON_PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &v).context("writing JSON")?;
    writeln!(out).context("writing JSON")
}

/// Drops the KMS ciphertext of every data-key record (an object with
/// `kms_key` and `ciphertext`) in `v`: `status --json` and `up --dry-run
/// --json` show the tokens, and a report collected from a fleet would
/// otherwise gather every volume's wrapped key in one place. Which KMS key
/// wraps it and whether it is bound stay.
fn without_wrapped_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if m.contains_key("kms_key") {
                m.remove("ciphertext");
            }
            m.values_mut().for_each(without_wrapped_keys);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_wrapped_keys),
        _ => {}
    }
}

/// A usage error (exit 2) unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return usage(format!("{what} needs root: run it with sudo"));
    }
    Ok(())
}

/// Whether this process has printed its JSON object: `--json` prints one.
static JSON_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints an error as one JSON object (for `--json`), unless the command
/// printed its report already (`status` with "up": false, a refused
/// `up --dry-run` with "refused").
pub fn print_error_json(cli: &Cli, err: &anyhow::Error, code: u8) {
    if JSON_PRINTED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let failure = err.chain().find_map(|e| e.downcast_ref::<Failure>());
    let kind = failure.map(Failure::kind);
    let _ = print_json(
        &json!({"command": command_name(cli), "ok": false, "error": format!("{err:#}"), "kind": kind.unwrap_or("failed"), "exit_code": code}),
    );
}

#[cfg(test)]
mod tests {
    use super::{loggable, without_wrapped_keys};
    use tracing::Level;

    #[test]
    fn json_reports_leave_out_wrapped_keys() {
        let mut v = serde_json::json!({"luks": {"token": {
            "data_key": {"kms_key": "arn:k", "ciphertext": "AQID", "instance": true},
            "next_key": {"kms_key": "arn:n", "ciphertext": "BAUG", "instance": false}}},
            "members": [{"token": {"data_key": {"kms_key": "arn:k", "ciphertext": "Bwg="}}}],
            "ciphertext": "not a data key record"});
        without_wrapped_keys(&mut v);
        let text = v.to_string();
        for c in ["AQID", "BAUG", "Bwg="] {
            assert!(!text.contains(c), "{text}");
        }
        assert_eq!(v["luks"]["token"]["data_key"]["kms_key"], "arn:k");
        assert_eq!(v["luks"]["token"]["data_key"]["instance"], true);
        assert_eq!(v["ciphertext"], "not a data key record");
    }

    #[test]
    fn other_crates_never_log_at_trace() {
        for t in [
            "aws_smithy_runtime::client::orchestrator",
            "hyper_util",
            "aws_sigv4",
            "h2",
            "secretfsx",
        ] {
            assert!(!loggable(t, Level::TRACE), "{t}");
            assert!(loggable(t, Level::DEBUG), "{t}");
        }
        assert!(loggable("secretfs", Level::TRACE));
        assert!(loggable("secretfs::luks", Level::TRACE));
    }
}
