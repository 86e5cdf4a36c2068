//! The pure planner: observed state in, steps (or a refusal) out.
//!
//! What a device holds is first classified ([`classify`]):
//!
//! | content                                                   | class              |
//! |-----------------------------------------------------------|--------------------|
//! | LUKS2 header, our token `ready`, a key slot               | ours               |
//! | LUKS2 header, our token `formatting`, or no key slot      | half-made (no data)|
//! | LUKS2 header, subsystem `secretfs`, no token, a key slot  | ours (legacy)      |
//! | LUKS2 header, our token unreadable (newer format)         | foreign            |
//! | a LUKS signature libcryptsetup cannot load                | damaged            |
//! | any other signature (libblkid, all probers)               | foreign            |
//! | no signature, non-zero bytes where data would be          | foreign            |
//! | no signature, zeros where looked (or a sparse file)       | blank              |
//!
//! Then `up` is planned:
//!
//! | observed                                   | plan                               |
//! |--------------------------------------------|------------------------------------|
//! | ours, open and mounted at DIR              | nothing ("already up")             |
//! | ours, open, not mounted                    | filesystem check, mount            |
//! | ours, closed                               | key, open, filesystem check, mount |
//! | half-made, closed                          | key, format again, open, mkfs, mount |
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
//! | new volume       | anything      | mkfs, record ext4                     |
//! | no filesystem    | anything      | mkfs, record ext4 (never held data)   |
//! | ext4             | ext4          | nothing                               |
//! | ext4             | anything else | refuse (exit 3), e2fsck hint          |
//! | no token (legacy)| ext4          | record ext4                           |
//! | no token (legacy)| no signature  | mkfs, record ext4                     |
//! | no token (legacy)| other         | refuse (exit 3)                       |
//!
//! `down` is planned by [`plan_down`]. Nothing here touches the machine;
//! the unit tests below run every row without root.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::luks::header::{Header, TokenFound};
use crate::luks::token::TokenState;
use crate::names;
use crate::observe::{
    BlockDev, Content, Data, LoopState, Mapping, MountState, Observed, Signature, TargetState,
};
use crate::parse::MountOptions;
use crate::settings::{PbkdfChoice, Target};

/// Smallest volume: the LUKS2 header (16 MiB) plus a small ext4.
pub const MIN_SIZE: u64 = 32 << 20;

/// What the planner needs from the settings.
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub target: Target,
    pub name: String,
    pub mount: PathBuf,
    pub mount_options: MountOptions,
    pub force: bool,
    pub mount_nonempty: bool,
    pub wipe: bool,
    pub discard: bool,
    pub pbkdf: PbkdfChoice,
    /// The kernel stores dm-crypt workqueue flags (5.9 and later).
    pub workqueue_flags: bool,
}

impl PlanInput {
    /// The planner's part of `up`'s settings.
    pub fn from_settings(s: &crate::settings::Up, workqueue_flags: bool) -> PlanInput {
        PlanInput {
            target: s.target.clone(),
            name: s.name.clone(),
            mount: s.mount.clone(),
            mount_options: s.mount_options.clone(),
            force: s.force,
            mount_nonempty: s.mount_nonempty,
            wipe: s.wipe,
            discard: s.discard,
            pbkdf: s.pbkdf,
            workqueue_flags,
        }
    }
}

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
    /// Make ext4 inside the volume if [`filesystem`] says so, and record
    /// it in the token on `dev`.
    MakeFilesystem {
        mapper: PathBuf,
        dev: Dev,
        record: FsRecord,
    },
    /// Create the mount point directory.
    CreateMountPoint { dir: PathBuf },
    /// Mount the volume.
    Mount {
        mapper: PathBuf,
        dir: PathBuf,
        options: MountOptions,
    },
    /// Unmount a mount of the volume.
    Unmount { dir: PathBuf },
    /// Close /dev/mapper/NAME.
    Close { name: String },
    /// Detach a loop device secretfs attached.
    Detach { dev: PathBuf, file: PathBuf },
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
        }
    }

    /// Whether the step needs the passphrase.
    pub fn needs_key(&self) -> bool {
        matches!(self, Step::Format { .. } | Step::Open { .. })
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
            Step::MakeFilesystem { mapper, .. } => write!(f, "make ext4 on {}", mapper.display()),
            Step::CreateMountPoint { dir } => write!(f, "create {}", dir.display()),
            Step::Mount { mapper, dir, .. } => {
                write!(f, "mount {} at {}", mapper.display(), dir.display())
            }
            Step::Unmount { dir } => write!(f, "unmount {}", dir.display()),
            Step::Close { name } => write!(f, "close {}", names::mapper_path(name).display()),
            Step::Detach { dev, file } => {
                write!(f, "detach {} ({})", dev.display(), file.display())
            }
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

fn refuse<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Refused(m.into()))
}

fn bad<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Usage(m.into()))
}

/// What a device holds, as far as `up` is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Zeros where data would be, no signature.
    Blank,
    /// Our volume; `legacy` when it was made before tokens.
    Ours { record: FsRecord },
    /// Our header, but the making stopped before it could hold data.
    HalfMade { why: String },
    /// Something else, described.
    Foreign(String),
    /// A LUKS header that cannot be loaded: maybe ours, maybe data.
    Damaged(String),
}

