//! Observing the machine, read-only.
//!
//! Every read of system state goes through a `root` path (normally `/`),
//! so the unit tests run observation on fixture trees: sysfs and procfs
//! files, and disk images at `ROOT/dev/...`. Nothing here writes, and
//! nothing here calls into the LUKS writer. [`observe`] gathers what the
//! planner needs, one [`DeviceObs`] per device.

pub mod content;
pub mod sys;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use self::content::{Content, Data, Signature};
pub use self::sys::{BlockDev, DevNo, LoopState, Mapping, MountEntry, MountState};
use crate::names::{self, under};
use crate::settings::Target;

/// What is at the target path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetState {
    /// Nothing at the path. For a file target: whether its directory
    /// exists and how much space that filesystem has free.
    Missing {
        parent_exists: bool,
        free_bytes: u64,
    },
    /// Something that is neither a block device (disk) nor a regular file
    /// (file target).
    WrongKind { what: String },
    /// A block device; `partition_of` names the disk if it is a partition.
    Block {
        dev: BlockDev,
        size: u64,
        logical_block: u64,
        partition_of: Option<String>,
    },
    /// A regular file, possibly attached to a loop device already (found
    /// by device and inode, not by name). `others_can_change` says why
    /// someone other than root (or the user running secretfs) could
    /// change it, when they could.
    File {
        size: u64,
        loop_dev: Option<LoopState>,
        free_bytes: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        others_can_change: Option<String>,
    },
}

/// One device (or file) and what it holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeviceObs {
    pub target: TargetState,
    /// What the device (or the file) holds; `None` when nothing is there.
    pub content: Option<Content>,
    /// Why the device is in use by something other than our mapping:
    /// mounted, swap, holders, busy partitions.
    pub busy: Vec<String>,
    /// The kernel has the block device read-only.
    pub read_only: bool,
}

impl DeviceObs {
    /// The block device that carries the volume, once there is one.
    pub fn block(&self) -> Option<&BlockDev> {
        match &self.target {
            TargetState::Block { dev, .. } => Some(dev),
            TargetState::File {
                loop_dev: Some(l), ..
            } => Some(&l.dev),
            _ => None,
        }
    }
}

/// Everything `up` decides from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Observed {
    pub device: DeviceObs,
    pub mapping: Mapping,
    /// The mount point as given, with symlinks resolved.
    pub mount_path: PathBuf,
    pub mount: MountState,
    /// The signatures inside the open mapping, when it is open.
    pub inner: Option<Vec<Signature>>,
    /// The open mapping is enabled swap space (in /proc/swaps).
    pub swap_on: bool,
}

/// Reads the machine's state for `up` of `target` as `name` at `mount`.
pub fn observe(root: &Path, target: &Target, name: &str, mount: &Path) -> Result<Observed> {
    let mounts = sys::mounts(root)?;
    let swaps = sys::swaps(root);
    let mapping = sys::mapping(root, name);
    let ours: Vec<DevNo> = mapping.devno().into_iter().collect();
    let device = observe_device(root, target, &mounts, &swaps, &ours)?;
    let mount_path = sys::canonical(root, mount);
    let mount_state = sys::mount_state(root, mount, &mounts);
    let inner = inner_of(root, name, mapping.is_luks2())?;
    let swap_on = mapping.devno().is_some_and(|d| swaps.contains(&d));
    Ok(Observed {
        device,
        mapping,
        mount_path,
        mount: mount_state,
        inner,
        swap_on,
    })
}

/// Everything `up` over several disks decides from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SetObserved {
    /// One per disk, in the order named (which says nothing about the
    /// members' order: the tokens do).
    pub disks: Vec<DeviceObs>,
    /// The member mappings `NAME-0` .. `NAME-(n-1)`.
    pub members: Vec<Mapping>,
    /// The mapping `NAME`: the stripe.
    pub stripe: Mapping,
    /// The mount point as given, with symlinks resolved.
    pub mount_path: PathBuf,
    pub mount: MountState,
    /// The signatures inside the stripe, when it is open.
    pub inner: Option<Vec<Signature>>,
}

