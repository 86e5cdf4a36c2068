//! The few errors callers branch on, and the exit code each maps to.
//!
//! Everything else is an `anyhow` chain with short gerund contexts; `main`
//! downcasts to [`Failure`] to choose the exit code. The codes are part of
//! the command-line contract (user data and unit files branch on them).

use std::fmt;

/// Exit code: provisioned, or already provisioned.
pub const EXIT_OK: u8 = 0;
/// Exit code: failed (an I/O error, a tool failed, the kernel said no).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error (a malformed flag, config file or argument).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: refused — the device holds foreign data, is mounted or busy.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: the key could not be had (S3/KMS denied or missing, wrong
/// encryption context or key id, wrong passphrase, deadline passed).
pub const EXIT_KEY_UNAVAILABLE: u8 = 4;
/// Exit code: `--disk auto` found no instance-store disk (and
/// `--no-disks ok` was not given).
pub const EXIT_NO_DISKS: u8 = 5;
/// Exit code: `status` found the volume not up (not open, or open but not
/// mounted); its report is printed all the same.
pub const EXIT_NOT_UP: u8 = 6;

/// A failure with a defined exit code. Carried inside `anyhow::Error`.
#[derive(Debug)]
pub enum Failure {
    /// Bad input that clap could not catch (config file, combinations).
    Usage(String),
    /// Refused to touch the target; nothing was written.
    Refused(String),
    /// The key could not be fetched, decrypted or did not open the volume.
    KeyUnavailable(String),
    /// `--disk auto` found no instance-store disk.
    NoDisks(String),
    /// `status`: the volume is not open and mounted.
    NotUp(String),
    /// What a child process of this binary reported ([`crate::member`]),
    /// with the exit code it would have exited with.
    Relayed { exit: u8, message: String },
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::KeyUnavailable(_) => EXIT_KEY_UNAVAILABLE,
            Failure::NoDisks(_) => EXIT_NO_DISKS,
            Failure::NotUp(_) => EXIT_NOT_UP,
            Failure::Relayed { exit, .. } => *exit,
        }
    }

    /// The failure's kind in `--json` errors, from its exit code.
    pub fn kind(&self) -> &'static str {
        match self.exit_code() {
            EXIT_USAGE => "usage",
            EXIT_REFUSED => "refused",
            EXIT_KEY_UNAVAILABLE => "key_unavailable",
            EXIT_NO_DISKS => "no_disks",
            EXIT_NOT_UP => "not_up",
            _ => "failed",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) => write!(f, "{m}"),
            Failure::Refused(m) => write!(f, "refused: {m}"),
            Failure::KeyUnavailable(m) => write!(f, "key unavailable: {m}"),
            Failure::NoDisks(m) => write!(f, "no disks: {m}"),
            Failure::NotUp(m) => write!(f, "not up: {m}"),
            Failure::Relayed { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Shorthand for `Err(Failure::Usage(..).into())`.
pub fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Failure::Usage(msg.into()).into())
}

/// Shorthand for `Err(Failure::Refused(..).into())`.
pub fn refused<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Failure::Refused(msg.into()).into())
}

/// Shorthand for `Err(Failure::KeyUnavailable(..).into())`.
pub fn key_unavailable<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Failure::KeyUnavailable(msg.into()).into())
}

/// The exit code for an error chain: the first [`Failure`] found decides,
/// anything else is a plain failure.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(EXIT_FAILED, Failure::exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_follows_the_failure_through_context() {
        let e = refused::<()>("busy").context("provisioning").unwrap_err();
        assert_eq!(exit_code_of(&e), EXIT_REFUSED);
        let e = key_unavailable::<()>("denied").unwrap_err();
        assert_eq!(exit_code_of(&e), EXIT_KEY_UNAVAILABLE);
        let e = anyhow::anyhow!("io").context("x");
        assert_eq!(exit_code_of(&e), EXIT_FAILED);
        assert_eq!(exit_code_of(&usage::<()>("bad").unwrap_err()), EXIT_USAGE);
    }
}