fn subsystem_is_ours(sigs: &[Signature]) -> bool {
    sigs.iter().any(|s| {
        matches!(s, Signature::Luks { version: 2, subsystem: Some(x), .. } if x == names::LUKS_SUBSYSTEM)
    })
}

/// Classifies a device's content (the first table above).
pub fn classify(c: &Content) -> Class {
    match &c.header {
        Some(Header {
            token: TokenFound::Present { token, .. },
            active_keyslots,
            ..
        }) => {
            if token.state == TokenState::Formatting {
                Class::HalfMade {
                    why: "its token says the format did not finish".into(),
                }
            } else if *active_keyslots == 0 {
                Class::HalfMade {
                    why: "it has no key slot".into(),
                }
            } else {
                Class::Ours {
                    record: FsRecord::Token {
                        filesystem: token.filesystem.clone(),
                    },
                }
            }
        }
        Some(Header {
            token: TokenFound::Unreadable { reason },
            ..
        }) => Class::Foreign(format!("a LUKS2 header with a secretfs token: {reason}")),
        Some(Header {
            token: TokenFound::Absent,
            active_keyslots,
            ..
        }) if subsystem_is_ours(&c.signatures) => {
            if *active_keyslots == 0 {
                Class::HalfMade {
                    why: "it has no key slot".into(),
                }
            } else {
                Class::Ours {
                    record: FsRecord::Legacy,
                }
            }
        }
        Some(_) => Class::Foreign(if c.signatures.is_empty() {
            "a LUKS2 header (not made by secretfs)".into()
        } else {
            c.describe()
        }),
        None => {
            if c.signatures
                .iter()
                .any(|s| matches!(s, Signature::Luks { version: 2, .. }))
            {
                return Class::Damaged(format!(
                    "{}, but libcryptsetup cannot load it",
                    c.describe()
                ));
            }
            if !c.signatures.is_empty() {
                return Class::Foreign(c.describe());
            }
            match c.data {
                Data::Zero { .. } => Class::Blank,
                Data::NonZero { .. } => Class::Foreign(c.describe()),
                Data::NotChecked => Class::Foreign("content that was not checked".into()),
            }
        }
    }
}

/// What the filesystem step does, once the volume is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsTodo {
    /// Make ext4, then record it in the token.
    Make,
    /// ext4 is there; `record` it in the token if the token does not say so.
    Have { record: bool },
}

