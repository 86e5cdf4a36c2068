//! Backing devices: the sparse file and its loop device.
//!
//! secretfs attaches its own loop device (the next free one, never a fixed
//! /dev/loop0) with autoclear set: the kernel detaches it when the last
//! user closes it, so `down` (or a crash before the volume is opened)
//! leaves no stray loop device behind. Autoclear also marks the device as
//! secretfs's, so `down` detaches only what secretfs attached.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use loopdev::{LoopControl, LoopDevice};

/// Rounds a size up to a whole number of 4096-byte sectors.
pub fn round_size(size: u64) -> u64 {
    size.div_ceil(4096) * 4096
}

/// Creates `path` as a sparse file of `size` bytes, mode 0600. Fails if it
/// exists (nothing is ever truncated).
pub fn create_sparse(path: &Path, size: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(round_size(size))
        .with_context(|| format!("sizing {} to {size} bytes", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
    }
    Ok(())
}

/// An attached loop device. Holding it keeps the device alive (autoclear
/// detaches it once the last opener, this handle or the mapping, closes).
pub struct AttachedLoop {
    dev: LoopDevice,
    pub path: PathBuf,
}

/// Attaches `file` to the next free loop device, with autoclear.
pub fn attach(file: &Path) -> Result<AttachedLoop> {
    let ctl =
        LoopControl::open().context("opening /dev/loop-control (is the loop module loaded?)")?;
    // Another process may take the same free device between next_free and
    // attach; retry a few times on EBUSY.
    let mut last = None;
    for _ in 0..5 {
        let dev = ctl.next_free().context("finding a free loop device")?;
        match dev.with().autoclear(true).attach(file) {
            Ok(()) => {
                let path = dev.path().context("naming the loop device")?;
                return Ok(AttachedLoop { dev, path });
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("attaching {} to a loop device", file.display()))
            }
        }
    }
    Err(last.unwrap()).with_context(|| {
        format!(
            "attaching {} to a loop device: all candidates busy",
            file.display()
        )
    })
}

impl AttachedLoop {
    /// Detaches now (rollback before the volume was opened).
    pub fn detach(self) -> Result<()> {
        self.dev
            .detach()
            .with_context(|| format!("detaching {}", self.path.display()))
    }
}

/// Detaches a loop device by path.
pub fn detach(path: &Path) -> Result<()> {
    LoopDevice::open(path)
        .and_then(|d| d.detach())
        .with_context(|| format!("detaching {}", path.display()))
}

/// Writes zeros over each `(offset, length)` range of `path` (a device or
/// a file) and syncs it. A range past the end is cut at the end.
pub fn zero(path: &Path, ranges: &[(u64, u64)]) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    let size = f
        .seek(SeekFrom::End(0))
        .with_context(|| format!("sizing {}", path.display()))?;
    let zeros = vec![0u8; 1 << 20];
    for &(off, len) in ranges {
        let end = (off + len).min(size);
        let mut at = off;
        f.seek(SeekFrom::Start(at))
            .with_context(|| format!("seeking in {}", path.display()))?;
        while at < end {
            let n = (end - at).min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])
                .with_context(|| format!("zeroing {} at {at}", path.display()))?;
            at += n as u64;
        }
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// Deallocates every block of the file `path` (it reads as zeros after,
/// at the same size): a shredded file keeps no ciphertext and no space.
pub fn punch_out(path: &Path) -> Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("sizing {}", path.display()))?
        .len();
    fallocate(
        &f,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        len as i64,
    )
    .with_context(|| format!("punching out the blocks of {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_4k() {
        assert_eq!(round_size(1), 4096);
        assert_eq!(round_size(4096), 4096);
        assert_eq!(round_size((2 << 30) + 1), (2 << 30) + 4096);
    }

    #[test]
    fn sparse_file_is_private_and_sparse() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.img");
        create_sparse(&p, 1 << 30).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "not sparse: {} blocks",
            m.blocks()
        );
        // Never truncates what exists.
        assert!(create_sparse(&p, 4096).is_err());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 30);
    }
}
