//! Key material: the passphrase type and where passphrases come from.
//!
//! A [`Passphrase`] lives in one heap buffer that is allocated once at its
//! final size, locked into RAM with mlock(2) (so it is never swapped out),
//! zeroed on drop, cannot be cloned, and prints as `[redacted]`.

pub mod aws;
pub mod blob;

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{usage, Failure};

/// Longest passphrase accepted from a file, stdin or KMS.
pub const MAX_PASSPHRASE: usize = 8192;
/// Shortest KMS plaintext that gets PBKDF2 with 1000 iterations under
/// `--pbkdf auto`: 256 bits of randomness need no key stretching.
pub const HIGH_ENTROPY_MIN: usize = 32;
/// Length of a passphrase `seal` generates.
pub const GENERATED_LEN: usize = 64;

/// Secret bytes: locked in memory, zeroed on drop, never printed.
pub struct Passphrase {
    buf: Zeroizing<Vec<u8>>,
    locked: bool,
}

impl Passphrase {
    /// Copies `bytes` into a new locked buffer. The caller zeroes its copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(bytes.len().max(1)));
        // Lock before the secret is written, so it never sits in a page
        // that could be swapped. Failure (RLIMIT_MEMLOCK) is not fatal.
        let locked = lock(&buf);
        buf.extend_from_slice(bytes);
        Passphrase { buf, locked }
    }

    /// Reads up to [`MAX_PASSPHRASE`] bytes from a reader straight into a
    /// locked buffer, dropping one trailing newline.
    pub fn read_from(mut r: impl Read, what: &str) -> Result<Self> {
        let mut p = Passphrase {
            buf: Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE + 1)),
            locked: false,
        };
        p.locked = lock(&p.buf);
        let mut chunk = Zeroizing::new([0u8; 512]);
        loop {
            let n = r
                .read(&mut chunk[..])
                .with_context(|| format!("reading {what}"))?;
            if n == 0 {
                break;
            }
            if p.buf.len() + n > MAX_PASSPHRASE {
                return usage(format!(
                    "{what} is longer than {MAX_PASSPHRASE} bytes: is it the right file?"
                ));
            }
            p.buf.extend_from_slice(&chunk[..n]);
        }
        if p.buf.last() == Some(&b'\n') {
            p.buf.pop();
            if p.buf.last() == Some(&b'\r') {
                p.buf.pop();
            }
        }
        if p.buf.is_empty() {
            return usage(format!("{what} is empty: it must hold the passphrase"));
        }
        Ok(p)
    }

    /// Random bytes from the kernel's CSPRNG.
    pub fn generate(len: usize) -> Result<Self> {
        let mut tmp = Zeroizing::new(vec![0u8; len]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut tmp))
            .context("reading /dev/urandom")?;
        Ok(Self::from_slice(&tmp))
    }

    /// The secret bytes, for handing to libcryptsetup or KMS.
    pub fn expose(&self) -> &[u8] {
        &self.buf
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Whether mlock(2) succeeded.
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

fn lock(buf: &Vec<u8>) -> bool {
    let cap = buf.capacity();
    let Some(ptr) = std::ptr::NonNull::new(buf.as_ptr() as *mut std::ffi::c_void) else {
        return false;
    };
    // SAFETY: the range is the vector's own allocation, which does not move
    // or grow while the Passphrase lives (it is never pushed past capacity).
    unsafe { nix::sys::mman::mlock(ptr, cap) }.is_ok()
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        let cap = self.buf.capacity();
        // Zero the whole allocation (including spare capacity) first.
        self.buf.zeroize();
        if self.locked {
            if let Some(ptr) = std::ptr::NonNull::new(self.buf.as_ptr() as *mut std::ffi::c_void) {
                // SAFETY: same allocation that `lock` locked.
                let _ = unsafe { nix::sys::mman::munlock(ptr, cap) };
            }
        }
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

/// Where a passphrase came from; decides the PBKDF under `--pbkdf auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Decrypted by KMS (normally 64 random bytes made by `seal`).
    Kms,
    /// Typed or kept by a person: a file, stdin or the terminal.
    Human,
}

/// A source of the volume passphrase.
pub trait KeySource {
    /// Names the source for log lines ("s3://b/k via KMS"); never secret.
    fn describe(&self) -> String;
    /// Where the passphrase comes from.
    fn origin(&self) -> KeyOrigin;
    /// Fetches the passphrase. `first_format` asks a prompt to confirm.
    fn fetch(&self, first_format: bool) -> Result<Passphrase>;
}

/// A plaintext passphrase file, or `-` for stdin.
pub struct PassphraseFile(pub PathBuf);

impl KeySource for PassphraseFile {
    fn describe(&self) -> String {
        if self.0 == Path::new("-") {
            "passphrase on stdin".into()
        } else {
            format!("passphrase file {}", self.0.display())
        }
    }
    fn origin(&self) -> KeyOrigin {
        KeyOrigin::Human
    }
    fn fetch(&self, _first_format: bool) -> Result<Passphrase> {
        if self.0 == Path::new("-") {
            return Passphrase::read_from(std::io::stdin().lock(), "the passphrase on stdin");
        }
        let f = match std::fs::File::open(&self.0) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return usage(format!(
                    "passphrase file {} does not exist",
                    self.0.display()
                ))
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening passphrase file {}", self.0.display()))
            }
        };
        Passphrase::read_from(f, &format!("passphrase file {}", self.0.display()))
    }
}

