//! The resolved settings of each command, as plain types: what the
//! planner, the executor and the key code work from. [`crate::config`]
//! builds them from the flags and the config file; nothing else sees the
//! command line.

use std::path::{Path, PathBuf};

use crate::keys::aws::AwsOptions;
use crate::parse::{BlobLocation, MountOptions};

/// Where the passphrase comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// A KMS ciphertext blob in S3 or a file.
    Wrapped(BlobLocation),
    /// A plaintext passphrase file, or `-` for stdin.
    PassphraseFile(PathBuf),
    /// A data key per volume in its header, wrapped by this KMS key
    /// (`--kms-key`), bound to the instance with `bind_instance`.
    DataKey {
        kms_key: String,
        bind_instance: bool,
    },
    /// A random key per volume, only in memory; the volume is made anew
    /// every boot (`--ephemeral`).
    Ephemeral,
    /// Nothing given: prompt on the terminal if there is one.
    Prompt,
}

/// What to put the volume on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A raw block device (`auto` until [`Target::Auto`] is resolved).
    Disk(PathBuf),
    /// Several raw block devices: one volume striped over all of them.
    Disks(Vec<PathBuf>),
    /// Every instance-store NVMe disk, resolved by `up` to `Disk` or
    /// `Disks`.
    Auto,
    /// A loop-backed file; `size` is needed only to create it.
    File { path: PathBuf, size: Option<u64> },
}

impl Target {
    /// The path the operator named (the first disk of several).
    pub fn path(&self) -> &Path {
        match self {
            Target::Disk(p) | Target::File { path: p, .. } => p,
            Target::Disks(v) => v.first().map_or(Path::new(""), |p| p.as_path()),
            Target::Auto => Path::new(AUTO),
        }
    }

    /// Every path it names: each disk of several; none for `Auto`.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Target::Disk(p) | Target::File { path: p, .. } => vec![p],
            Target::Disks(v) => v.iter().map(PathBuf::as_path).collect(),
            Target::Auto => Vec::new(),
        }
    }
}

/// The `--disk` value that asks for every instance-store disk.
pub const AUTO: &str = "auto";

/// What `--disk auto` does on an instance without instance store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoDisks {
    /// Fail with exit 5.
    Error,
    /// Exit 0: nothing to do.
    Ok,
}

/// The key-slot PBKDF asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PbkdfChoice {
    /// PBKDF2 for a KMS key of high entropy, argon2id for a typed one.
    Auto,
    Pbkdf2,
    Argon2id,
}

/// The filesystem `up` makes inside a new volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
    Xfs,
}

impl Filesystem {
    /// The name mkfs, mount(2), libblkid and the token use.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        }
    }

    /// The filesystem a token's or libblkid's name stands for.
    pub fn from_name(name: &str) -> Option<Filesystem> {
        [Filesystem::Ext4, Filesystem::Xfs]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a volume holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// A filesystem, mounted (`up`): `fs` for a new volume (ext4 when
    /// `None`); an existing volume keeps the one its token records, and
    /// an `fs` asked for explicitly must match it.
    Filesystem { fs: Option<Filesystem> },
    /// Swap space, enabled at `priority` (the kernel's default when
    /// `None`): `secretfs swap`.
    Swap { priority: Option<u16> },
}

/// The settings of `secretfs up`.
#[derive(Clone, Debug)]
pub struct Up {
    pub key: KeySpec,
    pub aws: AwsOptions,
    pub target: Target,
    /// `--disk auto` with no instance-store disk.
    pub no_disks: NoDisks,
    pub name: String,
    pub mount: PathBuf,
    pub mount_options: MountOptions,
    /// Format over foreign content (after wiping its signatures).
    pub force: bool,
    /// Mount over a non-empty directory.
    pub mount_nonempty: bool,
    pub wipe: bool,
    pub discard: bool,
    pub pbkdf: PbkdfChoice,
    /// A filesystem (`up`) or swap (`swap`).
    pub inside: Use,
    /// One volume per disk of `target` (`--each-disk`), not one striped
    /// over them.
    pub each_disk: bool,
    /// Set by `--each-disk` for each of its volumes: the disk's index.
    pub disk_index: Option<u32>,
    pub dry_run: bool,
    pub json: bool,
}

/// The settings of `down` and `status`: which volume.
#[derive(Clone, Debug)]
pub struct Volume {
    pub name: String,
    /// `down --mount DIR`: the mount point the operator expects.
    pub mount: Option<PathBuf>,
    pub json: bool,
    /// The config says `each-disk = true` and no `--name` was given:
    /// every `NAME-diskN`.
    pub each_disk: bool,
}
