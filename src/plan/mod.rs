//! The pure planner: observed state in, steps (or a refusal) out.
//!
//! What a device holds is first classified ([`classify`], in `content.rs`):
//!
//! | content                                                   | class              |
//! |-----------------------------------------------------------|--------------------|
//! | LUKS2 header, our token `ready`, a key slot               | ours               |
//! | LUKS2 header, our token `ready` and `ephemeral`, no slot  | ours (ephemeral)   |
//! | LUKS2 header, our token `formatting`, or no key slot      | half-made (no data)|
//! | ... `ready` with a filesystem recorded, but no key slot   | damaged (held data)|
//! | LUKS2 header, subsystem `secretfs`, no token, a key slot  | ours (legacy)      |
//! | LUKS2 header, our token unreadable (newer format)         | foreign            |
//! | a LUKS signature libcryptsetup cannot load                | damaged            |
//! | any other signature (libblkid, all probers)               | foreign            |
//! | no signature, non-zero bytes where data would be          | foreign            |
//! | no signature, zeros where looked (or a sparse file)       | blank              |
//!
//! Then `up` is planned ([`plan`], in `up.rs`):
//!
//! | observed                                   | plan                               |
//! |--------------------------------------------|------------------------------------|
//! | ours, open and mounted at DIR              | nothing ("already up")             |
//! | ours, open, not mounted                    | filesystem check, mount            |
//! | ours, closed                               | key, open, filesystem check, mount |
//! | half-made, closed                          | key, format again, open, mkfs, mount |
//! | ours (ephemeral), closed (any key mode)    | new key, format again, open, mkfs, mount (its key died with its mapping) |
//! | ours (ephemeral), open; `--ephemeral`      | as ours, open (no key needed)      |
//! | ours (ephemeral), open; a kept key         | refuse (exit 3): `down` it first   |
//! | ours (kept key), `--ephemeral`             | refuse (exit 3), even with `--force` |
//! | blank device, or a file to create          | key, format, open, mkfs, mount     |
//! | foreign                                    | refuse (exit 3); `--force`: wipe signatures, format |
//! | damaged                                    | refuse, even with `--force`        |
//! | mounted, swap, held, a partition           | refuse, even with `--force`        |
//! | DIR a system directory                     | refuse                             |
//! | DIR not empty                              | refuse unless `--mount-nonempty`   |
//! | DIR used by another mount, not a directory | refuse                             |
//! | NAME open on another device                | refuse                             |
//!
//! The filesystem check ([`filesystem`]) after the volume is open:
//!
//! | token says       | inside        | then                                  |
//! |------------------|---------------|---------------------------------------|
//! | new volume       | anything      | mkfs FS, record FS                    |
//! | no filesystem    | anything      | mkfs FS, record FS (never held data)  |
//! | FS               | FS            | nothing                               |
//! | FS               | anything else | refuse (exit 3), e2fsck/xfs_repair hint |
//! | no token (legacy)| FS            | record FS                             |
//! | no token (legacy)| no signature  | mkfs FS, record FS                    |
//! | no token (legacy)| other         | refuse (exit 3)                       |
//!
//! FS is the filesystem the token records; for a new volume, one without
//! a filesystem yet and a legacy one, `--fs` (ext4 when not given). A
//! `--fs` that differs from the recorded one is refused before anything
//! is opened ([`volume_fs`]); so is a recorded one this release does not
//! know.
//!
//! `down` is planned by [`plan_down`] (`down.rs`), `rotate` and `rewrap`
//! per member by [`rotate`]. The steps all plans are
//! made of are here. Nothing in this module touches the machine; the unit
//! tests (`tests.rs`) run every row of these tables without root.

