//! Observing the machine, read-only.
//!
//! Every read of system state goes through a `root` path (normally `/`), so
//! tests can point it at a fixture tree. Parsers take `&str` and are pure.
//! Nothing here writes; [`observe`] gathers what the planner needs.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::{self, Tool};
use crate::config::{Target, UpConfig};
use crate::names;

/// A device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct DevNo {
    pub major: u32,
    pub minor: u32,
}

impl DevNo {
    /// From a raw `dev_t`.
    pub fn from_raw(d: u64) -> Self {
        DevNo {
            major: libc::major(d),
            minor: libc::minor(d),
        }
    }
    /// Parses `MAJ:MIN`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNo {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// A block device node and its number.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockDev {
    pub path: PathBuf,
    pub devno: DevNo,
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub devno: DevNo,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes the octal escapes mountinfo uses for space, tab, newline, `\`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses /proc/self/mountinfo; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                devno: DevNo::parse(pre.get(2)?)?,
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                fstype: post.first()?.to_string(),
                source: unescape(post.get(1)?),
            })
        })
        .collect()
}

/// Parses /proc/swaps into the swap devices' paths.
pub fn parse_swaps(text: &str) -> Vec<PathBuf> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

/// What a device or file holds, as libblkid sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signature {
    /// No signature found.
    Blank,
    /// A LUKS header.
    Luks {
        version: u32,
        uuid: String,
        label: Option<String>,
        subsystem: Option<String>,
    },
    /// A filesystem, swap or other content signature (TYPE=...).
    Content { fstype: String },
    /// A partition table (PTTYPE=...).
    PartitionTable { pttype: String },
    /// libblkid found several conflicting signatures.
    Ambivalent,
}

impl Signature {
    /// A LUKS2 header carrying secretfs's subsystem label.
    pub fn is_ours(&self) -> bool {
        matches!(self, Signature::Luks { version: 2, subsystem: Some(s), .. } if s == names::LUKS_SUBSYSTEM)
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Signature::Blank => "no signature".into(),
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
                    Some(names::LUKS_SUBSYSTEM) if *version == 2 =>
                        String::from(" (made by secretfs)"),
                    Some(s) => format!(" of subsystem '{s}'"),
                    None => String::from(" (not made by secretfs)"),
                }
            ),
            Signature::Content { fstype } => format!(
                "{} {fstype} signature",
                if fstype.starts_with(['a', 'e', 'i', 'o', 'u', 'x']) {
                    "an"
                } else {
                    "a"
                }
            ),
            Signature::PartitionTable { pttype } => format!("a {pttype} partition table"),
            Signature::Ambivalent => "several conflicting signatures".into(),
        }
    }
}

/// Parses `blkid -p -o export` output (empty output means blank).
pub fn parse_blkid_export(text: &str) -> Signature {
    let kv: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    if let Some(pt) = kv.get("PTTYPE") {
        if !kv.contains_key("TYPE") {
            return Signature::PartitionTable {
                pttype: pt.to_string(),
            };
        }
    }
    match kv.get("TYPE") {
        None => Signature::Blank,
        Some(&"crypto_LUKS") => Signature::Luks {
            version: kv.get("VERSION").and_then(|v| v.parse().ok()).unwrap_or(0),
            uuid: kv.get("UUID").unwrap_or(&"").to_string(),
            label: kv.get("LABEL").map(|s| s.to_string()),
            subsystem: kv.get("SUBSYSTEM").map(|s| s.to_string()),
        },
        Some(t) => Signature::Content {
            fstype: t.to_string(),
        },
    }
}

/// Probes a device or file with `blkid -p` (no cache, all signatures).
pub fn signature(path: &Path) -> Result<Signature> {
    // Exit 2: nothing found. Exit 8: ambivalent (several signatures).
    let out = cmd::run(
        Tool::Blkid,
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            path.as_os_str(),
        ],
        &[2, 8],
    )
    .with_context(|| format!("probing {} for signatures", path.display()))?;
    match out.status.code() {
        Some(2) => Ok(Signature::Blank),
        Some(8) => Ok(Signature::Ambivalent),
        _ => Ok(parse_blkid_export(&String::from_utf8_lossy(&out.stdout))),
    }
}

/// The state of the device-mapper name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Mapping {
    /// No mapping with this name.
    Absent,
    /// A mapping exists.
    Open {
        /// The mapping's own device number.
        devno: DevNo,
        /// The devices it sits on.
        on: Vec<DevNo>,
        /// The dm UUID (`CRYPT-LUKS2-<uuid>-<name>` for LUKS2).
        dm_uuid: Option<String>,
    },
    /// device-mapper cannot be used (no dm-mod, not root).
    Unavailable { reason: String },
}

impl Mapping {
    /// Whether this is a LUKS2 dm-crypt mapping.
    pub fn is_luks2(&self) -> bool {
        matches!(self, Mapping::Open { dm_uuid: Some(u), .. } if u.starts_with(names::DM_UUID_PREFIX_LUKS2))
    }
}

/// Looks up the mapping `name` with the device-mapper ioctls.
pub fn mapping(name: &str) -> Mapping {
    use devicemapper::{DevId, DmName, DmOptions, DM};
    let dm = match DM::new() {
        Ok(dm) => dm,
        Err(e) => {
            return Mapping::Unavailable {
                reason: format!("cannot open /dev/mapper/control ({e}): load the dm-mod and dm-crypt modules and run as root"),
            }
        }
    };
    let Ok(dm_name) = DmName::new(name) else {
        return Mapping::Absent;
    };
    let id = DevId::Name(dm_name);
    let info = match dm.device_info(&id) {
        Ok(i) => i,
        Err(_) => return Mapping::Absent,
    };
    let dev = info.device();
    let on = dm
        .table_deps(&id, DmOptions::default())
        .map(|v| {
            v.into_iter()
                .map(|d| DevNo {
                    major: d.major,
                    minor: d.minor,
                })
                .collect()
        })
        .unwrap_or_default();
    Mapping::Open {
        devno: DevNo {
            major: dev.major,
            minor: dev.minor,
        },
        on,
        dm_uuid: info.uuid().map(|u| u.to_string()),
    }
}

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
    /// A regular file, possibly attached to a loop device already.
    File {
        size: u64,
        loop_dev: Option<LoopState>,
        free_bytes: u64,
    },
}

/// A loop device backed by the target file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LoopState {
    pub dev: BlockDev,
    /// Set by secretfs when it attaches (the device goes away when closed).
    pub autoclear: bool,
}

/// The mount point's state.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MountState {
    /// The directory does not exist.
    Missing,
    /// A directory, not a mount point; `empty` tells whether it has entries.
    Dir { empty: bool },
    /// Something other than a directory is at the path.
    NotADirectory,
    /// Something is mounted there (the topmost mount).
    Mounted {
        devno: DevNo,
        fstype: String,
        source: String,
    },
}

/// Everything `up` decides from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Observed {
    pub target: TargetState,
    /// What the backing device (or file) holds.
    pub signature: Signature,
    /// Whether libcryptsetup agrees the signature is a LUKS2 header it can
    /// load (`None`: not asked, since blkid saw no LUKS).
    pub luks_loads: Option<bool>,
    /// Why the backing device is in use by something other than our
    /// mapping: mounted, swap, holders, busy partitions.
    pub busy: Vec<String>,
    pub mapping: Mapping,
    pub mount: MountState,
    /// The filesystem inside the open mapping, when it is open.
    pub inner: Option<Signature>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// sysfs directory of a block device.
fn sys_dev(root: &Path, d: DevNo) -> PathBuf {
    root.join(format!("sys/dev/block/{d}"))
}

/// Names in a sysfs `holders` directory.
pub fn holders(root: &Path, d: DevNo) -> Vec<String> {
    std::fs::read_dir(sys_dev(root, d).join("holders"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The device number a sysfs block name (`dm-3`, `loop0`) has.
pub fn devno_of_name(root: &Path, name: &str) -> Option<DevNo> {
    DevNo::parse(&read_trim(
        &root.join(format!("sys/class/block/{name}/dev")),
    )?)
}

/// Partitions of a whole disk, as (name, devno).
fn partitions(root: &Path, d: DevNo) -> Vec<(String, DevNo)> {
    let dir = sys_dev(root, d);
    std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("partition").exists())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    Some((n, DevNo::parse(&read_trim(&e.path().join("dev"))?)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Finds the loop device backed by `file` (canonical path), if any.
pub fn loop_for_file(root: &Path, file: &Path) -> Option<LoopState> {
    let rd = std::fs::read_dir(root.join("sys/block")).ok()?;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Some(backing) = read_trim(&e.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(&backing) == file {
            let devno = DevNo::parse(&read_trim(&e.path().join("dev"))?)?;
            return Some(LoopState {
                dev: BlockDev {
                    path: PathBuf::from(format!("/dev/{name}")),
                    devno,
                },
                autoclear: read_trim(&e.path().join("loop/autoclear")).as_deref() == Some("1"),
            });
        }
    }
    None
}

/// Why `d` (or a partition of it) is in use, ignoring holders named in
/// `ours` (our own mapping).
pub fn busy_reasons(
    root: &Path,
    d: DevNo,
    path: &Path,
    mounts: &[MountEntry],
    swaps: &[DevNo],
    ours: Option<DevNo>,
) -> Vec<String> {
    let mut why = Vec::new();
    let mut devs = vec![(path.display().to_string(), d)];
    devs.extend(
        partitions(root, d)
            .into_iter()
            .map(|(n, p)| (format!("/dev/{n}"), p)),
    );
    for (label, dev) in &devs {
        for m in mounts.iter().filter(|m| m.devno == *dev) {
            why.push(format!("{label} is mounted at {}", m.mount_point.display()));
        }
        if swaps.contains(dev) {
            why.push(format!("{label} is in use as swap"));
        }
        for h in holders(root, *dev) {
            if ours.is_some() && devno_of_name(root, &h) == ours {
                continue;
            }
            let what = read_trim(&root.join(format!("sys/class/block/{h}/dm/name")))
                .map(|n| format!("device-mapper device '{n}' ({h})"))
                .unwrap_or(h);
            why.push(format!("{label} is held by {what}"));
        }
    }
    why
}

/// The controller model that marks EC2 instance-store NVMe disks.
pub const INSTANCE_STORE_MODEL: &str = "Amazon EC2 NVMe Instance Storage";

/// Instance-store NVMe namespaces (`/dev/nvme1n1`, ...), sorted by name.
/// `model` is matched as a prefix of the controller's sysfs model (which
/// the kernel pads with spaces).
pub fn instance_store_disks(root: &Path, model: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("sys/block")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("nvme")
                && read_trim(&e.path().join("device/model")).is_some_and(|m| m.starts_with(model))
        })
        .map(|e| PathBuf::from("/dev").join(e.file_name()))
        .collect();
    v.sort();
    v
}

/// Reads the machine's state for `up`. Read-only.
pub fn observe(root: &Path, cfg: &UpConfig) -> Result<Observed> {
    let mountinfo = std::fs::read_to_string(root.join("proc/self/mountinfo"))
        .context("reading /proc/self/mountinfo")?;
    let mounts = parse_mountinfo(&mountinfo);
    let swaps: Vec<DevNo> = std::fs::read_to_string(root.join("proc/swaps"))
        .map(|t| parse_swaps(&t))
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.file_type().is_block_device())
        .map(|m| DevNo::from_raw(m.rdev()))
        .collect();
    let mapping = mapping(&cfg.name);
    let our_devno = match &mapping {
        Mapping::Open { devno, .. } => Some(*devno),
        _ => None,
    };

    let (target, probe_path, backing) = observe_target(root, &cfg.target)?;
    let signature = match &probe_path {
        Some(p) => signature(p)?,
        None => Signature::Blank,
    };
    let luks_loads = match (&signature, &probe_path) {
        (Signature::Luks { .. }, Some(p)) => Some(crate::luks::loads_as_luks2(p)),
        _ => None,
    };
    let busy = match &backing {
        Some(b) => busy_reasons(root, b.devno, &b.path, &mounts, &swaps, our_devno),
        None => Vec::new(),
    };
    let mount = mount_state(&cfg.mount, &mounts);
    let inner = match (&mapping, our_devno) {
        (Mapping::Open { .. }, Some(_)) if mapping.is_luks2() => {
            Some(signature_of_mapping(&cfg.name)?)
        }
        _ => None,
    };
    Ok(Observed {
        target,
        signature,
        luks_loads,
        busy,
        mapping,
        mount,
        inner,
    })
}

fn signature_of_mapping(name: &str) -> Result<Signature> {
    signature(&names::mapper_path(name))
}

/// Looks at the target path. Returns the state, the path to probe for a
/// signature (device, or the file itself), and the backing block device.
fn observe_target(
    root: &Path,
    t: &Target,
) -> Result<(TargetState, Option<PathBuf>, Option<BlockDev>)> {
    let path = t.path();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let parent_exists = parent.is_dir();
            let free_bytes = if parent_exists { free_space(parent) } else { 0 };
            return Ok((
                TargetState::Missing {
                    parent_exists,
                    free_bytes,
                },
                None,
                None,
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("examining {}", path.display())),
    };
    let ft = meta.file_type();
    match t {
        Target::Disk(_) => {
            if !ft.is_block_device() {
                let what = if ft.is_char_device() {
                    "a character device"
                } else if ft.is_dir() {
                    "a directory"
                } else if ft.is_file() {
                    "a regular file (use --file)"
                } else {
                    "not a block device"
                };
                return Ok((TargetState::WrongKind { what: what.into() }, None, None));
            }
            let devno = DevNo::from_raw(meta.rdev());
            let sys = sys_dev(root, devno);
            let size = read_trim(&sys.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                * 512;
            let logical_block = read_trim(&sys.join("queue/logical_block_size"))
                .or_else(|| read_trim(&sys.join("../queue/logical_block_size")))
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
            let dev = BlockDev {
                path: path.to_path_buf(),
                devno,
            };
            Ok((
                TargetState::Block {
                    dev: dev.clone(),
                    size,
                    logical_block,
                    partition_of,
                },
                Some(path.to_path_buf()),
                Some(dev),
            ))
        }
        Target::File { .. } => {
            if !ft.is_file() {
                let what = if ft.is_dir() {
                    "a directory"
                } else if ft.is_block_device() {
                    "a block device (use --disk)"
                } else {
                    "not a regular file"
                };
                return Ok((TargetState::WrongKind { what: what.into() }, None, None));
            }
            let canon = std::fs::canonicalize(path)
                .with_context(|| format!("resolving {}", path.display()))?;
            let loop_dev = loop_for_file(root, &canon);
            let free_bytes = free_space(path);
            let backing = loop_dev.as_ref().map(|l| l.dev.clone());
            let probe = backing
                .as_ref()
                .map_or_else(|| path.to_path_buf(), |b| b.path.clone());
            Ok((
                TargetState::File {
                    size: meta.len(),
                    loop_dev,
                    free_bytes,
                },
                Some(probe),
                backing,
            ))
        }
    }
}

/// Bytes free (for unprivileged use) on the filesystem holding `p`.
fn free_space(p: &Path) -> u64 {
    nix::sys::statvfs::statvfs(p)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0)
}

/// The state of the mount point, from the mount table.
pub fn mount_state(dir: &Path, mounts: &[MountEntry]) -> MountState {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(m) = mounts.iter().rev().find(|m| m.mount_point == canon) {
        return MountState::Mounted {
            devno: m.devno,
            fstype: m.fstype.clone(),
            source: m.source.clone(),
        };
    }
    match std::fs::symlink_metadata(&canon) {
        Err(_) => MountState::Missing,
        Ok(m) if m.is_dir() => MountState::Dir {
            empty: std::fs::read_dir(&canon)
                .map(|mut r| r.next().is_none())
                .unwrap_or(true),
        },
        Ok(_) => MountState::NotADirectory,
    }
}

/// Mount points where `devno` is mounted.
pub fn mounts_of(devno: DevNo, mounts: &[MountEntry]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter(|m| m.devno == devno)
        .map(|m| m.mount_point.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:25 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=200k
41 22 253:0 / /mnt/secret\\040fs rw,nodev,nosuid,noatime shared:30 - ext4 /dev/mapper/secretfs rw
bogus line
";

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[2].devno,
            DevNo {
                major: 253,
                minor: 0
            }
        );
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/secret fs"));
        assert_eq!(m[2].fstype, "ext4");
        assert_eq!(m[2].source, "/dev/mapper/secretfs");
        assert_eq!(
            mounts_of(
                DevNo {
                    major: 253,
                    minor: 0
                },
                &m
            ),
            vec![PathBuf::from("/mnt/secret fs")]
        );
    }

    #[test]
    fn swaps_parse() {
        let t = "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme1n1 partition 100 0 -2\n/swapfile file 1 0 -3\n";
        assert_eq!(
            parse_swaps(t),
            vec![PathBuf::from("/dev/nvme1n1"), PathBuf::from("/swapfile")]
        );
    }

    #[test]
    fn blkid_export_classifies() {
        let ours = "DEVNAME=/dev/vdb\nVERSION=2\nUUID=ed0c\nLABEL=secretfs\nSUBSYSTEM=secretfs\nTYPE=crypto_LUKS\nUSAGE=crypto\n";
        let s = parse_blkid_export(ours);
        assert!(s.is_ours(), "{s:?}");
        let other = "VERSION=2\nUUID=x\nTYPE=crypto_LUKS\n";
        assert!(!parse_blkid_export(other).is_ours());
        let v1 = "VERSION=1\nUUID=x\nSUBSYSTEM=secretfs\nTYPE=crypto_LUKS\n";
        assert!(!parse_blkid_export(v1).is_ours());
        assert_eq!(
            parse_blkid_export("TYPE=ext4\nUSAGE=filesystem\n"),
            Signature::Content {
                fstype: "ext4".into()
            }
        );
        assert_eq!(
            parse_blkid_export("PTTYPE=gpt\nPTUUID=1\n"),
            Signature::PartitionTable {
                pttype: "gpt".into()
            }
        );
        assert_eq!(parse_blkid_export(""), Signature::Blank);
        assert!(parse_blkid_export(other)
            .describe()
            .contains("not made by secretfs"));
    }

    #[test]
    fn sysfs_fixture_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mk = |p: &str, content: &str| {
            let f = r.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        };
        // vdb (254:16) with partition vdb1 (254:17) held by dm-0, and our
        // mapping dm-1 (253:1) holding vdb itself.
        mk("sys/dev/block/254:16/size", "4096\n");
        mk("sys/dev/block/254:16/vdb1/partition", "1\n");
        mk("sys/dev/block/254:16/vdb1/dev", "254:17\n");
        std::fs::create_dir_all(r.join("sys/dev/block/254:16/holders/dm-1")).unwrap();
        std::fs::create_dir_all(r.join("sys/dev/block/254:17/holders/dm-0")).unwrap();
        mk("sys/class/block/dm-0/dev", "253:0\n");
        mk("sys/class/block/dm-0/dm/name", "other\n");
        mk("sys/class/block/dm-1/dev", "253:1\n");
        mk(
            "sys/block/loop3/loop/backing_file",
            "/var/lib/secretfs.img\n",
        );
        mk("sys/block/loop3/loop/autoclear", "1\n");
        mk("sys/block/loop3/dev", "7:3\n");
        mk(
            "sys/block/nvme0n1/device/model",
            "Amazon Elastic Block Store              \n",
        );
        mk(
            "sys/block/nvme2n1/device/model",
            "Amazon EC2 NVMe Instance Storage        \n",
        );
        mk(
            "sys/block/nvme1n1/device/model",
            "Amazon EC2 NVMe Instance Storage        \n",
        );
        assert_eq!(
            instance_store_disks(r, INSTANCE_STORE_MODEL),
            vec![PathBuf::from("/dev/nvme1n1"), PathBuf::from("/dev/nvme2n1")]
        );
        assert!(instance_store_disks(r, "QEMU NVMe Ctrl").is_empty());
        let d = DevNo {
            major: 254,
            minor: 16,
        };
        let mounts = parse_mountinfo("50 1 254:17 / /data rw - xfs /dev/vdb1 rw\n");
        let why = busy_reasons(
            r,
            d,
            Path::new("/dev/vdb"),
            &mounts,
            &[],
            Some(DevNo {
                major: 253,
                minor: 1,
            }),
        );
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("/dev/vdb1 is mounted at /data"));
        assert!(why[1].contains("device-mapper device 'other'"));
        let why = busy_reasons(r, d, Path::new("/dev/vdb"), &[], &[], None);
        assert!(
            why.iter().any(|w| w.contains("/dev/vdb is held by dm-1")),
            "{why:?}"
        );
        let l = loop_for_file(r, Path::new("/var/lib/secretfs.img")).unwrap();
        assert_eq!(l.dev.path, PathBuf::from("/dev/loop3"));
        assert!(l.autoclear);
        assert!(loop_for_file(r, Path::new("/other.img")).is_none());
    }
}
