//! What a device or file holds, read-only: every signature libblkid finds
//! (in-process, all probers, including those that look at the end of the
//! device: md 0.90/1.0, the GPT backup, ZFS labels), our LUKS2 header and
//! token, and whether the bytes where data would be are zeros.
//!
//! Any open or read error is an error, never "blank".

use std::fs::File;
use std::io::{ErrorKind, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use anyhow::{Context, Result};
use libblkid_rs::{BlkidProbe, BlkidProbeRet, BlkidSublks, BlkidSublksFlags};

use crate::luks::header::{self, Header};
use crate::names;

const MIB: u64 = 1 << 20;
/// The zero check reads the first and last [`EDGE`] bytes of a device...
pub const EDGE: u64 = MIB;
/// ...and [`SAMPLES`] windows of [`SAMPLE`] bytes spread between them,
/// the first at 1 MiB (where a partition would start).
pub const SAMPLES: u64 = 256;
pub const SAMPLE: u64 = 64 << 10;

/// One signature libblkid found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signature {
    /// A LUKS header.
    Luks {
        version: u32,
        uuid: String,
        label: Option<String>,
        subsystem: Option<String>,
    },
    /// A filesystem, swap, RAID member or other content (TYPE=...).
    Content { fstype: String, offset: Option<u64> },
    /// A partition table (PTTYPE=...).
    PartitionTable { pttype: String, offset: Option<u64> },
}

impl Signature {
    /// Swap space (what `mkswap` writes).
    pub fn is_swap(&self) -> bool {
        matches!(self, Signature::Content { fstype, .. } if fstype == names::SWAP_TYPE)
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Signature::Luks {
                version,
                subsystem,
                label,
                ..
            } => format!(
                "a LUKS{version} header{}{}",
                label
                    .as_deref()
                    .map(|l| format!(" labelled '{l}'"))
                    .unwrap_or_default(),
                match subsystem.as_deref() {
                    Some(s) => format!(" of subsystem '{s}'"),
                    None => String::from(" (not made by secretfs)"),
                }
            ),
            Signature::Content { fstype, offset } => format!(
                "{} {fstype} signature{}",
                if fstype.starts_with(['a', 'e', 'i', 'o', 'u', 'x']) {
                    "an"
                } else {
                    "a"
                },
                at(*offset)
            ),
            Signature::PartitionTable { pttype, offset } => {
                format!("a {pttype} partition table{}", at(*offset))
            }
        }
    }

    /// The filesystem type, for content signatures.
    pub fn fstype(&self) -> Option<&str> {
        match self {
            Signature::Content { fstype, .. } => Some(fstype),
            _ => None,
        }
    }
}

fn at(offset: Option<u64>) -> String {
    match offset {
        Some(o) if o >= MIB => format!(" at offset {} MiB", o / MIB),
        Some(o) if o >= 4096 => format!(" at offset {} KiB", o >> 10),
        _ => String::new(),
    }
}

/// Whether the bytes where data would be are zeros.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Data {
    /// Not looked at (a header of ours was found first).
    NotChecked,
    /// Every byte read was zero (`read` bytes; 0 for a file with no data
    /// extents).
    Zero { read: u64 },
    /// Non-zero bytes: the first at `offset`, `bytes` of the `read`.
    NonZero { offset: u64, bytes: u64, read: u64 },
}

/// Everything the content checks found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Content {
    /// Every signature, in libblkid's order.
    pub signatures: Vec<Signature>,
    /// The LUKS2 header libcryptsetup loads at offset 0, if any.
    pub header: Option<Header>,
    pub data: Data,
}

impl Content {
    /// A content with nothing in it (for fixtures and tests).
    pub fn blank() -> Content {
        Content {
            signatures: Vec::new(),
            header: None,
            data: Data::Zero { read: 0 },
        }
    }

