//! The machine's tables, read-only and through a root path (normally `/`,
//! a fixture tree in tests): mountinfo, swaps, sysfs block devices, loop
//! devices and device-mapper mappings. Parsers take `&str` and are pure.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::names::{self, under};

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
    /// The directory of the filesystem mounted (`/` unless a bind mount
    /// of a directory inside it).
    pub root: PathBuf,
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
                root: PathBuf::from(unescape(pre.get(3)?)),
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

/// The mount table under `root`.
pub fn mounts(root: &Path) -> anyhow::Result<Vec<MountEntry>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(under(root, Path::new("/proc/self/mountinfo")))
        .context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// The block devices in use as swap under `root`.
pub fn swaps(root: &Path) -> Vec<DevNo> {
    std::fs::read_to_string(under(root, Path::new("/proc/swaps")))
        .map(|t| parse_swaps(&t))
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::metadata(under(root, p)).ok())
        .filter(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .map(|m| DevNo::from_raw(m.rdev()))
        .collect()
}

/// Where the kernel lists block devices.
const SYS_BLOCK: &str = "/sys/block";

pub(crate) fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// sysfs directory of a block device.
pub fn sys_dev(root: &Path, d: DevNo) -> PathBuf {
    under(root, Path::new(&format!("/sys/dev/block/{d}")))
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
    DevNo::parse(&read_trim(&under(
        root,
        Path::new(&format!("/sys/class/block/{name}/dev")),
    ))?)
}

/// The kernel name (`vdb`, `loop3`, `dm-0`) of a block device.
pub fn name_of(root: &Path, d: DevNo) -> Option<String> {
    // sysfs `uevent` carries DEVNAME; fixtures may give only the link.
    if let Some(n) = read_trim(&sys_dev(root, d).join("uevent")).and_then(|u| {
        u.lines()
            .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
    }) {
        return Some(n);
    }
    std::fs::canonicalize(sys_dev(root, d))
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// The device number of the block device at `path` (under `root`).
pub fn devno_of_path(root: &Path, path: &Path) -> Option<DevNo> {
    let m = std::fs::metadata(under(root, path)).ok()?;
    Some(DevNo::from_raw(m.rdev()))
}

/// The device-mapper name of a mapping's device number.
pub fn dm_name(root: &Path, d: DevNo) -> Option<String> {
    read_trim(&sys_dev(root, d).join("dm/name"))
}

/// `/dev/NAME` of a block device.
pub fn dev_path(root: &Path, d: DevNo) -> Option<PathBuf> {
    name_of(root, d).map(|n| PathBuf::from("/dev").join(n))
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

/// A loop device and its backing file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LoopState {
    pub dev: BlockDev,
    /// The backing file's path, as the kernel shows it.
    pub file: PathBuf,
    /// Set by secretfs when it attaches (the device goes away when closed).
    pub autoclear: bool,
}

/// The loop device `/sys/block/NAME`, if NAME is one with a backing file.
fn loop_at(root: &Path, name: &str) -> Option<LoopState> {
    let sys = under(root, Path::new(SYS_BLOCK)).join(name);
    let file = read_trim(&sys.join("loop/backing_file"))?;
    Some(LoopState {
        dev: BlockDev {
            path: PathBuf::from("/dev").join(name),
            devno: DevNo::parse(&read_trim(&sys.join("dev"))?)?,
        },
        file: PathBuf::from(file),
        autoclear: read_trim(&sys.join("loop/autoclear")).as_deref() == Some("1"),
    })
}

/// The loop device backed by the file with device and inode `(dev, ino)`:
/// the backing path the kernel shows is stat'ed, so a file reached by
/// another path (a link, a bind mount) is still found, and another file
/// that now has the same name is not.
pub fn loop_for_inode(root: &Path, dev: u64, ino: u64) -> Option<LoopState> {
    let rd = std::fs::read_dir(under(root, Path::new(SYS_BLOCK))).ok()?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let l = loop_at(root, &n)?;
        let m = std::fs::metadata(under(root, &l.file)).ok()?;
        (m.dev() == dev && m.ino() == ino).then_some(l)
    })
}

/// The loop device `file` is attached to, if any.
pub fn loop_device_of_file(root: &Path, file: &Path) -> Option<PathBuf> {
    let m = std::fs::metadata(under(root, file)).ok()?;
    loop_for_inode(root, m.dev(), m.ino()).map(|l| l.dev.path)
}