pub mod binds;
mod content;
mod down;
pub mod each_disk;
#[cfg(test)]
mod ephemeral_tests;
pub mod rotate;
mod set;
#[cfg(test)]
mod set_tests;
mod shred;
#[cfg(test)]
mod tests;
mod up;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use self::content::{classify, filesystem, volume_fs, Class, FsTodo};
pub use self::down::{below, plan_down, DownMember, DownObserved, Under};
pub use self::set::{lone_volume, plan_set, CHUNK};
pub use self::shred::{plan_shred, plan_shred_closed, Holds, ShredPlan, ShredTarget};
pub use self::up::{plan, sector_size_for, PlanInput, MIN_SIZE};
use crate::names;
use crate::parse::MountOptions;
use crate::settings::{Filesystem, PbkdfChoice};

/// The block device a step works on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dev {
    /// A device that exists now.
    Path { path: PathBuf },
    /// The loop device an earlier step of this plan attaches `file` to.
    Attached { file: PathBuf },
}

impl fmt::Display for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dev::Path { path } => write!(f, "{}", path.display()),
            Dev::Attached { file } => write!(f, "the loop device of {}", file.display()),
        }
    }
}

/// How the filesystem step decides, once the volume is open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FsRecord {
    /// A volume formatted in this run.
    New,
    /// Our token, with the filesystem it records (if any).
    Token { filesystem: Option<String> },
    /// A volume made before tokens.
    Legacy,
}

/// The parameters of a new header, except the KDF, which depends on the
/// key (resolved by the executor from `pbkdf`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewHeader {
    pub label: String,
    pub sector_size: u32,
    pub pbkdf: PbkdfChoice,
    pub no_workqueues: bool,
    pub discard: bool,
    /// Swap space: the token says so (`secretfs swap`).
    pub swap: bool,
    /// Its index among a node's volumes of one disk each (`--each-disk`).
    pub disk_index: Option<u32>,
}

/// A member of a new set: its disk and index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewMember {
    pub dev: Dev,
    pub member: u32,
    /// Over a half-made header of ours.
    pub again: bool,
}

/// A member of a set to open, and the name of its mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberToOpen {
    pub dev: Dev,
    pub name: String,
}

/// The stripe under a set's filesystem, for mkfs's alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Geometry {
    pub chunk: u64,
    pub members: u32,
}

/// One step, carrying everything it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Create the sparse backing file (mode 0600).
    CreateFile { path: PathBuf, size: u64 },
    /// Attach the file to a free loop device (autoclear).
    AttachLoop { file: PathBuf },
    /// `--force`: erase every signature libblkid finds, start and end.
    WipeSignatures { dev: Dev, found: String },
    /// Write a new LUKS2 header (`again`: over a half-made one of ours).
    Format {
        dev: Dev,
        header: NewHeader,
        again: bool,
    },
    /// Open the LUKS2 volume as /dev/mapper/NAME.
    Open {
        dev: Dev,
        name: String,
        discard: bool,
    },
    /// Overwrite the new volume with zeros (`--wipe`).
    Wipe { mapper: PathBuf },
    /// Make `fs` inside the volume if [`filesystem`] says so (aligned to
    /// the stripe of a set), and record it in the token on every dev.
    MakeFilesystem {
        mapper: PathBuf,
        devs: Vec<Dev>,
        record: FsRecord,
        fs: Filesystem,
        stripe: Option<Geometry>,
    },
    /// Make swap space inside the volume (mkswap) and record it in the
    /// token of `dev`.
    MakeSwap { mapper: PathBuf, dev: Dev },
    /// Enable the swap space of /dev/mapper/NAME (swapon(2)).
    SwapOn {
        mapper: PathBuf,
        priority: Option<u16>,
        discard: bool,
    },
    /// Disable it (swapoff(2)).
    SwapOff { mapper: PathBuf },
    /// Write a new LUKS2 header on every member of a new set, in
    /// parallel; each member's token stays `formatting`.
    FormatMembers {
        members: Vec<NewMember>,
        header: NewHeader,
        set: String,
        chunk: u64,
    },
    /// Mark every member `ready`: the set is complete.
    MarkReady { devs: Vec<Dev> },
    /// Open the members of a set that are not open yet, each as
    /// /dev/mapper/NAME (in a process each where their key slots' KDF
    /// costs, [`crate::exec`]).
    OpenMembers {
        members: Vec<MemberToOpen>,
        discard: bool,
    },
    /// Create the stripe /dev/mapper/NAME over the open members, in
    /// member order.
    CreateStripe {
        name: String,
        members: Vec<PathBuf>,
        set: String,
        chunk: u64,
    },
    /// Remove the stripe /dev/mapper/NAME.
    RemoveStripe { name: String },
    /// Create the mount point directory.
    CreateMountPoint { dir: PathBuf },
    /// Mount the volume's filesystem.
    Mount {
        mapper: PathBuf,
        dir: PathBuf,
        fs: Filesystem,
        options: MountOptions,
    },
    /// Unmount a mount of the volume.
    Unmount { dir: PathBuf },
    /// Close /dev/mapper/NAME.
    Close { name: String },
    /// Detach a loop device secretfs attached.
    Detach { dev: PathBuf, file: PathBuf },
    /// Crypto-shred: destroy every key slot and zero both LUKS2 header
    /// copies of `target`, then make it read as blank (the zero check's
    /// windows zeroed; a `file`'s blocks punched out) so the next `up`
    /// makes a new volume there. Irreversible.
    Shred { target: PathBuf, file: bool },
}

