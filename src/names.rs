//! Every name secretfs gives to something on the machine, defined once.

/// Default device-mapper name: the volume appears as `/dev/mapper/secretfs`.
pub const DEFAULT_NAME: &str = "secretfs";
/// Default mount point.
pub const DEFAULT_MOUNT: &str = "/mnt/secretfs";
/// Default mount options.
pub const DEFAULT_MOUNT_OPTIONS: &str = "nodev,nosuid,noatime";
/// The LUKS2 subsystem label that marks a header as made by secretfs. The
/// LUKS2 label carries the volume name.
pub const LUKS_SUBSYSTEM: &str = "secretfs";
/// The ext4 label of the inner filesystem.
pub const FS_LABEL: &str = "secretfs";
/// Default configuration file, read when it exists and `--config` is absent.
pub const DEFAULT_CONFIG: &str = "/etc/secretfs/secretfs.toml";
/// Where device-mapper nodes live.
pub const MAPPER_DIR: &str = "/dev/mapper";

/// `/dev/mapper/NAME`.
pub fn mapper_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(MAPPER_DIR).join(name)
}

/// The device-mapper UUID prefix libcryptsetup gives LUKS2 mappings.
pub const DM_UUID_PREFIX_LUKS2: &str = "CRYPT-LUKS2-";