/// Whether the loop device `dev` (`/dev/loopN`) still has a backing file.
pub fn loop_attached(root: &Path, dev: &Path) -> bool {
    dev.file_name()
        .is_some_and(|n| loop_at(root, &n.to_string_lossy()).is_some())
}

/// The loop device with number `d`, if it is one.
pub fn loop_of(root: &Path, d: DevNo) -> Option<LoopState> {
    loop_at(root, &name_of(root, d)?)
}

/// Why `d` (or a partition of it) is in use, ignoring holders named in
/// `ours` (our own mappings).
pub fn busy_reasons(
    root: &Path,
    d: DevNo,
    path: &Path,
    mounts: &[MountEntry],
    swaps: &[DevNo],
    ours: &[DevNo],
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
            if devno_of_name(root, &h).is_some_and(|d| ours.contains(&d)) {
                continue;
            }
            let what = read_trim(&under(
                root,
                Path::new(&format!("/sys/class/block/{h}/dm/name")),
            ))
            .map(|n| format!("device-mapper device '{n}' ({h})"))
            .unwrap_or(h);
            why.push(format!("{label} is held by {what}"));
        }
    }
    why
}

/// The memory available for new work (`MemAvailable` of /proc/meminfo),
/// in bytes.
pub fn mem_available(root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(under(root, Path::new("/proc/meminfo"))).ok()?;
    parse_mem_available(&text)
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
pub fn parse_mem_available(text: &str) -> Option<u64> {
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb << 10)
}

/// Instance-store NVMe namespaces (`/dev/nvme1n1`, ...), sorted by name.
/// `model` is matched as a prefix of the controller's sysfs model (which
/// the kernel pads with spaces).
pub fn instance_store_disks(root: &Path, model: &str) -> Vec<PathBuf> {
    let model = model.trim();
    let Ok(rd) = std::fs::read_dir(under(root, Path::new(SYS_BLOCK))) else {
        return Vec::new();
    };
    if model.is_empty() {
        return Vec::new();
    }
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

/// The state of a device-mapper name.
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
    /// device-mapper is not there (no dm-mod).
    Unavailable { reason: String },
}

impl Mapping {
    /// Whether this is the stripe of a secretfs set.
    pub fn is_set(&self) -> bool {
        self.set_id().is_some()
    }
    /// The set id of a secretfs stripe.
    pub fn set_id(&self) -> Option<&str> {
        match self {
            Mapping::Open {
                dm_uuid: Some(u), ..
            } => u.strip_prefix(names::DM_UUID_PREFIX_SET),
            _ => None,
        }
    }
    /// Whether this is a LUKS2 dm-crypt mapping.
    pub fn is_luks2(&self) -> bool {
        matches!(self, Mapping::Open { dm_uuid: Some(u), .. } if u.starts_with(names::DM_UUID_PREFIX_LUKS2))
    }
    /// The mapping's device number, when open.
    pub fn devno(&self) -> Option<DevNo> {
        match self {
            Mapping::Open { devno, .. } => Some(*devno),
            _ => None,
        }
    }
}

/// The names of every device-mapper mapping (`/sys/block/dm-*/dm/name`).
pub fn mapper_names(root: &Path) -> Vec<String> {
    std::fs::read_dir(under(root, Path::new(SYS_BLOCK)))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| read_trim(&e.path().join("dm/name")))
                .collect()
        })
        .unwrap_or_default()
}

/// The open volumes of `up --each-disk` for `name` (`NAME-diskN`), in
/// index order.
pub fn disk_volumes(root: &Path, name: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = mapper_names(root)
        .into_iter()
        .filter_map(|m| crate::names::disk_index_of(name, &m).map(|n| (n, m)))
        .collect();
    found.sort();
    found.into_iter().map(|(_, m)| m).collect()
}

