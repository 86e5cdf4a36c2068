//! The filesystem inside the volume (ext4 or XFS): mkfs, mount, unmount,
//! wipe; or swap space: mkswap, swapon, swapoff.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::mount::{MntFlags, MsFlags};
use tracing::info;

use crate::cmd::{self, Tool};
use crate::names;
use crate::parse::MountOptions;
use crate::plan::Geometry;
use crate::settings::Filesystem;

/// Makes `fs` on `dev`, aligned to `stripe` when given.
pub fn mkfs(fs: Filesystem, dev: &Path, stripe: Option<Geometry>) -> Result<()> {
    match fs {
        Filesystem::Ext4 => mkfs_ext4(dev, stripe),
        Filesystem::Xfs => mkfs_xfs(dev, stripe),
    }
}

/// Makes ext4 on `dev` with the options of [`ext4_options`] for its size.
fn mkfs_ext4(dev: &Path, stripe: Option<Geometry>) -> Result<()> {
    let size = std::fs::File::open(dev)
        .and_then(|f| block_size_of(&f))
        .with_context(|| format!("sizing {}", dev.display()))?;
    let args = ext4_options(size, stripe);
    let argv: Vec<&std::ffi::OsStr> = args
        .iter()
        .map(|a| a.as_os_str())
        .chain([dev.as_os_str()])
        .collect();
    cmd::run(Tool::Mkfs(Filesystem::Ext4), &argv, &[]).map(|_| ())
}

/// mkfs.ext4's options for a device of `size` bytes: lazy inode-table and
/// journal init and no discard, so the time does not grow with the size
/// (ext4's metadata checksums keep a lazily initialised journal safe to
/// replay), and `sparse_super2`: two backup superblocks (block groups 1
/// and the last) instead of one in every group that is a power of 3, 5 or
/// 7. On 8 TiB that writes 33 MiB instead of 113 MiB and takes a third of
/// the time (mke2fs on this host); `e2fsck -b 32768` still finds the
/// first backup (4 KiB blocks, from 512 MiB on).
///
/// From [`BIG_EXT4`] (512 GiB, 4096 block groups) on, also 256 groups per
/// flex group (`-G 256`, not 16) and no `resize_inode`. mke2fs writes
/// the block bitmap of every group that holds metadata: with 16 groups per
/// flex group that is one group in 16 (4096 bitmaps on 8 TiB), with 256
/// about 3 in 256 (768). `resize_inode` reserves room for the group
/// descriptors of a filesystem 1024 times larger (4 MiB on 8 TiB), which an
/// instance-store volume never needs; the kernel can still grow the
/// filesystem online (it converts it to `meta_bg`), and mke2fs itself
/// leaves `resize_inode` out above 16 TiB. On 8 TiB under QEMU
/// (`scripts/bench --only bench_5_set`, medians of 5 rounds) mke2fs took
/// 1.80 s instead of 2.35 s and wrote 15 MiB instead of 32 MiB; mke2fs and
/// the mount together 3.27 s instead of 3.77 s. The mount does not change:
/// the kernel still checks 65,536 group descriptors (only `bigalloc`,
/// with 16 times fewer groups, changes that, at the cost of 64 KiB per
/// small file, so it is not used). The journal and both backup
/// superblocks stay. Below 512 GiB the options stay as they were: mke2fs
/// is quick there, and 256 groups per flex group would leave fewer than 16
/// flex groups to spread directories over.
/// On a stripe, 4 KiB blocks with `stride` and `stripe_width` matching it.
fn ext4_options(size: u64, stripe: Option<Geometry>) -> Vec<std::ffi::OsString> {
    // One -E: mke2fs keeps only the last one it is given.
    let mut ext = String::from("lazy_itable_init=1,lazy_journal_init=1,nodiscard");
    let big = size >= BIG_EXT4;
    let mut args: Vec<String> = vec![
        "-q".into(),
        "-L".into(),
        names::FS_LABEL.into(),
        "-O".into(),
        if big {
            "sparse_super2,^resize_inode".into()
        } else {
            "sparse_super2".into()
        },
    ];
    if big {
        args.extend(["-G".into(), "256".into()]);
    }
    if let Some(g) = stripe {
        let stride = g.chunk / EXT4_BLOCK;
        ext.push_str(&format!(
            ",stride={stride},stripe_width={}",
            stride * u64::from(g.members)
        ));
        args.extend(["-b".into(), "4096".into()]);
    }
    args.extend(["-E".into(), ext]);
    args.into_iter().map(Into::into).collect()
}

