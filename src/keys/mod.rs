//! Key material: the passphrase type and where passphrases come from.
//!
//! A [`Passphrase`] lives in whole pages of its own, allocated once at
//! their final size, locked into RAM with mlock(2) before a byte is written
//! (so it is never swapped out; a failed lock is a warning with the
//! reason), zeroed on drop, cannot be cloned, and prints as `[redacted]`.
//! Passphrases from stdin and the terminal are read from fd 0 straight
//! into those pages, past std's buffered `Stdin`.

pub mod aws;
pub mod blob;
pub mod data_key;
pub mod ephemeral;
pub mod rewrap;

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use std::alloc::Layout;
use std::ptr::NonNull;

use zeroize::Zeroize;

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
    buf: Locked,
    len: usize,
}

impl Passphrase {
    /// An empty passphrase with room for `cap` bytes, locked before any
    /// secret is written, so it never sits in a page that could be swapped.
    fn with_capacity(cap: usize) -> Self {
        Passphrase {
            buf: Locked::new(cap),
            len: 0,
        }
    }

    /// Copies `bytes` into a new locked buffer. The caller zeroes its copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut p = Self::with_capacity(bytes.len());
        p.buf.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        p.len = bytes.len();
        p
    }

    /// Reads up to [`MAX_PASSPHRASE`] bytes from a reader straight into a
    /// locked buffer (no intermediate buffer: give it an unbuffered
    /// reader), dropping one trailing newline.
    pub fn read_from(mut r: impl Read, what: &str) -> Result<Self> {
        let mut p = Self::with_capacity(MAX_PASSPHRASE + 1);
        loop {
            let room = &mut p.buf.bytes_mut()[p.len..=MAX_PASSPHRASE];
            let n = r.read(room).with_context(|| format!("reading {what}"))?;
            if n == 0 {
                break;
            }
            p.len += n;
            if p.len > MAX_PASSPHRASE {
                return usage(format!(
                    "{what} is longer than {MAX_PASSPHRASE} bytes: is it the right file?"
                ));
            }
        }
        if p.expose().last() == Some(&b'\n') {
            p.len -= 1;
            if p.expose().last() == Some(&b'\r') {
                p.len -= 1;
            }
        }
        if p.is_empty() {
            return usage(format!("{what} is empty: it must hold the passphrase"));
        }
        Ok(p)
    }

    /// Exactly `len` bytes from a reader, straight into a locked buffer
    /// (give it an unbuffered reader): a key handed over a pipe.
    pub fn read_exact_from(mut r: impl Read, len: usize, what: &str) -> Result<Self> {
        let mut p = Self::with_capacity(len);
        r.read_exact(&mut p.buf.bytes_mut()[..len])
            .with_context(|| format!("reading {what}"))?;
        p.len = len;
        Ok(p)
    }

    /// Random bytes from the kernel's CSPRNG, read straight into the
    /// locked buffer.
    pub fn generate(len: usize) -> Result<Self> {
        let mut p = Self::with_capacity(len);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut p.buf.bytes_mut()[..len]))
            .context("reading /dev/urandom")?;
        p.len = len;
        Ok(p)
    }

    /// The secret bytes, for handing to libcryptsetup or KMS.
    pub fn expose(&self) -> &[u8] {
        &self.buf.bytes()[..self.len]
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether mlock(2) succeeded.
    pub fn is_locked(&self) -> bool {
        self.buf.locked
    }

    /// Whether `other` holds the same bytes, compared in constant time
    /// (the lengths are not secret).
    pub fn same_as(&self, other: &Passphrase) -> bool {
        use subtle::ConstantTimeEq;
        self.len == other.len && bool::from(self.expose().ct_eq(other.expose()))
    }
}

/// Whole pages of their own, zero-filled, mlocked and left out of core
/// dumps; zeroed, unlocked and freed on drop. No other allocation shares
/// their pages, so unlocking them never unlocks anything else's bytes.
struct Locked {
    ptr: NonNull<u8>,
    layout: Layout,
    locked: bool,
}

// SAFETY: `Locked` owns its allocation; `&Locked` only reads it.
unsafe impl Send for Locked {}
// SAFETY: as above: no interior mutability.
unsafe impl Sync for Locked {}

impl Locked {
    fn new(min: usize) -> Self {
        let page = page_size();
        let size = min.max(1).div_ceil(page) * page;
        let layout = Layout::from_size_align(size, page).expect("a page-aligned layout");
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        let region = ptr.cast::<std::ffi::c_void>();
        // SAFETY: the range is this allocation's own whole pages.
        let locked = match unsafe { nix::sys::mman::mlock(region, size) } {
            Ok(()) => true,
            Err(e) => {
                warn_unlocked(e);
                false
            }
        };
        // SAFETY: as above. Best effort: core dumps are off anyway.
        let _ = unsafe {
            nix::sys::mman::madvise(region, size, nix::sys::mman::MmapAdvise::MADV_DONTDUMP)
        };
        Locked {
            ptr,
            layout,
            locked,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `layout.size()` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes it unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        if self.locked {
            // SAFETY: the pages `new` locked.
            let _ = unsafe { nix::sys::mman::munlock(self.ptr.cast(), self.layout.size()) };
        }
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
}

/// Says once per process that a secret could not be locked, and why.
fn warn_unlocked(e: nix::errno::Errno) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "could not lock the passphrase in memory (mlock: {e}): it could be written to swap; \
             run as root or raise RLIMIT_MEMLOCK (ulimit -l)"
        );
    });
}

