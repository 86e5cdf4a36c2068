//! One run at a time per volume: `up` and `down` hold an exclusive lock on
//! `/run/secretfs/NAME.lock` from their observation to the end of their
//! execution. A second run waits (up to its deadline), then observes the
//! machine afresh, and so finds the first run's work done. The lock goes
//! with the process: a killed run leaves nothing to clean up.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::info;

use crate::names;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct VolumeLock {
    _file: File,
    pub path: PathBuf,
}

fn try_lock(f: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes the lock of volume `name`, waiting up to `wait`.
pub fn acquire(name: &str, wait: Duration) -> Result<VolumeLock> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(names::LOCK_DIR)
        .with_context(|| format!("creating {}", names::LOCK_DIR))?;
    let path = names::lock_path(name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + wait;
    let mut told = false;
    loop {
        if try_lock(&file).with_context(|| format!("locking {}", path.display()))? {
            return Ok(VolumeLock { _file: file, path });
        }
        if !told {
            info!(
                "another secretfs run holds {}; waiting for it (up to {})",
                path.display(),
                humantime::format_duration(wait)
            );
            told = true;
        }
        crate::signals::check()?;
        if Instant::now() >= deadline {
            return Err(crate::error::Failure::Refused(format!(
                "another secretfs run still works on volume '{name}' after {}: let it finish (it holds {})",
                humantime::format_duration(wait),
                path.display()
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