/// Reads the machine's state for `up` of the disks `disks` as `name`.
pub fn observe_set(
    root: &Path,
    disks: &[PathBuf],
    name: &str,
    mount: &Path,
) -> Result<SetObserved> {
    let mounts = sys::mounts(root)?;
    let swaps = sys::swaps(root);
    let members: Vec<Mapping> = (0..disks.len() as u32)
        .map(|i| sys::mapping(root, &names::member_name(name, i)))
        .collect();
    let ours: Vec<DevNo> = members.iter().filter_map(Mapping::devno).collect();
    // One thread per disk: most of a look is reading the disk (libblkid's
    // probers, the zero check), which overlaps across disks; the
    // libcryptsetup header read takes turns (see `luks`).
    let disks = crate::parallel::each(disks, "examining a disk", |d| {
        observe_device(root, &Target::Disk(d.clone()), &mounts, &swaps, &ours)
    })?;
    let stripe = sys::mapping(root, name);
    let inner = inner_of(root, name, stripe.is_set())?;
    Ok(SetObserved {
        disks,
        members,
        stripe,
        mount_path: sys::canonical(root, mount),
        mount: sys::mount_state(root, mount, &mounts),
        inner,
    })
}

/// The signatures inside /dev/mapper/NAME, when it is `open`.
fn inner_of(root: &Path, name: &str, open: bool) -> Result<Option<Vec<Signature>>> {
    if !open {
        return Ok(None);
    }
    content::examine_inner(&under(root, &names::mapper_path(name))).map(Some)
}

/// Looks at one target: what is at its path, what it holds, what uses it.
pub fn observe_device(
    root: &Path,
    t: &Target,
    mounts: &[MountEntry],
    swaps: &[DevNo],
    ours: &[DevNo],
) -> Result<DeviceObs> {
    let path = t.path();
    let at = under(root, path);
    let meta = match std::fs::metadata(&at) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let parent_at = under(root, parent);
            let parent_exists = parent_at.is_dir();
            let free_bytes = if parent_exists {
                free_space(&parent_at)
            } else {
                0
            };
            return Ok(DeviceObs {
                target: TargetState::Missing {
                    parent_exists,
                    free_bytes,
                },
                content: None,
                busy: Vec::new(),
                read_only: false,
            });
        }
        Err(e) => return Err(e).with_context(|| format!("examining {}", path.display())),
    };
    let ft = meta.file_type();
    let wrong = |what: &str| DeviceObs {
        target: TargetState::WrongKind { what: what.into() },
        content: None,
        busy: Vec::new(),
        read_only: false,
    };
    let (target, probe) = match t {
        Target::Disks(_) | Target::Auto => {
            anyhow::bail!("internal: a set is observed member by member")
        }
        Target::Disk(_) => {
            if !ft.is_block_device() {
                return Ok(wrong(if ft.is_char_device() {
                    "a character device"
                } else if ft.is_dir() {
                    "a directory"
                } else if ft.is_file() {
                    "a regular file (use --file)"
                } else {
                    "not a block device"
                }));
            }
            let devno = DevNo::from_raw(meta.rdev());
            let sys = sys::sys_dev(root, devno);
            let size = sys::read_trim(&sys.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                * 512;
            let logical_block = sys::read_trim(&sys.join("queue/logical_block_size"))
                .or_else(|| sys::read_trim(&sys.join("../queue/logical_block_size")))
                .and_then(|s| s.parse().ok())
                .unwrap_or(512);
            let partition_of = sys.join("partition").exists().then(|| {
                std::fs::canonicalize(&sys)
                    .ok()
                    .and_then(|p| {
                        p.parent()
                            .and_then(|d| d.file_name())
                            .map(|n| format!("/dev/{}", n.to_string_lossy()))
                    })
                    .unwrap_or_else(|| "a partitioned disk".into())
            });
            (
                TargetState::Block {
                    dev: BlockDev {
                        path: path.to_path_buf(),
                        devno,
                    },
                    size,
                    logical_block,
                    partition_of,
                },
                at.clone(),
            )
        }
        Target::File { .. } => {
            if !ft.is_file() {
                return Ok(wrong(if ft.is_dir() {
                    "a directory"
                } else if ft.is_block_device() {
                    "a block device (use --disk)"
                } else {
                    "not a regular file"
                }));
            }
            let loop_dev = sys::loop_for_inode(root, meta.dev(), meta.ino());
            let probe = loop_dev
                .as_ref()
                .map_or_else(|| at.clone(), |l| under(root, &l.dev.path));
            (
                TargetState::File {
                    size: meta.len(),
                    loop_dev,
                    free_bytes: free_space(&at),
                    others_can_change: crate::perm::check("backing file", path, &meta, "600").err(),
                },
                probe,
            )
        }
    };
    let content = Some(content::examine(&probe)?);
    let mut obs = DeviceObs {
        target,
        content,
        busy: Vec::new(),
        read_only: false,
    };
    if let Some(b) = obs.block().cloned() {
        obs.busy = sys::busy_reasons(root, b.devno, &b.path, mounts, swaps, ours);
        obs.read_only =
            sys::read_trim(&sys::sys_dev(root, b.devno).join("ro")).as_deref() == Some("1");
    }
    Ok(obs)
}

