//! One run at a time per volume, and per device: `up` and `down` hold an
//! exclusive lock on `/run/secretfs/NAME.lock` from their observation to
//! the end of their execution, and `up` also one on
//! `/run/secretfs/device-KEY.lock` for each disk or backing file it names
//! (KEY is a disk's `MAJ:MIN`, so every path to it takes the same lock, or
//! `file-HASH` for a file, HASH of its path with symlinks resolved): two
//! runs under different names over one disk take turns too. A second run waits
//! (up to its deadline), then observes the machine afresh, and so finds the
//! first run's work done. Every run takes its volume's lock first and its
//! devices' in the order of their keys, so no two runs can each hold what
//! the other waits for. The locks go with the process: a killed run leaves
//! nothing to clean up.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::info;

use crate::names;
use crate::observe::sys::{self, DevNo};

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
    make_lock_dir()?;
    hold(
        names::lock_path(name),
        &format!("volume '{name}'"),
        wait,
        Instant::now() + wait,
    )
}

/// Takes the lock of every disk or backing file in `targets`, waiting up
/// to `wait` in all. Take the volume's lock first.
pub fn acquire_devices(targets: &[&Path], wait: Duration) -> Result<Vec<VolumeLock>> {
    make_lock_dir()?;
    acquire_devices_in(Path::new(names::LOCK_DIR), targets, wait)
}

fn acquire_devices_in(dir: &Path, targets: &[&Path], wait: Duration) -> Result<Vec<VolumeLock>> {
    let deadline = Instant::now() + wait;
    let mut keyed: Vec<(String, &Path)> = targets.iter().map(|t| (device_key(t), *t)).collect();
    keyed.sort();
    keyed.dedup_by(|a, b| a.0 == b.0);
    keyed
        .into_iter()
        .map(|(key, t)| {
            let path = dir.join(names::device_lock_name(&key));
            hold(path, &t.display().to_string(), wait, deadline)
        })
        .collect()
}

/// What a device lock is named by: a block device's number (whatever
/// path names it), else a hash of the path with symlinks resolved (its
/// directory's, while the file does not exist yet), the way `up` observes
/// it. Two paths that hash alike only make their runs take turns.
fn device_key(target: &Path) -> String {
    let root = Path::new("/");
    match std::fs::metadata(names::under(root, target)) {
        Ok(m) if m.file_type().is_block_device() => DevNo::from_raw(m.rdev()).to_string(),
        Ok(_) => path_key(&sys::canonical(root, target)),
        Err(_) => match (target.parent(), target.file_name()) {
            (Some(dir), Some(file)) => path_key(&sys::canonical(root, dir).join(file)),
            _ => path_key(target),
        },
    }
}

/// `file-HASH`, HASH being FNV-1a (64 bits) of `p`.
fn path_key(p: &Path) -> String {
    let hash = p
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("file-{hash:016x}")
}

fn make_lock_dir() -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(names::LOCK_DIR)
        .with_context(|| format!("creating {}", names::LOCK_DIR))
}

/// Takes the lock at `path`, waiting until `deadline` (`wait` from the
/// start); `what` names what it guards.
fn hold(path: PathBuf, what: &str, wait: Duration, deadline: Instant) -> Result<VolumeLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
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
                "another secretfs run still works on {what} after {}: let it finish (it holds {})",
                humantime::format_duration(wait),
                path.display()
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, EXIT_REFUSED};

    const SHORT: Duration = Duration::from_millis(300);

    #[test]
    fn two_runs_over_one_device_take_turns_whatever_their_names() {
        let d = tempfile::tempdir().unwrap();
        let locks = d.path().join("locks");
        std::fs::create_dir(&locks).unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("alias")).unwrap();
        // One backing file, before and after it is made, named two ways.
        let (a, b) = (real.join("v.img"), d.path().join("alias/v.img"));
        for made in [false, true] {
            if made {
                std::fs::write(&a, b"").unwrap();
            }
            let first = acquire_devices_in(&locks, &[a.as_path()], SHORT).unwrap();
            let e = acquire_devices_in(&locks, &[b.as_path()], SHORT).unwrap_err();
            assert_eq!(exit_code_of(&e), EXIT_REFUSED);
            assert!(format!("{e}").contains(&b.display().to_string()), "{e}");
            // The second waits for the first, then goes on.
            let done = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                drop(first);
            });
            let started = Instant::now();
            acquire_devices_in(&locks, &[b.as_path()], Duration::from_secs(10)).unwrap();
            assert!(started.elapsed() >= Duration::from_millis(150));
            done.join().unwrap();
        }
        // Another file is another lock; a device named twice is locked once.
        let _a = acquire_devices_in(&locks, &[a.as_path(), b.as_path()], SHORT).unwrap();
        acquire_devices_in(&locks, &[real.join("w.img").as_path()], SHORT).unwrap();
        // Two nodes of one block device (root may make them).
        if nix::unistd::geteuid().is_root() {
            use nix::sys::stat::{makedev, mknod, Mode, SFlag};
            let (x, y) = (d.path().join("x"), d.path().join("y"));
            for n in [&x, &y] {
                mknod(
                    n,
                    SFlag::S_IFBLK,
                    Mode::from_bits_truncate(0o600),
                    makedev(7, 250),
                )
                .unwrap();
            }
            let _x = acquire_devices_in(&locks, &[x.as_path()], SHORT).unwrap();
            let e = acquire_devices_in(&locks, &[y.as_path()], SHORT).unwrap_err();
            assert_eq!(exit_code_of(&e), EXIT_REFUSED);
        }
    }
}
