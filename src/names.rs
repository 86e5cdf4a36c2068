//! Every name secretfs gives to something on the machine, defined once.

use std::path::{Path, PathBuf};

/// Default device-mapper name: the volume appears as `/dev/mapper/secretfs`.
pub const DEFAULT_NAME: &str = "secretfs";
/// Default mount point.
pub const DEFAULT_MOUNT: &str = "/mnt/secretfs";
/// Mount options every mount gets unless the operator says `dev`/`suid`.
pub const ALWAYS_MOUNT_OPTIONS: &[&str] = &["nodev", "nosuid"];
/// Default mount options (added to [`ALWAYS_MOUNT_OPTIONS`], as every
/// `--mount-options` value is).
pub const DEFAULT_MOUNT_OPTIONS: &str = "noatime";
/// The LUKS2 subsystem label that marks a header as made by secretfs (for
/// humans and `blkid`; the token below is what secretfs decides by). The
/// LUKS2 label carries the volume name.
pub const LUKS_SUBSYSTEM: &str = "secretfs";
/// The LUKS2 token type secretfs keeps its record of the volume in.
pub const TOKEN_TYPE: &str = "secretfs";
/// The label of the inner filesystem (ext4 or XFS: at most 12 bytes).
pub const FS_LABEL: &str = "secretfs";
/// Default device-mapper name of `secretfs swap`.
pub const DEFAULT_SWAP_NAME: &str = "secretfs-swap";
/// The libblkid type of swap space (what `mkswap` writes).
pub const SWAP_TYPE: &str = "swap";
/// `secretfs --version`: the crate version and the commit it was built
/// from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SECRETFS_COMMIT"),
    ")"
);
/// Default configuration file, read when it exists and `--config` is absent.
pub const DEFAULT_CONFIG: &str = "/etc/secretfs/secretfs.toml";
/// Where device-mapper nodes live.
pub const MAPPER_DIR: &str = "/dev/mapper";
/// Where the per-volume run locks live.
pub const LOCK_DIR: &str = "/run/secretfs";
/// The device-mapper UUID prefix libcryptsetup gives LUKS2 mappings.
pub const DM_UUID_PREFIX_LUKS2: &str = "CRYPT-LUKS2-";
/// The device-mapper UUID prefix of a set's stripe (followed by the set
/// id).
pub const DM_UUID_PREFIX_SET: &str = "SECRETFS-SET-";
/// The controller model that marks EC2 instance-store NVMe disks.
pub const INSTANCE_STORE_MODEL: &str = "Amazon EC2 NVMe Instance Storage";

/// Environment variable: the log filter (`info`, `debug`, ...).
pub const ENV_LOG: &str = "SECRETFS_LOG";
/// Environment variable that replaces the instance-store model string
/// `--disk auto` looks for. A test seam: emulated NVMe controllers cannot
/// carry Amazon's model name.
pub const ENV_MODEL_OVERRIDE: &str = "SECRETFS_INSTANCE_STORE_MODEL";
/// Environment variable of the fault-injection build (`POINT:ACTION`).
pub const ENV_FAULT: &str = "SECRETFS_FAULT";
/// The hidden subcommand of a child that formats or opens one member of a set
/// ([`crate::member`]).
pub const MEMBER_COMMAND: &str = "member";

/// `/dev/mapper/NAME`.
pub fn mapper_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

/// The name of the volume of disk `n` under `up --each-disk`:
/// `NAME-diskN` (never a set member's `NAME-i`).
pub fn disk_volume_name(name: &str, n: u32) -> String {
    format!("{name}-disk{n}")
}

/// The index N of `mapping` when it is `NAME-diskN`.
pub fn disk_index_of(name: &str, mapping: &str) -> Option<u32> {
    let n = mapping.strip_prefix(name)?.strip_prefix("-disk")?;
    n.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| n.parse().ok())
        .flatten()
}

/// The mapping name of member `i` of the set `name`: `NAME-i` (the set's
/// stripe is `NAME`).
pub fn member_name(name: &str, i: u32) -> String {
    format!("{name}-{i}")
}

/// `/run/secretfs/NAME.lock`.
pub fn lock_path(name: &str) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("{name}.lock"))
}

/// `device-KEY.lock`: the name, in [`LOCK_DIR`], of the lock of the disk
/// or backing file `key` names.
pub fn device_lock_name(key: &str) -> String {
    format!("device-{key}.lock")
}

/// `path` seen under `root` (`/dev/vdb` under `/tmp/fixture` is
/// `/tmp/fixture/dev/vdb`; under `/` it is itself).
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Directories a volume is never mounted on: mounting there would hide
/// the system (`/etc`, `/usr`, ...). `/mnt` and `/media` are not among them:
/// they exist for mounts (cloud-init mounts the first instance-store disk
/// at `/mnt`).
pub const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/tmp",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_volume_name_gives_its_index() {
        assert_eq!(disk_volume_name("secretfs", 3), "secretfs-disk3");
        for (mapping, want) in [
            ("secretfs-disk3", Some(3)),
            ("secretfs-disk12", Some(12)),
            ("secretfs-3", None),
            ("secretfs-disk", None),
            ("secretfs-disk+3", None),
            ("secretfs-disk3x", None),
            ("other-disk3", None),
        ] {
            assert_eq!(disk_index_of("secretfs", mapping), want, "{mapping}");
        }
    }

    #[test]
    fn paths_under_a_root() {
        assert_eq!(
            under(Path::new("/"), Path::new("/dev/vdb")),
            Path::new("/dev/vdb")
        );
        assert_eq!(
            under(Path::new("/tmp/f"), Path::new("/dev/vdb")),
            Path::new("/tmp/f/dev/vdb")
        );
        assert_eq!(lock_path("a"), Path::new("/run/secretfs/a.lock"));
        assert_eq!(mapper_path("a"), Path::new("/dev/mapper/a"));
    }
}