/// 128 random bits from the kernel's CSPRNG (getrandom): ids that must
/// never repeat (a set's id, a new volume's LUKS UUID). Not secret.
pub fn random_bytes() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    nix::errno::Errno::result(unsafe {
        // SAFETY: getrandom writes at most b.len() bytes into b.
        libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0)
    })
    .map_err(|e| anyhow::anyhow!("getting random bytes from the kernel: {e}"))?;
    Ok(b)
}

/// As root with CAP_IPC_LOCK, locks every page of the process, now and to
/// come (`mlockall`), so no copy of a secret outside [`Passphrase`] (the
/// SDK's request and response buffers, libcryptsetup's) can reach swap.
/// Without the capability, `mlockall(MCL_FUTURE)` would make allocations
/// past RLIMIT_MEMLOCK fail, so it is not tried.
pub fn lock_all_memory() {
    if !nix::unistd::geteuid().is_root() || !has_ipc_lock() {
        return;
    }
    use nix::sys::mman::{mlockall, MlockAllFlags};
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        tracing::warn!("could not lock the process's memory (mlockall: {e}); only the passphrase buffers are locked");
    }
}

/// Whether CAP_IPC_LOCK (bit 14) is in this process's effective set.
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
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
            return Passphrase::read_from(&*raw_stdin(), "the passphrase on stdin");
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
        let meta = f
            .metadata()
            .with_context(|| format!("examining passphrase file {}", self.0.display()))?;
        if meta.is_file() {
            crate::perm::check("passphrase file", &self.0, &meta, "600").or_else(usage)?;
        }
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
    let line = read_line(&mut &*raw_stdin());
    let restored = tcsetattr(fd, SetArg::TCSANOW, &saved);
    let p = line?;
    restored.context("restoring terminal settings")?;
    Ok(p)
}

fn read_line(r: &mut impl Read) -> Result<Passphrase> {
    // Byte by byte, straight into the locked buffer, so nothing past the
    // newline is consumed and no other buffer holds the line.
    let mut p = Passphrase::with_capacity(MAX_PASSPHRASE);
    loop {
        if p.len == MAX_PASSPHRASE {
            return usage("passphrase too long");
        }
        let at = p.len;
        let slot = &mut p.buf.bytes_mut()[at..=at];
        match r.read(slot).context("reading the passphrase")? {
            0 => break,
            _ if slot[0] == b'\n' => {
                slot[0] = 0;
                break;
            }
            _ => p.len += 1,
        }
    }
    if p.is_empty() {
        return usage("empty passphrase: nothing was changed");
    }
    Ok(p)
}

/// Standard input without std's buffer (which is neither locked nor
/// zeroed): reads go straight from fd 0 into the caller's buffer.
fn raw_stdin() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 stays open for the process's life; ManuallyDrop keeps
    // this File from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_as_compares_every_byte_and_the_length() {
        let a = Passphrase::from_slice(b"abcdef");
        assert!(a.same_as(&Passphrase::from_slice(b"abcdef")));
        assert!(!a.same_as(&Passphrase::from_slice(b"abcdeg")));
        assert!(!a.same_as(&Passphrase::from_slice(b"abcde")));
    }

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
    fn each_passphrase_has_whole_pages_of_its_own() {
        let page = page_size();
        let a = Passphrase::from_slice(b"a");
        let b = Passphrase::from_slice(&[7u8; 5000]);
        for p in [&a, &b] {
            assert_eq!(p.buf.ptr.as_ptr() as usize % page, 0);
            assert_eq!(p.buf.layout.size() % page, 0);
            assert!(p.buf.layout.size() >= p.len());
        }
        assert_eq!(b.expose(), &[7u8; 5000][..]);
        // The bytes past the passphrase stay zero.
        assert!(a.buf.bytes()[1..].iter().all(|&x| x == 0));
    }

    #[test]
    fn a_passphrase_file_others_can_change_is_refused() {
        use crate::error::{exit_code_of, EXIT_USAGE};
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pass");
        std::fs::write(&p, "s3cret\n").unwrap();
        let set = |mode| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
        set(0o600).unwrap();
        assert_eq!(
            PassphraseFile(p.clone()).fetch(false).unwrap().expose(),
            b"s3cret"
        );
        for (mode, shown) in [(0o620, "0620"), (0o602, "0602")] {
            set(mode).unwrap();
            let e = PassphraseFile(p.clone()).fetch(false).unwrap_err();
            assert_eq!(exit_code_of(&e), EXIT_USAGE);
            let m = format!("{e:#}");
            assert!(
                m.contains(&p.display().to_string())
                    && m.contains(shown)
                    && m.contains("chmod 600"),
                "{m}"
            );
        }
        set(0o600).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
            let m = format!("{:#}", PassphraseFile(p.clone()).fetch(false).unwrap_err());
            assert!(m.contains("uid 4242") && m.contains("chown"), "{m}");
        }
    }

    #[test]
    fn terminal_line_reader_stops_at_newline() {
        let mut input = &b"typed\nrest"[..];
        let p = read_line(&mut input).unwrap();
        assert_eq!(p.expose(), b"typed");
        assert_eq!(input, b"rest");
    }
}