/// The size from which ext4 gets the options of large volumes (see
/// [`ext4_options`]): 4096 block groups of 128 MiB.
const BIG_EXT4: u64 = 512 << 30;

/// Makes XFS on `dev`, without discarding its blocks first (`-K`: a new
/// dm-crypt volume reads as noise whatever the disk holds), over any
/// signature the noise happens to match (`-f`: the planner decided this
/// volume never held data). On a stripe, the data section's stripe unit
/// is the chunk and its width the member count (`su`, `sw`), so the
/// allocation groups and the log start on a chunk boundary; mkfs.xfs
/// cannot see the geometry of the dm stripe itself.
fn mkfs_xfs(dev: &Path, stripe: Option<Geometry>) -> Result<()> {
    let o = std::ffi::OsStr::new;
    let data;
    let mut args = vec![o("-q"), o("-f"), o("-K"), o("-L"), o(names::FS_LABEL)];
    if let Some(g) = stripe {
        data = format!("su={}k,sw={}", g.chunk >> 10, g.members);
        args.extend([o("-d"), o(&data)]);
    }
    args.push(dev.as_os_str());
    cmd::run(Tool::Mkfs(Filesystem::Xfs), &args, &[]).map(|_| ())
}

/// The block size of ext4 on a stripe.
const EXT4_BLOCK: u64 = 4096;

/// The mount(2) flags word for the parsed options.
pub fn ms_flags(o: &MountOptions) -> MsFlags {
    o.flags.iter().fold(MsFlags::empty(), |acc, f| {
        acc | match *f {
            "ro" => MsFlags::MS_RDONLY,
            "nodev" => MsFlags::MS_NODEV,
            "nosuid" => MsFlags::MS_NOSUID,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            "sync" => MsFlags::MS_SYNCHRONOUS,
            "dirsync" => MsFlags::MS_DIRSYNC,
            "lazytime" => MsFlags::MS_LAZYTIME,
            _ => MsFlags::empty(),
        }
    })
}

/// Mounts the `fs` on `dev` at `dir`.
pub fn mount(dev: &Path, dir: &Path, fs: Filesystem, o: &MountOptions) -> Result<()> {
    let data = o.data.join(",");
    nix::mount::mount(
        Some(dev),
        dir,
        Some(fs.as_str()),
        ms_flags(o),
        (!data.is_empty()).then_some(data.as_str()),
    )
    .with_context(|| format!("mounting {} at {}", dev.display(), dir.display()))
}

/// Makes swap space on `dev` (labelled with the volume's label).
pub fn mkswap(dev: &Path) -> Result<()> {
    let o = std::ffi::OsStr::new;
    cmd::run(
        Tool::Mkswap,
        &[o("-L"), o(names::FS_LABEL), dev.as_os_str()],
        &[],
    )
    .map(|_| ())
}

/// `SWAP_FLAG_*` of <sys/swap.h> (not in the libc crate).
const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
const SWAP_FLAG_PRIO_MASK: libc::c_int = 0x7fff;
const SWAP_FLAG_DISCARD: libc::c_int = 0x10000;

/// Enables the swap space on `dev` (swapon(2)): at `priority` when given
/// (higher is used first), with discards when the volume allows them.
pub fn swapon(dev: &Path, priority: Option<u16>, discard: bool) -> Result<()> {
    let mut flags = 0;
    if let Some(p) = priority {
        flags |= SWAP_FLAG_PREFER | (libc::c_int::from(p) & SWAP_FLAG_PRIO_MASK);
    }
    if discard {
        flags |= SWAP_FLAG_DISCARD;
    }
    let path = c_path(dev)?;
    // SAFETY: path is a NUL-terminated string that outlives the call.
    nix::errno::Errno::result(unsafe { libc::swapon(path.as_ptr(), flags) })
        .with_context(|| format!("enabling swap on {}", dev.display()))
        .map(|_| ())
}