    /// What it holds, for messages: the signatures, else the data.
    pub fn describe(&self) -> String {
        if !self.signatures.is_empty() {
            return self
                .signatures
                .iter()
                .map(Signature::describe)
                .collect::<Vec<_>>()
                .join(" and ");
        }
        match &self.data {
            Data::NonZero {
                offset,
                bytes,
                read,
            } => format!(
                "{} of non-zero data (of {} read) starting at offset {offset} with no known signature",
                human(*bytes),
                human(*read)
            ),
            _ => "nothing (zeros)".into(),
        }
    }
}

/// `1.2 MiB`, `64 KiB`, `12 bytes`.
pub fn human(n: u64) -> String {
    if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

/// Every signature libblkid finds on the open device or file `f`.
pub fn signatures(f: &File, what: &Path) -> Result<Vec<Signature>> {
    let ctx = || format!("probing {} for signatures (libblkid)", what.display());
    let mut pr = BlkidProbe::new().with_context(ctx)?;
    pr.set_device(f.as_raw_fd(), 0, 0).with_context(ctx)?;
    pr.enable_superblocks(true).with_context(ctx)?;
    pr.set_superblock_flags(BlkidSublksFlags::new(vec![
        BlkidSublks::Label,
        BlkidSublks::Uuid,
        BlkidSublks::Type,
        BlkidSublks::Sectype,
        BlkidSublks::Usage,
        BlkidSublks::Version,
        BlkidSublks::Magic,
    ]))
    .with_context(ctx)?;
    pr.enable_partitions(true).with_context(ctx)?;
    let mut found = Vec::new();
    // One signature a call, as wipefs walks them.
    loop {
        match pr.do_probe().with_context(ctx)? {
            BlkidProbeRet::Done => break,
            BlkidProbeRet::Success => {}
        }
        let get = |k: &str| pr.lookup_value(k).ok();
        let offset = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        let sig = if let Some(pt) = get("PTTYPE").filter(|_| get("TYPE").is_none()) {
            Signature::PartitionTable {
                pttype: pt,
                offset: offset("PTMAGIC_OFFSET"),
            }
        } else if let Some(t) = get("TYPE") {
            if t == "crypto_LUKS" {
                Signature::Luks {
                    version: get("VERSION").and_then(|v| v.parse().ok()).unwrap_or(0),
                    uuid: get("UUID").unwrap_or_default(),
                    label: get("LABEL"),
                    subsystem: get("SUBSYSTEM"),
                }
            } else {
                Signature::Content {
                    fstype: t,
                    offset: offset("SBMAGIC_OFFSET"),
                }
            }
        } else {
            continue;
        };
        if !found.contains(&sig) {
            found.push(sig);
        }
    }
    Ok(found)
}

/// The size in bytes of the device or file at `path`.
pub fn size_of_path(path: &Path) -> Result<u64> {
    size_of(&open(path)?, path)
}

fn size_of(f: &File, what: &Path) -> Result<u64> {
    let mut f = f;
    f.seek(SeekFrom::End(0))
        .with_context(|| format!("sizing {}", what.display()))
}

/// Counts non-zero bytes in `len` bytes of `f` at `offset`; returns the
/// first non-zero byte's offset and the count.
fn scan(
    f: &File,
    what: &Path,
    offset: u64,
    len: u64,
    buf: &mut [u8],
) -> Result<(Option<u64>, u64)> {
    let mut first = None;
    let mut count = 0u64;
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = buf.len().min((end - pos) as usize);
        let chunk = &mut buf[..n];
        f.read_exact_at(chunk, pos)
            .with_context(|| format!("reading {} at byte {pos}", what.display()))?;
        if let Some(i) = chunk.iter().position(|&b| b != 0) {
            first.get_or_insert(pos + i as u64);
            count += chunk.iter().filter(|&&b| b != 0).count() as u64;
        }
        pos += n as u64;
    }
    Ok((first, count))
}