/// Looks up the mapping `name` in sysfs (`/sys/block/dm-*/dm/name`).
pub fn mapping(root: &Path, name: &str) -> Mapping {
    let control = under(root, Path::new("/sys/class/misc/device-mapper"));
    let Ok(rd) = std::fs::read_dir(under(root, Path::new(SYS_BLOCK))) else {
        return Mapping::Unavailable {
            reason: format!("{SYS_BLOCK} cannot be read"),
        };
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if read_trim(&p.join("dm/name")).as_deref() != Some(name) {
            continue;
        }
        let Some(devno) = read_trim(&p.join("dev")).and_then(|s| DevNo::parse(&s)) else {
            continue;
        };
        let mut on: Vec<DevNo> = std::fs::read_dir(p.join("slaves"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| devno_of_name(root, &e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        on.sort();
        return Mapping::Open {
            devno,
            on,
            dm_uuid: read_trim(&p.join("dm/uuid")).filter(|u| !u.is_empty()),
        };
    }
    if !control.exists() {
        return Mapping::Unavailable {
            reason: "the kernel has no device-mapper (load the dm-mod and dm-crypt modules)".into(),
        };
    }
    Mapping::Absent
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

/// The state of the mount point `dir` (its canonical path under `root`).
pub fn mount_state(root: &Path, dir: &Path, mounts: &[MountEntry]) -> MountState {
    let canon = canonical(root, dir);
    if let Some(m) = mounts.iter().rev().find(|m| m.mount_point == canon) {
        return MountState::Mounted {
            devno: m.devno,
            fstype: m.fstype.clone(),
            source: m.source.clone(),
        };
    }
    let at = under(root, &canon);
    match std::fs::symlink_metadata(&at) {
        Err(_) => MountState::Missing,
        Ok(m) if m.is_dir() => MountState::Dir {
            empty: std::fs::read_dir(&at)
                .map(|mut r| r.next().is_none())
                .unwrap_or(true),
        },
        Ok(_) => MountState::NotADirectory,
    }
}

/// `p` with symlinks resolved under `root`, as a path seen from `root`
/// (itself where it does not exist).
pub fn canonical(root: &Path, p: &Path) -> PathBuf {
    let Ok(c) = std::fs::canonicalize(under(root, p)) else {
        return p.to_path_buf();
    };
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    match c.strip_prefix(&root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => c,
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:  1000 kB\nMemAvailable:    2097152 kB\n";
        assert_eq!(parse_mem_available(text), Some(2 << 30));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_mem_available("MemAvailable: lots\n"), None);
    }

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
        assert_eq!(m[2].root, PathBuf::from("/"));
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

    /// Writes `content` at `p` under the fixture root.
    pub(crate) fn mk(r: &Path, p: &str, content: &str) {
        let f = r.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, content).unwrap();
    }

    #[test]
    fn sysfs_fixture_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // vdb (254:16) with partition vdb1 (254:17) held by dm-0, and our
        // mapping dm-1 (253:1) holding vdb itself.
        mk(r, "sys/dev/block/254:16/size", "4096\n");
        mk(
            r,
            "sys/dev/block/254:16/uevent",
            "MAJOR=254\nMINOR=16\nDEVNAME=vdb\n",
        );
        mk(r, "sys/dev/block/254:16/vdb1/partition", "1\n");
        mk(r, "sys/dev/block/254:16/vdb1/dev", "254:17\n");
        std::fs::create_dir_all(r.join("sys/dev/block/254:16/holders/dm-1")).unwrap();
        std::fs::create_dir_all(r.join("sys/dev/block/254:17/holders/dm-0")).unwrap();
        mk(r, "sys/class/block/dm-0/dev", "253:0\n");
        mk(r, "sys/class/block/dm-0/dm/name", "other\n");
        mk(r, "sys/class/block/dm-1/dev", "253:1\n");
        mk(r, "sys/class/block/vdb/dev", "254:16\n");
        mk(r, "var/lib/secretfs.img", "");
        mk(
            r,
            "sys/block/loop3/loop/backing_file",
            "/var/lib/secretfs.img\n",
        );
        mk(r, "sys/block/loop3/loop/autoclear", "1\n");
        mk(r, "sys/block/loop3/dev", "7:3\n");
        mk(r, "sys/block/dm-1/dev", "253:1\n");
        mk(r, "sys/block/dm-1/dm/name", "secretfs\n");
        mk(r, "sys/block/dm-1/dm/uuid", "CRYPT-LUKS2-abcd-secretfs\n");
        std::fs::create_dir_all(r.join("sys/block/dm-1/slaves/vdb")).unwrap();
        mk(r, "sys/class/misc/device-mapper/dev", "10:236\n");
        mk(
            r,
            "sys/block/nvme0n1/device/model",
            "Amazon Elastic Block Store              \n",
        );
        mk(
            r,
            "sys/block/nvme2n1/device/model",
            "Amazon EC2 NVMe Instance Storage        \n",
        );
        mk(
            r,
            "sys/block/nvme1n1/device/model",
            "Amazon EC2 NVMe Instance Storage        \n",
        );
        assert_eq!(
            instance_store_disks(r, names::INSTANCE_STORE_MODEL),
            vec![PathBuf::from("/dev/nvme1n1"), PathBuf::from("/dev/nvme2n1")]
        );
        // --each-disk's volumes, by index (10 after 2), of this name only.
        for (dm, name) in [
            ("dm-7", "secretfs-disk10"),
            ("dm-8", "secretfs-disk2"),
            ("dm-9", "secretfs-2"),
            ("dm-10", "other-disk1"),
        ] {
            mk(r, &format!("sys/block/{dm}/dm/name"), &format!("{name}\n"));
        }
        assert_eq!(
            disk_volumes(r, "secretfs"),
            vec!["secretfs-disk2", "secretfs-disk10"]
        );
        assert!(instance_store_disks(r, "QEMU NVMe Ctrl").is_empty());
        // An empty model (an override set to "") matches nothing, never
        // every NVMe disk (the EBS root among them).
        assert!(instance_store_disks(r, "").is_empty());
        assert!(instance_store_disks(r, "  ").is_empty());
        let d = DevNo {
            major: 254,
            minor: 16,
        };
        assert_eq!(dev_path(r, d), Some(PathBuf::from("/dev/vdb")));
        let mounts = parse_mountinfo("50 1 254:17 / /data rw - xfs /dev/vdb1 rw\n");
        let dm1 = DevNo {
            major: 253,
            minor: 1,
        };
        let why = busy_reasons(r, d, Path::new("/dev/vdb"), &mounts, &[], &[dm1]);
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("/dev/vdb1 is mounted at /data"));
        assert!(why[1].contains("device-mapper device 'other'"));
        let why = busy_reasons(r, d, Path::new("/dev/vdb"), &[], &[], &[]);
        assert!(
            why.iter().any(|w| w.contains("/dev/vdb is held by dm-1")),
            "{why:?}"
        );
        // The loop device is found by the file's inode, through any path.
        let m = std::fs::metadata(r.join("var/lib/secretfs.img")).unwrap();
        let l = loop_for_inode(r, m.dev(), m.ino()).unwrap();
        assert_eq!(l.dev.path, PathBuf::from("/dev/loop3"));
        assert!(l.autoclear);
        std::fs::hard_link(
            r.join("var/lib/secretfs.img"),
            r.join("var/lib/other-name.img"),
        )
        .unwrap();
        let m2 = std::fs::metadata(r.join("var/lib/other-name.img")).unwrap();
        assert!(loop_for_inode(r, m2.dev(), m2.ino()).is_some());
        // Another file with the loop's path name, after the first went away
        // (the kernel then shows the backing path with " (deleted)").
        std::fs::remove_file(r.join("var/lib/secretfs.img")).unwrap();
        std::fs::remove_file(r.join("var/lib/other-name.img")).unwrap();
        mk(
            r,
            "sys/block/loop3/loop/backing_file",
            "/var/lib/secretfs.img (deleted)\n",
        );
        mk(r, "var/lib/secretfs.img", "new");
        let m3 = std::fs::metadata(r.join("var/lib/secretfs.img")).unwrap();
        assert!(loop_for_inode(r, m3.dev(), m3.ino()).is_none());
        // The mapping, from sysfs.
        assert_eq!(
            mapping(r, "secretfs"),
            Mapping::Open {
                devno: dm1,
                on: vec![d],
                dm_uuid: Some("CRYPT-LUKS2-abcd-secretfs".into())
            }
        );
        assert!(mapping(r, "secretfs").is_luks2());
        assert_eq!(mapping(r, "absent"), Mapping::Absent);
        std::fs::remove_dir_all(r.join("sys/class/misc")).unwrap();
        assert!(matches!(mapping(r, "absent"), Mapping::Unavailable { .. }));
    }

    #[test]
    fn mount_points_under_a_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        mk(r, "mnt/full/file", "x");
        std::fs::create_dir_all(r.join("mnt/empty")).unwrap();
        mk(r, "mnt/afile", "x");
        assert_eq!(
            mount_state(r, Path::new("/mnt/empty"), &[]),
            MountState::Dir { empty: true }
        );
        assert_eq!(
            mount_state(r, Path::new("/mnt/full"), &[]),
            MountState::Dir { empty: false }
        );
        assert_eq!(
            mount_state(r, Path::new("/mnt/afile"), &[]),
            MountState::NotADirectory
        );
        assert_eq!(
            mount_state(r, Path::new("/mnt/none"), &[]),
            MountState::Missing
        );
        let m = parse_mountinfo("50 1 253:4 / /mnt/empty rw - ext4 /dev/mapper/x rw\n");
        assert!(matches!(
            mount_state(r, Path::new("/mnt/empty"), &m),
            MountState::Mounted { .. }
        ));
    }
}
