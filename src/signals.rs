//! SIGTERM and SIGINT during a command that writes: the handler only
//! records the signal; the executor checks between steps and unwinds its
//! rollback, and blocking reads (the passphrase prompt) return early so the
//! terminal is restored. systemd sends SIGTERM when a unit's start times
//! out; without this, a half-done `up` would leave its mapping open.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static CAUGHT: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT (without SA_RESTART, so a
/// blocking read returns EINTR).
pub fn install() {
    let act = SigAction::new(
        SigHandler::Handler(record),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { sigaction(s, &act) } {
            tracing::warn!("cannot handle {s}: {e}; it will end secretfs without rollback");
        }
    }
}

/// The signal caught, if any.
pub fn caught() -> Option<Signal> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// An error if a signal was caught: the caller stops and rolls back.
pub fn check() -> anyhow::Result<()> {
    match caught() {
        None => Ok(()),
        Some(s) => Err(anyhow::anyhow!("interrupted by {s}; rolling back")),
    }
}