/// Decides the filesystem step (the third table above).
pub fn filesystem(
    record: &FsRecord,
    inner: &[Signature],
    mapper: &Path,
) -> Result<FsTodo, Refusal> {
    let ext4 = inner.iter().any(|s| s.fstype() == Some("ext4")) && inner.len() == 1;
    let what = if inner.is_empty() {
        "no filesystem that libblkid recognises".to_string()
    } else {
        inner
            .iter()
            .map(Signature::describe)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    match record {
        FsRecord::New | FsRecord::Token { filesystem: None } => Ok(FsTodo::Make),
        FsRecord::Token {
            filesystem: Some(fs),
        } => {
            if ext4 && fs == "ext4" {
                Ok(FsTodo::Have { record: false })
            } else {
                refuse(format!(
                    "{} holds {what}, but secretfs made {fs} on it: the filesystem is damaged; \
                     secretfs will not make a new one over the data. Repair it from a backup \
                     superblock with `e2fsck -b 32768 {m}` (`mke2fs -n {m}` lists them), or recreate the volume",
                    mapper.display(),
                    m = mapper.display()
                ))
            }
        }
        FsRecord::Legacy => {
            if ext4 {
                Ok(FsTodo::Have { record: true })
            } else if inner.is_empty() {
                Ok(FsTodo::Make)
            } else {
                refuse(format!(
                    "{} holds {what}, not ext4: secretfs will not replace it",
                    mapper.display()
                ))
            }
        }
    }
}

/// Sector size for a new volume: 4096 unless the size forbids it.
pub fn sector_size_for(size: u64, logical_block: u64) -> u32 {
    if size.is_multiple_of(4096) && logical_block <= 4096 {
        4096
    } else {
        512
    }
}

/// Maps observed state to a plan for `up`.
pub fn plan(input: &PlanInput, obs: &Observed) -> Result<Plan, Refusal> {
    let path = input.target.path().display().to_string();
    let name = &input.name;
    let mapper = names::mapper_path(name);
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut push = |step, todo| steps.push(Planned { step, todo });
    let dev = &obs.device;

    // 1. The target itself: the device to put the volume on, and its size
    //    and logical block size (for the sector size of a new header).
    let (vol_dev, size, logical_block) = match (&input.target, &dev.target) {
        (Target::Disk(_), TargetState::Missing { .. }) => {
            return bad(format!(
                "disk {path} does not exist: check the name (lsblk lists disks)"
            ))
        }
        (
            Target::File { size, path: file },
            TargetState::Missing {
                parent_exists,
                free_bytes,
            },
        ) => {
            if !parent_exists {
                return bad(format!(
                    "the directory of {path} does not exist: create it, or choose another --file"
                ));
            }
            let Some(size) = size else {
                return bad(format!("{path} does not exist: give --size to create it"));
            };
            if *size < MIN_SIZE {
                return bad(format!(
                    "--size {} MiB is too small: a LUKS2 header and ext4 need at least {} MiB",
                    size >> 20,
                    MIN_SIZE >> 20
                ));
            }
            if free_bytes < size {
                return refuse(format!(
                    "the filesystem of {path} has {} MiB free, less than --size {} MiB: free space or choose another place",
                    free_bytes >> 20,
                    size >> 20
                ));
            }
            let size = crate::device::round_size(*size);
            push(
                Step::CreateFile {
                    path: file.clone(),
                    size,
                },
                Todo::WillDo,
            );
            push(Step::AttachLoop { file: file.clone() }, Todo::WillDo);
            (Dev::Attached { file: file.clone() }, size, 512)
        }
        (_, TargetState::WrongKind { what }) => {
            return bad(format!("{path} is {what}"));
        }
        (
            Target::Disk(_),
            TargetState::Block {
                partition_of: Some(disk),
                ..
            },
        ) => {
            return refuse(format!(
                "{path} is a partition of {disk}; secretfs takes a whole disk (instance store comes unpartitioned)"
            ));
        }
        (
            Target::Disk(p),
            TargetState::Block {
                size,
                logical_block,
                ..
            },
        ) => (Dev::Path { path: p.clone() }, *size, *logical_block),
        (Target::File { path: file, .. }, TargetState::File { size, loop_dev, .. }) => {
            match loop_dev {
                Some(l) => {
                    push(Step::AttachLoop { file: file.clone() }, Todo::AlreadyDone);
                    (
                        Dev::Path {
                            path: l.dev.path.clone(),
                        },
                        *size,
                        512,
                    )
                }
                None => {
                    push(Step::AttachLoop { file: file.clone() }, Todo::WillDo);
                    (Dev::Attached { file: file.clone() }, *size, 512)
                }
            }
        }
        (Target::File { .. }, TargetState::Block { .. })
        | (Target::Disk(_), TargetState::File { .. }) => {
            return bad(format!("{path} is not the kind of target named"));
        }
    };
    let class = match &dev.content {
        Some(c) => classify(c),
        None => Class::Blank, // a file this plan creates
    };
    let ours = matches!(class, Class::Ours { .. });
    if size < MIN_SIZE && !ours {
        return bad(format!(
            "{path} is only {size} bytes; at least {} MiB are needed",
            MIN_SIZE >> 20
        ));
    }

    // 2. The mapping name.
    let open_on_target = match &obs.mapping {
        Mapping::Absent | Mapping::Unavailable { .. } => false,
        Mapping::Open { on, .. } => {
            let target_dev = dev.block().map(|b| b.devno);
            if !obs.mapping.is_luks2() {
                return refuse(format!(
                    "{} exists and is not a LUKS2 volume: choose another --name",
                    mapper.display()
                ));
            }
            if target_dev.is_none() || on.as_slice() != [target_dev.unwrap()] {
                return refuse(format!(
                    "{} is already open on another device ({}): choose another --name, \
                     or close it with `secretfs down --name {name}`",
                    mapper.display(),
                    on.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            true
        }
    };

    // 3. Anything else using the device refuses, --force or not.
    if !dev.busy.is_empty() {
        return refuse(format!("{path} is in use: {}", dev.busy.join("; ")));
    }

    // 4. What the device holds.
    if open_on_target && !ours {
        return refuse(format!(
            "{} is open on {path}, but {path} does not hold a secretfs volume ready to open: the two disagree",
            mapper.display()
        ));
    }
    let mut forced = None;
    let (first_format, again, record) = match class {
        Class::Ours { record } => (false, false, record),
        Class::Blank => (true, false, FsRecord::New),
        Class::HalfMade { why } => {
            notes.push(format!(
                "{path} holds a secretfs header whose making stopped before it held data ({why}); formatting it again"
            ));
            (true, true, FsRecord::New)
        }
        Class::Damaged(what) => {
            return refuse(format!(
                "{path} holds {what}: inspect it with `cryptsetup luksDump {path}` \
                 (`cryptsetup repair` may restore it from the second header); secretfs will not format over it"
            ));
        }
        Class::Foreign(what) => {
            if !input.force {
                return refuse(format!(
                    "{path} holds {what}; secretfs formats only blank devices (pass --force to destroy it)"
                ));
            }
            notes.push(format!("--force: destroying {what} on {path}"));
            push(
                Step::WipeSignatures {
                    dev: vol_dev.clone(),
                    found: what.clone(),
                },
                Todo::WillDo,
            );
            forced = Some(what);
            (true, false, FsRecord::New)
        }
    };
    let header = NewHeader {
        label: name.clone(),
        sector_size: sector_size_for(size, logical_block),
        pbkdf: input.pbkdf,
        no_workqueues: input.workqueue_flags,
        discard: input.discard,
    };
    push(
        Step::Format {
            dev: vol_dev.clone(),
            header,
            again,
        },
        if first_format {
            Todo::WillDo
        } else {
            Todo::AlreadyDone
        },
    );
    push(
        Step::Open {
            dev: vol_dev.clone(),
            name: name.clone(),
            discard: input.discard,
        },
        if open_on_target {
            Todo::AlreadyDone
        } else {
            Todo::WillDo
        },
    );
    if first_format && input.wipe {
        push(
            Step::Wipe {
                mapper: mapper.clone(),
            },
            Todo::WillDo,
        );
    }

    // 5. The filesystem inside.
    let fs_todo = match (&obs.inner, open_on_target) {
        (Some(inner), true) => match filesystem(&record, inner, &mapper)? {
            FsTodo::Have { record: false } => Todo::AlreadyDone,
            _ => Todo::WillDo,
        },
        _ if first_format => Todo::WillDo,
        _ => Todo::IfNeeded,
    };
    push(
        Step::MakeFilesystem {
            mapper: mapper.clone(),
            dev: vol_dev,
            record,
        },
        fs_todo,
    );

    // 6. The mount point.
    let dir = &input.mount;
    let shown = dir.display();
    let canon = obs.mount_path.to_string_lossy();
    if names::SYSTEM_DIRS.contains(&canon.as_ref()) {
        return refuse(format!(
            "mount point {shown} is the system directory {canon}: mounting there would hide it; choose e.g. {}",
            names::DEFAULT_MOUNT
        ));
    }
    let our_devno = obs.mapping.devno().filter(|_| open_on_target);
    let mount = Step::Mount {
        mapper,
        dir: dir.clone(),
        options: input.mount_options.clone(),
    };
    let create = Step::CreateMountPoint { dir: dir.clone() };
    match &obs.mount {
        MountState::Mounted { devno, .. } if Some(*devno) == our_devno => {
            push(create, Todo::AlreadyDone);
            push(mount, Todo::AlreadyDone);
        }
        MountState::Mounted { source, fstype, .. } => {
            return refuse(format!("{shown} is already in use: {source} ({fstype}) is mounted there; choose another --mount"));
        }
        MountState::NotADirectory => {
            return refuse(format!("mount point {shown} exists and is not a directory"));
        }
        MountState::Missing => {
            push(create, Todo::WillDo);
            push(mount, Todo::WillDo);
        }
        MountState::Dir { empty } => {
            if !empty {
                if !input.mount_nonempty {
                    return refuse(format!(
                        "mount point {shown} is not empty: its files would be hidden under the volume \
                         (were they written while it was down?); move them away, or pass --mount-nonempty"
                    ));
                }
                notes.push(format!(
                    "--mount-nonempty: the files in {shown} will be hidden under the mount"
                ));
            }
            push(create, Todo::AlreadyDone);
            push(mount, Todo::WillDo);
        }
    }

    Ok(Plan {
        steps,
        first_format,
        forced,
        notes,
    })
}

/// A device a mapping sits on, for `down`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Under {
    pub dev: BlockDev,
    /// Whether it holds our volume (ready or legacy), and what it holds.
    pub ours: bool,
    pub holds: String,
    /// The loop device's state, when it is one.
    pub loop_dev: Option<LoopState>,
}

/// What `down` decides from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DownObserved {
    pub mapping: Mapping,
    /// Where the mapping is mounted, outermost last.
    pub mounted_at: Vec<PathBuf>,
    pub under: Vec<Under>,
}

/// Maps observed state to the teardown of `name`: unmount every mount,
/// close the mapping, detach the loop devices secretfs attached.
pub fn plan_down(name: &str, obs: &DownObserved) -> Result<Plan, Refusal> {
    let mapper = names::mapper_path(name);
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    match &obs.mapping {
        Mapping::Unavailable { .. } | Mapping::Absent => {
            steps.push(Planned {
                step: Step::Close { name: name.into() },
                todo: Todo::AlreadyDone,
            });
        }
        m @ Mapping::Open { .. } if !m.is_luks2() => {
            return refuse(format!(
                "{} is not a LUKS2 volume; secretfs down leaves it alone",
                mapper.display()
            ))
        }
        Mapping::Open { .. } => {
            for u in &obs.under {
                if !u.ours {
                    return refuse(format!(
                        "{} sits on {}, which holds {}; not a secretfs volume",
                        mapper.display(),
                        u.dev.path.display(),
                        u.holds
                    ));
                }
            }
            for dir in obs.mounted_at.iter().rev() {
                steps.push(Planned {
                    step: Step::Unmount { dir: dir.clone() },
                    todo: Todo::WillDo,
                });
            }
            steps.push(Planned {
                step: Step::Close { name: name.into() },
                todo: Todo::WillDo,
            });
            for u in &obs.under {
                let Some(l) = &u.loop_dev else { continue };
                if l.autoclear {
                    steps.push(Planned {
                        step: Step::Detach {
                            dev: l.dev.path.clone(),
                            file: l.file.clone(),
                        },
                        todo: Todo::WillDo,
                    });
                } else {
                    notes.push(format!(
                        "{} ({}) was not attached by secretfs; leaving it attached",
                        l.dev.path.display(),
                        l.file.display()
                    ));
                }
            }
        }
    }
    Ok(Plan {
        steps,
        first_format: false,
        forced: None,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::luks::token::Token;
    use crate::observe::{DevNo, DeviceObs};

    const VDB: DevNo = DevNo {
        major: 254,
        minor: 16,
    };
    const LOOP: DevNo = DevNo { major: 7, minor: 0 };
    const DM: DevNo = DevNo {
        major: 253,
        minor: 0,
    };
    const OTHER_DM: DevNo = DevNo {
        major: 253,
        minor: 9,
    };

    fn luks_sig(subsystem: Option<&str>) -> Signature {
        Signature::Luks {
            version: 2,
            uuid: "u".into(),
            label: Some("secretfs".into()),
            subsystem: subsystem.map(str::to_string),
        }
    }
    fn header(token: TokenFound, slots: u32) -> Content {
        Content {
            signatures: vec![luks_sig(Some("secretfs"))],
            header: Some(Header {
                uuid: "u".into(),
                token,
                active_keyslots: slots,
            }),
            data: Data::NotChecked,
        }
    }
    fn token(state: TokenState, fs: Option<&str>) -> TokenFound {
        let mut t = Token::formatting("u");
        t.state = state;
        t.filesystem = fs.map(str::to_string);
        TokenFound::Present { id: 0, token: t }
    }
    /// Our volume, ready, with ext4 recorded.
    fn ours() -> Content {
        header(token(TokenState::Ready, Some("ext4")), 1)
    }
    fn sig(fstype: &str) -> Signature {
        Signature::Content {
            fstype: fstype.into(),
            offset: None,
        }
    }
    fn with_sig(s: Signature) -> Content {
        Content {
            signatures: vec![s],
            header: None,
            data: Data::NonZero {
                offset: 0,
                bytes: 1,
                read: 1,
            },
        }
    }
    fn disk_input() -> PlanInput {
        PlanInput {
            target: Target::Disk("/dev/vdb".into()),
            name: "secretfs".into(),
            mount: "/mnt/secretfs".into(),
            mount_options: crate::parse::mount_options(names::DEFAULT_MOUNT_OPTIONS).unwrap(),
            force: false,
            mount_nonempty: false,
            wipe: false,
            discard: false,
            pbkdf: PbkdfChoice::Auto,
            workqueue_flags: true,
        }
    }
    fn file_input(size: Option<u64>) -> PlanInput {
        PlanInput {
            target: Target::File {
                path: "/var/s.img".into(),
                size,
            },
            ..disk_input()
        }
    }
    fn disk() -> TargetState {
        TargetState::Block {
            dev: BlockDev {
                path: "/dev/vdb".into(),
                devno: VDB,
            },
            size: 2 << 30,
            logical_block: 512,
            partition_of: None,
        }
    }
    fn open_on(d: DevNo) -> Mapping {
        Mapping::Open {
            devno: DM,
            on: vec![d],
            dm_uuid: Some("CRYPT-LUKS2-u-secretfs".into()),
        }
    }
    fn base(c: Content) -> Observed {
        Observed {
            device: DeviceObs {
                target: disk(),
                content: Some(c),
                busy: vec![],
            },
            mapping: Mapping::Absent,
            mount_path: "/mnt/secretfs".into(),
            mount: MountState::Missing,
            inner: None,
        }
    }
    fn mounted(o: &mut Observed) {
        o.mount = MountState::Mounted {
            devno: DM,
            fstype: "ext4".into(),
            source: "/dev/mapper/secretfs".into(),
        };
    }
    fn todo(p: &Plan, name: &str) -> Option<Todo> {
        p.steps
            .iter()
            .find(|x| x.step.name() == name)
            .map(|x| x.todo)
    }
    fn pending(p: &Plan) -> Vec<&'static str> {
        p.pending().map(Step::name).collect()
    }
    fn refused(r: Result<Plan, Refusal>) -> String {
        match r {
            Err(Refusal::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    fn usage(r: Result<Plan, Refusal>) -> String {
        match r {
            Err(Refusal::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn classification_table() {
        let nonzero = Content {
            signatures: vec![],
            header: None,
            data: Data::NonZero {
                offset: 4096,
                bytes: 1 << 20,
                read: 2 << 20,
            },
        };
        let damaged = Content {
            signatures: vec![luks_sig(Some("secretfs"))],
            header: None,
            data: Data::NonZero {
                offset: 0,
                bytes: 1,
                read: 1,
            },
        };
        type Row = (&'static str, Content, fn(&Class) -> bool);
        let rows: Vec<Row> = vec![
            ("blank", Content::blank(), |c| *c == Class::Blank),
            ("ours ready", ours(), |c| {
                matches!(
                    c,
                    Class::Ours {
                        record: FsRecord::Token {
                            filesystem: Some(_)
                        }
                    }
                )
            }),
            (
                "ours ready, no filesystem yet",
                header(token(TokenState::Ready, None), 1),
                |c| {
                    matches!(
                        c,
                        Class::Ours {
                            record: FsRecord::Token { filesystem: None }
                        }
                    )
                },
            ),
            (
                "formatting",
                header(token(TokenState::Formatting, None), 0),
                |c| matches!(c, Class::HalfMade { .. }),
            ),
            (
                "formatting with a slot (killed before ready)",
                header(token(TokenState::Formatting, None), 1),
                |c| matches!(c, Class::HalfMade { .. }),
            ),
            (
                "ready but no slot",
                header(token(TokenState::Ready, None), 0),
                |c| matches!(c, Class::HalfMade { .. }),
            ),
            ("legacy", header(TokenFound::Absent, 1), |c| {
                matches!(
                    c,
                    Class::Ours {
                        record: FsRecord::Legacy
                    }
                )
            }),
            (
                "legacy without a slot",
                header(TokenFound::Absent, 0),
                |c| matches!(c, Class::HalfMade { .. }),
            ),
            (
                "newer token",
                header(
                    TokenFound::Unreadable {
                        reason: "upgrade secretfs".into(),
                    },
                    1,
                ),
                |c| matches!(c, Class::Foreign(m) if m.contains("upgrade")),
            ),
            (
                "other LUKS2",
                Content {
                    signatures: vec![luks_sig(None)],
                    ..header(TokenFound::Absent, 1)
                },
                |c| matches!(c, Class::Foreign(m) if m.contains("not made by secretfs")),
            ),
            ("damaged", damaged, |c| matches!(c, Class::Damaged(_))),
            (
                "ext4",
                with_sig(sig("ext4")),
                |c| matches!(c, Class::Foreign(m) if m.contains("ext4")),
            ),
            (
                "non-zero data",
                nonzero,
                |c| matches!(c, Class::Foreign(m) if m.contains("non-zero data") && m.contains("offset 4096")),
            ),
        ];
        for (row, content, ok) in rows {
            let c = classify(&content);
            assert!(ok(&c), "{row}: {c:?}");
        }
    }

    #[test]
    fn filesystem_table() {
        let m = Path::new("/dev/mapper/secretfs");
        let ext4 = [sig("ext4")];
        let xfs = [sig("xfs")];
        let tok = |f: Option<&str>| FsRecord::Token {
            filesystem: f.map(str::to_string),
        };
        assert_eq!(filesystem(&FsRecord::New, &ext4, m), Ok(FsTodo::Make));
        assert_eq!(filesystem(&tok(None), &[], m), Ok(FsTodo::Make));
        assert_eq!(filesystem(&tok(None), &xfs, m), Ok(FsTodo::Make));
        assert_eq!(
            filesystem(&tok(Some("ext4")), &ext4, m),
            Ok(FsTodo::Have { record: false })
        );
        for inner in [&[][..], &xfs[..]] {
            let e = filesystem(&tok(Some("ext4")), inner, m).unwrap_err();
            assert!(
                e.to_string()
                    .contains("e2fsck -b 32768 /dev/mapper/secretfs"),
                "{e}"
            );
        }
        assert_eq!(
            filesystem(&FsRecord::Legacy, &ext4, m),
            Ok(FsTodo::Have { record: true })
        );
        assert_eq!(filesystem(&FsRecord::Legacy, &[], m), Ok(FsTodo::Make));
        assert!(filesystem(&FsRecord::Legacy, &xfs, m).is_err());
    }

    #[test]
    fn blank_disk_gets_the_whole_pipeline() {
        let p = plan(&disk_input(), &base(Content::blank())).unwrap();
        assert_eq!(
            pending(&p),
            vec![
                "format",
                "open",
                "make_filesystem",
                "create_mount_point",
                "mount"
            ]
        );
        assert!(p.first_format && p.needs_key() && p.forced.is_none());
        // The steps carry their operands.
        let Step::Format { dev, header, again } = &p.steps[0].step else {
            panic!("{p:?}")
        };
        assert_eq!(
            dev,
            &Dev::Path {
                path: "/dev/vdb".into()
            }
        );
        assert_eq!(header.sector_size, 4096);
        assert!(header.no_workqueues && !again);
        let Some(Planned {
            step: Step::Mount { options, dir, .. },
            ..
        }) = p.steps.last()
        else {
            panic!("{p:?}")
        };
        assert_eq!(dir, Path::new("/mnt/secretfs"));
        assert_eq!(options.flags, vec!["nodev", "nosuid", "noatime"]);
    }

    #[test]
    fn already_up_is_a_noop() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(vec![sig("ext4")]);
        mounted(&mut o);
        let p = plan(&disk_input(), &o).unwrap();
        assert!(p.is_noop(), "{p:?}");
        assert!(!p.needs_key());
    }

    #[test]
    fn ours_closed_reopens_without_format() {
        let mut o = base(ours());
        o.mount = MountState::Dir { empty: true };
        let p = plan(&disk_input(), &o).unwrap();
        assert_eq!(todo(&p, "format"), Some(Todo::AlreadyDone));
        assert_eq!(todo(&p, "open"), Some(Todo::WillDo));
        assert_eq!(todo(&p, "make_filesystem"), Some(Todo::IfNeeded));
        assert_eq!(todo(&p, "create_mount_point"), Some(Todo::AlreadyDone));
        assert!(p.needs_key() && !p.first_format);
    }

    #[test]
    fn half_made_headers_are_formatted_again() {
        for c in [
            header(token(TokenState::Formatting, None), 0),
            header(TokenFound::Absent, 0),
        ] {
            let p = plan(&disk_input(), &base(c)).unwrap();
            assert_eq!(todo(&p, "format"), Some(Todo::WillDo));
            assert!(matches!(p.steps[0].step, Step::Format { again: true, .. }));
            assert!(p.first_format && p.forced.is_none());
            assert_eq!(p.notes.len(), 1);
        }
    }

    #[test]
    fn open_but_unmounted_needs_no_key() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(vec![sig("ext4")]);
        let p = plan(&disk_input(), &o).unwrap();
        assert!(!p.needs_key());
        assert_eq!(pending(&p), vec!["create_mount_point", "mount"]);
    }

    #[test]
    fn crash_after_format_makes_the_filesystem() {
        let mut o = base(header(token(TokenState::Ready, None), 1));
        o.mapping = open_on(VDB);
        o.inner = Some(vec![]);
        let p = plan(&disk_input(), &o).unwrap();
        assert_eq!(todo(&p, "make_filesystem"), Some(Todo::WillDo));
    }

    #[test]
    fn a_damaged_filesystem_is_refused_not_remade() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(vec![]);
        assert!(refused(plan(&disk_input(), &o)).contains("e2fsck"));
    }

    #[test]
    fn foreign_content_is_refused_unless_forced() {
        for c in [
            with_sig(sig("ext4")),
            with_sig(sig("xfs")),
            with_sig(sig("linux_raid_member")),
            with_sig(Signature::PartitionTable {
                pttype: "gpt".into(),
                offset: Some(512),
            }),
            Content {
                signatures: vec![luks_sig(None)],
                ..header(TokenFound::Absent, 1)
            },
            Content {
                signatures: vec![],
                header: None,
                data: Data::NonZero {
                    offset: 0,
                    bytes: 1 << 20,
                    read: 1 << 20,
                },
            },
        ] {
            let m = refused(plan(&disk_input(), &base(c.clone())));
            assert!(m.contains("--force"), "{m}");
            let forced = plan(
                &PlanInput {
                    force: true,
                    ..disk_input()
                },
                &base(c),
            )
            .unwrap();
            assert!(forced.forced.is_some() && forced.first_format);
            assert_eq!(pending(&forced)[..2], ["wipe_signatures", "format"]);
        }
    }

    #[test]
    fn damaged_headers_are_refused_even_with_force() {
        let c = Content {
            signatures: vec![luks_sig(Some("secretfs"))],
            header: None,
            data: Data::NotChecked,
        };
        let m = refused(plan(
            &PlanInput {
                force: true,
                ..disk_input()
            },
            &base(c),
        ));
        assert!(m.contains("cryptsetup luksDump"), "{m}");
    }

    #[test]
    fn busy_devices_are_refused_even_with_force() {
        let mut o = base(Content::blank());
        o.device.busy = vec!["/dev/vdb is mounted at /data".into()];
        let m = refused(plan(
            &PlanInput {
                force: true,
                ..disk_input()
            },
            &o,
        ));
        assert!(m.contains("mounted at /data"), "{m}");
    }

    #[test]
    fn partitions_are_refused() {
        let mut o = base(Content::blank());
        o.device.target = TargetState::Block {
            dev: BlockDev {
                path: "/dev/vdb1".into(),
                devno: VDB,
            },
            size: 1 << 30,
            logical_block: 512,
            partition_of: Some("/dev/vdb".into()),
        };
        assert!(refused(plan(&disk_input(), &o)).contains("partition of /dev/vdb"));
    }

    #[test]
    fn mapping_name_taken_elsewhere_is_refused() {
        let mut o = base(Content::blank());
        o.mapping = open_on(OTHER_DM);
        assert!(refused(plan(&disk_input(), &o)).contains("already open on another device"));
        o.mapping = Mapping::Open {
            devno: DM,
            on: vec![VDB],
            dm_uuid: Some("LVM-xyz".into()),
        };
        assert!(refused(plan(&disk_input(), &o)).contains("not a LUKS2 volume"));
    }

    #[test]
    fn mount_point_conflicts_are_refused() {
        let mut o = base(Content::blank());
        o.mount = MountState::Mounted {
            devno: OTHER_DM,
            fstype: "xfs".into(),
            source: "/dev/md0".into(),
        };
        assert!(refused(plan(&disk_input(), &o)).contains("already in use"));
        o.mount = MountState::NotADirectory;
        assert!(refused(plan(&disk_input(), &o)).contains("not a directory"));
    }

    #[test]
    fn system_directories_are_refused() {
        for dir in ["/etc", "/usr", "/var", "/home", "/boot", "/root", "/"] {
            let mut o = base(Content::blank());
            o.mount_path = dir.into();
            o.mount = MountState::Dir { empty: false };
            let input = PlanInput {
                mount: dir.into(),
                mount_nonempty: true,
                ..disk_input()
            };
            assert!(
                refused(plan(&input, &o)).contains("system directory"),
                "{dir}"
            );
        }
        // Reached through a symlink: the resolved path decides.
        let mut o = base(Content::blank());
        o.mount_path = "/etc".into();
        let input = PlanInput {
            mount: "/mnt/link-to-etc".into(),
            ..disk_input()
        };
        assert!(refused(plan(&input, &o)).contains("system directory /etc"));
    }

    #[test]
    fn non_empty_mount_points_need_the_flag() {
        let mut o = base(Content::blank());
        o.mount = MountState::Dir { empty: false };
        assert!(refused(plan(&disk_input(), &o)).contains("--mount-nonempty"));
        let p = plan(
            &PlanInput {
                mount_nonempty: true,
                ..disk_input()
            },
            &o,
        )
        .unwrap();
        assert_eq!(p.notes.len(), 1);
        assert_eq!(todo(&p, "mount"), Some(Todo::WillDo));
    }

    #[test]
    fn new_file_is_created_and_attached() {
        let mut o = base(Content::blank());
        o.device = DeviceObs {
            target: TargetState::Missing {
                parent_exists: true,
                free_bytes: 1 << 40,
            },
            content: None,
            busy: vec![],
        };
        let p = plan(&file_input(Some(2 << 30)), &o).unwrap();
        assert_eq!(pending(&p)[..3], ["create_file", "attach_loop", "format"]);
        let Step::Format { dev, .. } = &p.steps[2].step else {
            panic!()
        };
        assert_eq!(
            dev,
            &Dev::Attached {
                file: "/var/s.img".into()
            }
        );
        assert!(usage(plan(&file_input(None), &o)).contains("give --size"));
        assert!(usage(plan(&file_input(Some(1 << 20)), &o)).contains("too small"));
        o.device.target = TargetState::Missing {
            parent_exists: false,
            free_bytes: 0,
        };
        assert!(usage(plan(&file_input(Some(2 << 30)), &o)).contains("directory"));
    }

    #[test]
    fn new_file_needs_the_space() {
        let mut o = base(Content::blank());
        o.device.target = TargetState::Missing {
            parent_exists: true,
            free_bytes: 1 << 30,
        };
        o.device.content = None;
        assert!(refused(plan(&file_input(Some(2 << 30)), &o)).contains("MiB free"));
        // An existing empty file is too small rather than new.
        o.device.target = TargetState::File {
            size: 0,
            loop_dev: None,
            free_bytes: 0,
        };
        o.device.content = Some(Content::blank());
        assert!(usage(plan(&file_input(Some(2 << 30)), &o)).contains("only 0 bytes"));
    }

    #[test]
    fn attached_file_reopens() {
        let mut o = base(ours());
        o.device.target = TargetState::File {
            size: 2 << 30,
            loop_dev: Some(LoopState {
                dev: BlockDev {
                    path: "/dev/loop0".into(),
                    devno: LOOP,
                },
                file: "/var/s.img".into(),
                autoclear: true,
            }),
            free_bytes: 0,
        };
        o.mapping = open_on(LOOP);
        o.inner = Some(vec![sig("ext4")]);
        mounted(&mut o);
        assert!(plan(&file_input(None), &o).unwrap().is_noop());
    }

    #[test]
    fn wrong_kinds_and_missing_disks_are_usage_errors() {
        let mut o = base(Content::blank());
        o.device.target = TargetState::Missing {
            parent_exists: true,
            free_bytes: 1 << 40,
        };
        assert!(usage(plan(&disk_input(), &o)).contains("does not exist"));
        o.device.target = TargetState::WrongKind {
            what: "a character device".into(),
        };
        assert!(usage(plan(&disk_input(), &o)).contains("character device"));
    }

    #[test]
    fn disagreeing_signals_refuse() {
        let mut o = base(Content::blank());
        o.mapping = open_on(VDB);
        assert!(refused(plan(&disk_input(), &o)).contains("disagree"));
    }

    #[test]
    fn step_names_match_their_json() {
        let p = plan(
            &PlanInput {
                wipe: true,
                ..file_input(Some(1 << 30))
            },
            &Observed {
                device: DeviceObs {
                    target: TargetState::Missing {
                        parent_exists: true,
                        free_bytes: 1 << 40,
                    },
                    content: None,
                    busy: vec![],
                },
                ..base(Content::blank())
            },
        )
        .unwrap();
        for s in &p.steps {
            assert_eq!(
                serde_json::to_value(&s.step).unwrap()["step"],
                s.step.name()
            );
        }
    }

    #[test]
    fn wipe_only_on_first_format() {
        let input = PlanInput {
            wipe: true,
            ..disk_input()
        };
        let p = plan(&input, &base(Content::blank())).unwrap();
        assert_eq!(todo(&p, "wipe"), Some(Todo::WillDo));
        let p = plan(&input, &base(ours())).unwrap();
        assert_eq!(todo(&p, "wipe"), None);
    }

    fn under(ours: bool, autoclear: Option<bool>) -> Under {
        Under {
            dev: BlockDev {
                path: "/dev/loop0".into(),
                devno: LOOP,
            },
            ours,
            holds: "an ext4 signature".into(),
            loop_dev: autoclear.map(|a| LoopState {
                dev: BlockDev {
                    path: "/dev/loop0".into(),
                    devno: LOOP,
                },
                file: "/var/s.img".into(),
                autoclear: a,
            }),
        }
    }

    #[test]
    fn down_table() {
        let absent = DownObserved {
            mapping: Mapping::Absent,
            mounted_at: vec![],
            under: vec![],
        };
        assert!(plan_down("secretfs", &absent).unwrap().is_noop());
        let up = DownObserved {
            mapping: open_on(LOOP),
            mounted_at: vec!["/mnt/a".into(), "/mnt/b".into()],
            under: vec![under(true, Some(true))],
        };
        let p = plan_down("secretfs", &up).unwrap();
        assert_eq!(pending(&p), vec!["unmount", "unmount", "close", "detach"]);
        assert_eq!(
            p.steps[0].step,
            Step::Unmount {
                dir: "/mnt/b".into()
            }
        );
        let kept = DownObserved {
            under: vec![under(true, Some(false))],
            ..up.clone()
        };
        let p = plan_down("secretfs", &kept).unwrap();
        assert_eq!(pending(&p), vec!["unmount", "unmount", "close"]);
        assert_eq!(p.notes.len(), 1);
        let foreign = DownObserved {
            under: vec![under(false, None)],
            ..up.clone()
        };
        assert!(refused(plan_down("secretfs", &foreign)).contains("not a secretfs volume"));
        let not_luks = DownObserved {
            mapping: Mapping::Open {
                devno: DM,
                on: vec![VDB],
                dm_uuid: None,
            },
            ..up
        };
        assert!(refused(plan_down("secretfs", &not_luks)).contains("not a LUKS2 volume"));
    }
}