/// Asks on the terminal, without echo.
pub struct Prompt;

impl KeySource for Prompt {
    fn describe(&self) -> String {
        "passphrase typed at the terminal".into()
    }
    fn origin(&self) -> KeyOrigin {
        KeyOrigin::Human
    }
    fn fetch(&self, first_format: bool) -> Result<Passphrase> {
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
            return usage(
                "no key given and no terminal to ask on: pass --wrapped-key s3://BUCKET/KEY or --passphrase-file PATH",
            );
        }
        let first = read_hidden("Passphrase for the secretfs volume: ")?;
        if first_format {
            let again = read_hidden("Again, to confirm (the volume will be formatted): ")?;
            if first.expose() != again.expose() {
                return Err(Failure::KeyUnavailable(
                    "the two passphrases differ; nothing was formatted".into(),
                )
                .into());
            }
        }
        Ok(first)
    }
}

/// Reads one line from the terminal with echo off; restores the terminal.
fn read_hidden(prompt: &str) -> Result<Passphrase> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let saved = tcgetattr(fd).context("reading terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    let mut err = std::io::stderr();
    let _ = err.write_all(prompt.as_bytes());
    let _ = err.flush();
    tcsetattr(fd, SetArg::TCSANOW, &quiet).context("turning terminal echo off")?;
    let line = read_line(&mut stdin.lock());
    let restored = tcsetattr(fd, SetArg::TCSANOW, &saved);
    let p = line?;
    restored.context("restoring terminal settings")?;
    Ok(p)
}

fn read_line(r: &mut impl Read) -> Result<Passphrase> {
    // Byte by byte so nothing past the newline is consumed.
    let mut one = [0u8; 1];
    let mut p = Passphrase {
        buf: Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE)),
        locked: false,
    };
    p.locked = lock(&p.buf);
    loop {
        match r.read(&mut one).context("reading the passphrase")? {
            0 => break,
            _ if one[0] == b'\n' => break,
            _ if p.buf.len() == MAX_PASSPHRASE => return usage("passphrase too long"),
            _ => p.buf.push(one[0]),
        }
    }
    one.zeroize();
    if p.buf.is_empty() {
        return usage("empty passphrase: nothing was changed");
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Passphrase::from_slice(b"correct horse battery staple");
        let shown = format!("{p:?} {:?}", Some(&p));
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn reads_and_trims_one_newline() {
        let p = Passphrase::read_from(&b"s3cret\n"[..], "test").unwrap();
        assert_eq!(p.expose(), b"s3cret");
        let p = Passphrase::read_from(&b"s3cret\n\n"[..], "test").unwrap();
        assert_eq!(p.expose(), b"s3cret\n");
        let p = Passphrase::read_from(&b"\x00\xffbin"[..], "test").unwrap();
        assert_eq!(p.expose(), b"\x00\xffbin");
    }

    #[test]
    fn rejects_empty_and_oversized() {
        assert!(Passphrase::read_from(&b"\n"[..], "test").is_err());
        assert!(Passphrase::read_from(&b""[..], "test").is_err());
        let big = vec![b'a'; MAX_PASSPHRASE + 1];
        let e = Passphrase::read_from(&big[..], "test").unwrap_err();
        assert!(format!("{e}").contains("longer than"));
    }

    #[test]
    fn generated_keys_differ_and_have_the_length() {
        let a = Passphrase::generate(GENERATED_LEN).unwrap();
        let b = Passphrase::generate(GENERATED_LEN).unwrap();
        assert_eq!(a.len(), GENERATED_LEN);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn terminal_line_reader_stops_at_newline() {
        let mut input = &b"typed\nrest"[..];
        let p = read_line(&mut input).unwrap();
        assert_eq!(p.expose(), b"typed");
        assert_eq!(input, b"rest");
    }
}