/// Bytes free (for unprivileged use) on the filesystem holding `p`.
fn free_space(p: &Path) -> u64 {
    nix::sys::statvfs::statvfs(p)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::sys::tests::mk;
    use super::*;

    /// A fixture root with /proc and an empty /sys.
    fn fixture() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        mk(
            root.path(),
            "proc/self/mountinfo",
            "22 1 252:1 / / rw - ext4 /dev/vda1 rw\n",
        );
        mk(
            root.path(),
            "proc/swaps",
            "Filename Type Size Used Priority\n",
        );
        mk(root.path(), "sys/class/misc/device-mapper/dev", "10:236\n");
        std::fs::create_dir_all(root.path().join("sys/block")).unwrap();
        root
    }

    fn file_target(p: &str) -> Target {
        Target::File {
            path: p.into(),
            size: Some(64 << 20),
        }
    }

    #[test]
    fn a_new_file_target_is_missing() {
        let root = fixture();
        std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
        let o = observe(
            root.path(),
            &file_target("/var/lib/v.img"),
            "secretfs",
            Path::new("/mnt/secretfs"),
        )
        .unwrap();
        assert!(matches!(
            o.device.target,
            TargetState::Missing {
                parent_exists: true,
                ..
            }
        ));
        assert_eq!(o.mapping, Mapping::Absent);
        assert_eq!(o.mount, MountState::Missing);
        assert!(o.device.content.is_none());
    }

    #[test]
    fn an_existing_file_is_examined_under_the_root() {
        let root = fixture();
        let r = root.path();
        let img = r.join("var/lib/v.img");
        std::fs::create_dir_all(img.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"an archive", 30 << 20).unwrap();
        let o = observe(
            r,
            &file_target("/var/lib/v.img"),
            "secretfs",
            Path::new("/mnt/x"),
        )
        .unwrap();
        let c = o.device.content.expect("examined");
        assert!(
            matches!(c.data, Data::NonZero { offset, .. } if offset == 30 << 20),
            "{c:?}"
        );
        // A disk target that is a regular file is the wrong kind.
        let o = observe(
            r,
            &Target::Disk("/var/lib/v.img".into()),
            "secretfs",
            Path::new("/mnt/x"),
        )
        .unwrap();
        assert!(matches!(o.device.target, TargetState::WrongKind { .. }));
    }
}