impl Step {
    /// The step's name in JSON, logs and fault points.
    pub fn name(&self) -> &'static str {
        match self {
            Step::CreateFile { .. } => "create_file",
            Step::AttachLoop { .. } => "attach_loop",
            Step::WipeSignatures { .. } => "wipe_signatures",
            Step::Format { .. } => "format",
            Step::Open { .. } => "open",
            Step::Wipe { .. } => "wipe",
            Step::MakeFilesystem { .. } => "make_filesystem",
            Step::CreateMountPoint { .. } => "create_mount_point",
            Step::Mount { .. } => "mount",
            Step::Unmount { .. } => "unmount",
            Step::Close { .. } => "close",
            Step::Detach { .. } => "detach",
            Step::MakeSwap { .. } => "make_swap",
            Step::SwapOn { .. } => "swap_on",
            Step::SwapOff { .. } => "swap_off",
            Step::FormatMembers { .. } => "format_members",
            Step::MarkReady { .. } => "mark_ready",
            Step::OpenMembers { .. } => "open_members",
            Step::CreateStripe { .. } => "create_stripe",
            Step::RemoveStripe { .. } => "remove_stripe",
            Step::Shred { .. } => "shred",
        }
    }

    /// Whether the step needs the passphrase.
    pub fn needs_key(&self) -> bool {
        matches!(
            self,
            Step::Format { .. }
                | Step::FormatMembers { .. }
                | Step::Open { .. }
                | Step::OpenMembers { .. }
        )
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateFile { path, size } => {
                write!(f, "create {} ({} MiB, sparse)", path.display(), size >> 20)
            }
            Step::AttachLoop { file } => write!(f, "attach {} to a loop device", file.display()),
            Step::WipeSignatures { dev, found } => write!(f, "erase {found} on {dev}"),
            Step::Format { dev, again, .. } => write!(
                f,
                "format LUKS2 on {dev}{}",
                if *again {
                    " again (half-made, no data)"
                } else {
                    ""
                }
            ),
            Step::Open { dev, name, .. } => {
                write!(f, "open {dev} as {}", names::mapper_path(name).display())
            }
            Step::Wipe { mapper } => write!(f, "wipe {} with zeros", mapper.display()),
            Step::MakeFilesystem { mapper, fs, .. } => {
                write!(f, "make {fs} on {}", mapper.display())
            }
            Step::CreateMountPoint { dir } => write!(f, "create {}", dir.display()),
            Step::Mount { mapper, dir, .. } => {
                write!(f, "mount {} at {}", mapper.display(), dir.display())
            }
            Step::Unmount { dir } => write!(f, "unmount {}", dir.display()),
            Step::MakeSwap { mapper, .. } => write!(f, "make swap space on {}", mapper.display()),
            Step::SwapOn {
                mapper, priority, ..
            } => match priority {
                Some(p) => write!(f, "enable swap on {} at priority {p}", mapper.display()),
                None => write!(f, "enable swap on {}", mapper.display()),
            },
            Step::SwapOff { mapper } => write!(f, "disable swap on {}", mapper.display()),
            Step::Close { name } => write!(f, "close {}", names::mapper_path(name).display()),
            Step::Detach { dev, file } => {
                write!(f, "detach {} ({})", dev.display(), file.display())
            }
            Step::FormatMembers { members, set, .. } => {
                write!(
                    f,
                    "format LUKS2 on {} members of set {set}: ",
                    members.len()
                )?;
                let devs: Vec<String> = members.iter().map(|m| m.dev.to_string()).collect();
                f.write_str(&devs.join(", "))
            }
            Step::MarkReady { devs } => write!(f, "mark {} members ready", devs.len()),
            Step::OpenMembers { members, .. } => {
                write!(f, "open {} members: ", members.len())?;
                let each: Vec<String> = members
                    .iter()
                    .map(|m| format!("{} as {}", m.dev, names::mapper_path(&m.name).display()))
                    .collect();
                f.write_str(&each.join(", "))
            }
            Step::CreateStripe {
                name,
                members,
                chunk,
                ..
            } => write!(
                f,
                "stripe {} over {} members ({} KiB chunks)",
                names::mapper_path(name).display(),
                members.len(),
                chunk >> 10
            ),
            Step::RemoveStripe { name } => {
                write!(
                    f,
                    "remove the stripe {}",
                    names::mapper_path(name).display()
                )
            }
            Step::Shred { target, .. } => write!(
                f,
                "destroy the key slots and headers of {}",
                target.display()
            ),
        }
    }
}

