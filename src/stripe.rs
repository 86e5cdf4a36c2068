//! The stripe over a set's open members: a device-mapper `striped`
//! table, made with the devicemapper crate.
//!
//! Without udev (an initramfs, a container) nobody makes
//! `/dev/mapper/NAME`: secretfs makes the node itself then, as
//! libdevmapper does for the member mappings, and removes it again.

use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use devicemapper::{errors, DevId, DmError, DmName, DmOptions, DmUuid, DM};
use nix::sys::stat::{mknod, Mode, SFlag};

use crate::names;
use crate::observe::DevNo;

const SECTOR: u64 = 512;

/// The `striped` table: its length in sectors and its parameters. Each
/// member contributes the same whole number of chunks (the smallest
/// member's); a member's remainder is unused.
pub fn table(sizes: &[u64], devs: &[DevNo], chunk: u64) -> Result<(u64, String)> {
    let chunk_sectors = chunk / SECTOR;
    anyhow::ensure!(
        chunk_sectors > 0
            && chunk.is_multiple_of(SECTOR)
            && !devs.is_empty()
            && sizes.len() == devs.len(),
        "a stripe needs members and a chunk of whole sectors"
    );
    let smallest = sizes.iter().copied().min().unwrap_or(0) / SECTOR;
    let per_member = smallest / chunk_sectors * chunk_sectors;
    anyhow::ensure!(per_member > 0, "the members are smaller than one chunk");
    let mut params = format!("{} {chunk_sectors}", devs.len());
    for d in devs {
        params.push_str(&format!(" {d} 0"));
    }
    Ok((per_member * devs.len() as u64, params))
}

/// Creates /dev/mapper/`name` striped over `members` (mapper paths, in
/// member order); returns its path.
pub fn create(name: &str, members: &[PathBuf], set: &str, chunk: u64) -> Result<PathBuf> {
    let path = names::mapper_path(name);
    let what = || format!("creating the stripe {}", path.display());
    let mut sizes = Vec::new();
    let mut devs = Vec::new();
    for m in members {
        let meta = std::fs::metadata(m).with_context(|| format!("examining {}", m.display()))?;
        anyhow::ensure!(
            meta.file_type().is_block_device(),
            "{} is not a block device",
            m.display()
        );
        devs.push(DevNo::from_raw(meta.rdev()));
        let mut f = std::fs::File::open(m).with_context(|| format!("opening {}", m.display()))?;
        sizes.push(
            f.seek(SeekFrom::End(0))
                .with_context(|| format!("sizing {}", m.display()))?,
        );
    }
    let (len, params) = table(&sizes, &devs, chunk)?;
    let dm = DM::new().with_context(what)?;
    let dm_name = DmName::new(name).with_context(what)?;
    let uuid = format!("{}{set}", names::DM_UUID_PREFIX_SET);
    let dm_uuid = DmUuid::new(&uuid).with_context(what)?;
    let info = dm
        .device_create(dm_name, Some(dm_uuid), DmOptions::default())
        .with_context(what)?;
    let id = DevId::Name(dm_name);
    let loaded = dm
        .table_load(
            &id,
            &[(0, len, "striped".into(), params)],
            DmOptions::default(),
        )
        .and_then(|_| dm.device_suspend(&id, DmOptions::default()));
    if let Err(e) = loaded {
        let _ = dm.device_remove(&id, DmOptions::default());
        return Err(e).with_context(what);
    }
    let devno = DevNo {
        major: info.device().major,
        minor: info.device().minor,
    };
    ensure_node(&path, devno).with_context(what)?;
    Ok(path)
}

/// Removes /dev/mapper/`name` (the stripe), and its node if udev does not.
pub fn remove(name: &str) -> Result<()> {
    let path = names::mapper_path(name);
    let what = || format!("removing the stripe {}", path.display());
    let dm = DM::new().with_context(what)?;
    let dm_name = DmName::new(name).with_context(what)?;
    let id = DevId::Name(dm_name);
    let dev = dm.device_info(&id).with_context(what)?.device();
    let devno = DevNo {
        major: dev.major,
        minor: dev.minor,
    };
    dm.device_remove(&id, DmOptions::default()).map_err(|e| {
        let busy = matches!(
            &e,
            DmError::Core(errors::Error::Ioctl(_, _, _, errno)) if **errno == nix::errno::Errno::EBUSY
        );
        anyhow::Error::new(e).context(if busy {
            format!("{}: it is busy (still mounted or open)", what())
        } else {
            what()
        })
    })?;
    // udev removes its node; ours goes here.
    if let Ok(m) = std::fs::metadata(&path) {
        if m.file_type().is_block_device() && DevNo::from_raw(m.rdev()) == devno {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// Waits briefly for udev to make /dev/mapper/NAME, else makes it.
fn ensure_node(path: &Path, devno: DevNo) -> Result<()> {
    let udev = Path::new("/run/udev/control").exists();
    let deadline = Instant::now()
        + if udev {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        };
    loop {
        if let Ok(m) = std::fs::metadata(path) {
            if m.file_type().is_block_device() && DevNo::from_raw(m.rdev()) == devno {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(path);
    std::fs::create_dir_all(names::MAPPER_DIR)?;
    mknod(
        path,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(u64::from(devno.major), u64::from(devno.minor)),
    )
    .with_context(|| format!("making the device node {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_takes_whole_chunks_of_the_smallest_member() {
        let a = DevNo {
            major: 253,
            minor: 1,
        };
        let b = DevNo {
            major: 253,
            minor: 2,
        };
        let (len, params) = table(&[(1 << 30) + 4096, 1 << 30], &[a, b], 512 << 10).unwrap();
        assert_eq!(len, 2 * (1 << 30) / 512);
        assert_eq!(params, "2 1024 253:1 0 253:2 0");
        assert!(table(&[4096, 1 << 30], &[a, b], 512 << 10).is_err());
        assert!(table(&[], &[], 512 << 10).is_err());
    }
}