/// Disables the swap space on `dev` (swapoff(2)): the kernel first reads
/// every page in it back into memory.
pub fn swapoff(dev: &Path) -> Result<()> {
    let path = c_path(dev)?;
    // SAFETY: path is a NUL-terminated string that outlives the call.
    nix::errno::Errno::result(unsafe { libc::swapoff(path.as_ptr()) })
        .with_context(|| {
            format!(
                "disabling swap on {} (the memory it holds must fit in RAM)",
                dev.display()
            )
        })
        .map(|_| ())
}

fn c_path(p: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", p.display()))
}

/// Unmounts `dir`.
pub fn umount(dir: &Path) -> Result<()> {
    nix::mount::umount2(dir, MntFlags::empty()).map_err(|e| {
        let hint = if e == nix::errno::Errno::EBUSY {
            format!(": it is in use (see `fuser -vm {}`)", dir.display())
        } else {
            String::new()
        };
        anyhow::Error::new(e).context(format!("unmounting {}{hint}", dir.display()))
    })
}

/// Overwrites the whole of `dev` with zeros, logging progress.
pub fn wipe(dev: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .with_context(|| format!("opening {} to wipe it", dev.display()))?;
    let total = block_size_of(&f).with_context(|| format!("sizing {}", dev.display()))?;
    let chunk = AlignedBuf::new(4 << 20);
    let tty = nix::unistd::isatty(std::io::stderr()).unwrap_or(false);
    let start = Instant::now();
    let mut last = Instant::now();
    let mut done = 0u64;
    while done < total {
        let n = chunk.len().min((total - done) as usize);
        f.write_all(&chunk.as_slice()[..n])
            .with_context(|| format!("wiping {} at byte {done}", dev.display()))?;
        done += n as u64;
        if last.elapsed() >= Duration::from_secs(if tty { 1 } else { 10 }) || done == total {
            let pct = done * 100 / total.max(1);
            let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001) / (1 << 20) as f64;
            if tty {
                eprint!("\rwiping {}: {pct}% ({rate:.0} MiB/s)   ", dev.display());
            } else {
                info!("wiping {}: {pct}% ({rate:.0} MiB/s)", dev.display());
            }
            last = Instant::now();
        }
    }
    if tty {
        eprintln!();
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", dev.display()))
}

fn block_size_of(f: &std::fs::File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = f;
    let end = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(end)
}

/// A zeroed, 4096-byte-aligned buffer for O_DIRECT writes.
struct AlignedBuf {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let v = vec![0u8; len + 4096];
        let off = v.as_ptr().align_offset(4096);
        AlignedBuf { v, off, len }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn as_slice(&self) -> &[u8] {
        &self.v[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::mount_options;

    #[test]
    fn mount_flags_follow_the_options() {
        let f = ms_flags(&mount_options("nodev,nosuid,noatime").unwrap());
        assert_eq!(
            f,
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME
        );
        assert_eq!(
            ms_flags(&mount_options("ro,suid,dev").unwrap()),
            MsFlags::MS_RDONLY
        );
    }

    fn ext4_argv(size: u64, stripe: Option<Geometry>) -> String {
        ext4_options(size, stripe)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn ext4_options_follow_the_size() {
        let lazy = "-E lazy_itable_init=1,lazy_journal_init=1,nodiscard";
        for size in [32 << 20, 1 << 30, BIG_EXT4 - 4096] {
            assert_eq!(
                ext4_argv(size, None),
                format!("-q -L secretfs -O sparse_super2 {lazy}")
            );
        }
        for size in [BIG_EXT4, 8 << 40] {
            assert_eq!(
                ext4_argv(size, None),
                format!("-q -L secretfs -O sparse_super2,^resize_inode -G 256 {lazy}")
            );
        }
        let stripe = Some(Geometry {
            chunk: 512 << 10,
            members: 4,
        });
        assert_eq!(
            ext4_argv(1 << 30, stripe),
            format!("-q -L secretfs -O sparse_super2 -b 4096 {lazy},stride=128,stripe_width=512")
        );
        assert_eq!(
            ext4_argv(8 << 40, stripe),
            format!(
                "-q -L secretfs -O sparse_super2,^resize_inode -G 256 -b 4096 \
                 {lazy},stride=128,stripe_width=512"
            )
        );
    }

    #[test]
    fn aligned_buffer_is_aligned_and_zero() {
        let b = AlignedBuf::new(8192);
        assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0);
        assert!(b.as_slice().iter().all(|&x| x == 0));
    }
}