/// Whether a step is to be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Todo {
    /// The machine already shows it done.
    AlreadyDone,
    /// To do.
    WillDo,
    /// Decided when it is reached (the filesystem inside a volume that
    /// is not open yet cannot be seen).
    IfNeeded,
}

/// A planned step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    #[serde(flatten)]
    pub step: Step,
    pub todo: Todo,
}

/// A plan: its steps in order, and what the operator should know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Planned>,
    /// A new LUKS2 header will be written.
    pub first_format: bool,
    /// What `--force` destroys, if it was needed.
    pub forced: Option<String>,
    /// Warnings worth a log line (not refusals).
    pub notes: Vec<String>,
}

impl Plan {
    /// Steps still to do (or to decide).
    pub fn pending(&self) -> impl Iterator<Item = &Step> + '_ {
        self.steps
            .iter()
            .filter(|p| p.todo != Todo::AlreadyDone)
            .map(|p| &p.step)
    }
    /// Whether any step needs the passphrase.
    pub fn needs_key(&self) -> bool {
        self.pending().any(Step::needs_key)
    }
    /// The filesystem a pending step may make.
    pub fn may_make(&self) -> Option<Filesystem> {
        self.pending().find_map(|s| match s {
            Step::MakeFilesystem { fs, .. } => Some(*fs),
            _ => None,
        })
    }
    /// Whether nothing is left to do.
    pub fn is_noop(&self) -> bool {
        self.pending().next().is_none()
    }
}

/// Why a command will not proceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The target is in use or holds something not ours (exit 3).
    Refused(String),
    /// The settings do not fit the machine (exit 2).
    Usage(String),
}

impl Refusal {
    /// As the error `main` maps to an exit code.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Refusal::Refused(m) => crate::error::Failure::Refused(m).into(),
            Refusal::Usage(m) => crate::error::Failure::Usage(m).into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Refused(m) | Refusal::Usage(m) => f.write_str(m),
        }
    }
}

pub(crate) fn refuse<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Refused(m.into()))
}

pub(crate) fn bad<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Usage(m.into()))
}