/// The windows the zero check reads on a device of `size` bytes: the
/// first and last [`EDGE`] and [`SAMPLES`] samples between, 4 KiB-aligned.
pub fn windows(size: u64) -> Vec<(u64, u64)> {
    if size <= 2 * EDGE + SAMPLE {
        return vec![(0, size)];
    }
    let mut w = vec![(0, EDGE)];
    let lo = EDGE;
    let hi = size - EDGE - SAMPLE;
    for i in 0..SAMPLES {
        let off = (lo + (hi - lo) * i / (SAMPLES - 1)) & !4095;
        if w.last().is_some_and(|&(o, l)| off < o + l) {
            continue;
        }
        w.push((off, SAMPLE));
    }
    w.push((size - EDGE, EDGE));
    w
}

/// The zero check of a block device.
fn device_data(f: &File, what: &Path) -> Result<Data> {
    let size = size_of(f, what)?;
    let mut buf = vec![0u8; EDGE as usize];
    let (mut first, mut bytes, mut read) = (None, 0, 0);
    for (off, len) in windows(size) {
        let (fz, n) = scan(f, what, off, len, &mut buf)?;
        if first.is_none() {
            first = fz;
        }
        bytes += n;
        read += len;
    }
    Ok(match first {
        None => Data::Zero { read },
        Some(offset) => Data::NonZero {
            offset,
            bytes,
            read,
        },
    })
}

/// The zero check of a regular file: its data extents (SEEK_DATA) must
/// read as zeros; stops at the first window that does not.
fn file_data(f: &File, what: &Path) -> Result<Data> {
    let size = size_of(f, what)?;
    let fd = f.as_raw_fd();
    let mut buf = vec![0u8; EDGE as usize];
    let mut pos = 0u64;
    let mut read = 0u64;
    while pos < size {
        // SAFETY: lseek on a file descriptor we own.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e).with_context(|| format!("looking for data in {}", what.display()));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("looking for holes in {}", what.display()));
        }
        let (start, end) = (data as u64, (hole as u64).min(size));
        let mut off = start;
        while off < end {
            let len = EDGE.min(end - off);
            let (first, bytes) = scan(f, what, off, len, &mut buf)?;
            read += len;
            if let Some(offset) = first {
                return Ok(Data::NonZero {
                    offset,
                    bytes,
                    read,
                });
            }
            off += len;
        }
        pos = end.max(pos + 1);
    }
    Ok(Data::Zero { read })
}

/// Opens `path` read-only; a missing or unreadable path is an error.
pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        let hint = if e.kind() == ErrorKind::PermissionDenied {
            " (run as root)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("opening {} to read it{hint}", path.display()))
    })
}

/// Looks at what `path` (a device or file) holds. The zero check runs only
/// when there is no LUKS2 header: a header is data.
pub fn examine(path: &Path) -> Result<Content> {
    let f = open(path)?;
    // A first read before anything else: a device that cannot be read
    // fails here, whatever libblkid and libcryptsetup make of it.
    let mut first = vec![0u8; 4096];
    let n = size_of(&f, path)?.min(4096) as usize;
    f.read_exact_at(&mut first[..n], 0)
        .with_context(|| format!("reading the start of {}", path.display()))?;
    let signatures = signatures(&f, path)?;
    let header = header::read(path)?;
    let is_block = f
        .metadata()
        .with_context(|| format!("examining {}", path.display()))?
        .file_type()
        .is_block_device();
    let data = if header.is_some() {
        Data::NotChecked
    } else if is_block {
        device_data(&f, path)?
    } else {
        file_data(&f, path)?
    };
    Ok(Content {
        signatures,
        header,
        data,
    })
}

/// The signatures inside an open mapping (no zero check: a new volume's
/// inside reads as noise).
pub fn examine_inner(path: &Path) -> Result<Vec<Signature>> {
    let f = open(path)?;
    signatures(&f, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn windows_cover_the_edges_and_spread() {
        assert_eq!(windows(1 << 20), vec![(0, 1 << 20)]);
        let w = windows(64 << 30);
        assert_eq!(w.first(), Some(&(0, EDGE)));
        assert_eq!(w.last(), Some(&((64 << 30) - EDGE, EDGE)));
        assert_eq!(w[1], (EDGE, SAMPLE));
        assert_eq!(w.len() as u64, SAMPLES + 2);
        assert!(w.windows(2).all(|p| p[0].0 + p[0].1 <= p[1].0), "{w:?}");
        assert!(w.iter().all(|(o, _)| o % 4096 == 0));
        // A small disk: the samples do not overlap each other or the edges.
        let w = windows(8 << 20);
        assert!(w.windows(2).all(|p| p[0].0 + p[0].1 <= p[1].0), "{w:?}");
    }

    fn file_with(bytes: &[(u64, &[u8])], size: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.img");
        let f = File::create(&p).unwrap();
        f.set_len(size).unwrap();
        for (off, b) in bytes {
            f.write_all_at(b, *off).unwrap();
        }
        (d, p)
    }

    #[test]
    fn sparse_and_zero_files_are_blank() {
        let (_d, p) = file_with(&[], 64 << 20);
        let c = examine(&p).unwrap();
        assert_eq!(c.data, Data::Zero { read: 0 });
        assert!(c.signatures.is_empty() && c.header.is_none());
        // Written zeros are data extents, and read as zeros.
        let (_d, p) = file_with(&[(8 << 20, &[0u8; 8192])], 64 << 20);
        assert!(matches!(examine(&p).unwrap().data, Data::Zero { read } if read >= 8192));
    }

    #[test]
    fn data_without_a_signature_is_found() {
        // Random-looking bytes in the middle of an otherwise sparse file:
        // an archive, a closed plain dm-crypt volume.
        let noise: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8 | 1).collect();
        let (_d, p) = file_with(&[(40 << 20, &noise)], 64 << 20);
        let c = examine(&p).unwrap();
        assert!(c.signatures.is_empty(), "{:?}", c.signatures);
        let Data::NonZero { offset, bytes, .. } = c.data else {
            panic!("{:?}", c.data)
        };
        assert_eq!(offset, 40 << 20);
        assert_eq!(bytes, 5000);
        assert!(c.describe().contains("non-zero data"), "{}", c.describe());
        assert!(c.describe().contains(&format!("offset {}", 40 << 20)));
    }

    #[test]
    fn signatures_at_the_end_are_found() {
        // An md 1.0 superblock lives 8 KiB before the end (4 KiB aligned):
        // magic a92b4efc, major version 1.
        let size: u64 = 64 << 20;
        let sb = (size - 8192) & !4095;
        let mut md = vec![0u8; 4096];
        md[0..4].copy_from_slice(&0xa92b4efcu32.to_le_bytes());
        md[4..8].copy_from_slice(&1u32.to_le_bytes());
        md[8..12].copy_from_slice(&0u32.to_le_bytes()); // feature map
                                                        // super_offset (u64 at 0x80) must point at itself, in sectors.
        md[0x80..0x88].copy_from_slice(&(sb / 512).to_le_bytes());
        let (_d, p) = file_with(&[(sb, &md)], size);
        let c = examine(&p).unwrap();
        // Whether libblkid accepts this minimal superblock or not, the
        // zero check sees the bytes at the end.
        assert!(
            c.signatures
                .iter()
                .any(|s| s.fstype() == Some("linux_raid_member"))
                || matches!(c.data, Data::NonZero { offset, .. } if offset >= sb),
            "{c:?}"
        );
    }

    #[test]
    fn ext4_is_a_signature() {
        let (_d, p) = file_with(&[], 64 << 20);
        let out = std::process::Command::new("/usr/sbin/mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&p)
            .output();
        let Ok(out) = out else {
            panic!("mkfs.ext4 missing: install e2fsprogs")
        };
        assert!(out.status.success());
        let c = examine(&p).unwrap();
        assert_eq!(c.signatures.len(), 1, "{:?}", c.signatures);
        assert_eq!(c.signatures[0].fstype(), Some("ext4"));
        assert!(c.describe().contains("an ext4 signature"));
    }

    #[test]
    fn unreadable_paths_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(examine(&d.path().join("absent")).is_err());
        let mut f = File::create(d.path().join("x")).unwrap();
        f.write_all(b"x").unwrap();
        assert!(
            examine(d.path()).is_err(),
            "a directory is not readable as a device"
        );
    }
}
