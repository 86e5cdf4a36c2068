//! The plan of `up`: the target, the mapping name, what uses the device,
//! what it holds, the filesystem, the mount point.

use std::path::PathBuf;

use super::{
    bad, classify, filesystem, refuse, volume_fs, Class, Dev, FsRecord, FsTodo, NewHeader, Plan,
    Planned, Refusal, Step, Todo,
};
use crate::names;
use crate::observe::{Mapping, MountState, Observed, Signature, TargetState};
use crate::parse::MountOptions;
use crate::settings::{Filesystem, PbkdfChoice, Target, Use};

/// Smallest volume: the LUKS2 header (2 MiB; 16 MiB for volumes made
/// before [`crate::luks::KEYSLOTS_AREA_BYTES`]) plus a small ext4.
pub const MIN_SIZE: u64 = 32 << 20;

/// Smallest volume for XFS: mkfs.xfs makes none under 300 MiB, plus the
/// header.
pub const XFS_MIN_SIZE: u64 = 320 << 20;

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
    /// `--ephemeral`: a key only in memory, a new volume every boot.
    pub ephemeral: bool,
    /// A filesystem mounted at `mount`, or swap space (`secretfs swap`).
    pub inside: Use,
    /// A volume of one disk among a node's (`up --each-disk`): its index,
    /// for a new header's token.
    pub disk_index: Option<u32>,
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
            ephemeral: s.key == crate::settings::KeySpec::Ephemeral,
            inside: s.inside,
            disk_index: s.disk_index,
        }
    }

    /// The filesystem asked for (`--fs`), if any.
    pub fn want_fs(&self) -> Option<Filesystem> {
        match self.inside {
            Use::Filesystem { fs } => fs,
            Use::Swap { .. } => None,
        }
    }

    /// The smallest target a new volume can be made on.
    pub fn min_size(&self) -> u64 {
        match self.want_fs() {
            Some(Filesystem::Xfs) => XFS_MIN_SIZE,
            _ => MIN_SIZE,
        }
    }

    /// What [`min_size`](Self::min_size) is for, in a refusal: "a LUKS2
    /// header and xfs need at least 320 MiB".
    pub fn min_size_needs(&self) -> String {
        let what = match self.inside {
            Use::Filesystem { fs } => fs.unwrap_or(Filesystem::Ext4).to_string(),
            Use::Swap { .. } => "swap space".into(),
        };
        format!(
            "a LUKS2 header and {what} need at least {} MiB",
            self.min_size() >> 20
        )
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
            if *size < input.min_size() {
                return bad(format!(
                    "--size {} MiB is too small: {}",
                    size >> 20,
                    input.min_size_needs()
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
        (Target::Disk(p), t) => {
            let (size, logical_block) = disk(&path, t)?;
            (Dev::Path { path: p.clone() }, size, logical_block)
        }
        (Target::Disks(_) | Target::Auto, _) => {
            return bad("internal: several disks are planned by plan_set")
        }
        (_, TargetState::WrongKind { what }) => {
            return bad(format!("{path} is {what}"));
        }
        (
            Target::File { path: file, .. },
            TargetState::File {
                size,
                loop_dev,
                others_can_change,
                ..
            },
        ) => {
            if let Some(m) = others_can_change {
                return refuse(m.clone());
            }
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
        (Target::File { .. }, TargetState::Block { .. }) => {
            return bad(format!("{path} is not the kind of target named"));
        }
    };
    let class = match &dev.content {
        Some(c) => classify(c),
        None => Class::Blank, // a file this plan creates
    };
    let ours = matches!(class, Class::Ours { .. });
    if size < input.min_size() && !ours {
        return bad(format!(
            "{path} is only {size} bytes; {}",
            input.min_size_needs()
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
    // An ephemeral volume no longer open lost its key with its mapping:
    // it is made anew (after a mode check below).
    let recreate = matches!(
        class,
        Class::Ours {
            ephemeral: true,
            ..
        }
    ) && !open_on_target;
    if dev.read_only && (!ours || recreate) {
        return refuse(format!(
            "{path} is read-only (the kernel says so in /sys/block/*/ro): a new volume cannot be written"
        ));
    }

    // 4. What the device holds.
    if open_on_target && !ours {
        return refuse(format!(
            "{} is open on {path}, but {path} does not hold a secretfs volume ready to open: the two disagree",
            mapper.display()
        ));
    }
    if let Class::Ours {
        ephemeral, swap, ..
    } = class
    {
        purpose(&path, swap, input.inside)?;
        key_mode(&path, ephemeral, input.ephemeral, open_on_target)?;
    }
    let mut forced = None;
    let (first_format, again, record) = match class {
        Class::Ours { place: Some(p), .. } => {
            return refuse(format!(
                "{path} is member {} of {} of the striped set {}: give every member \
                 (--disk auto, or --disk once for each), never one alone",
                p.member + 1,
                p.members,
                p.set
            ))
        }
        Class::Ours { .. } if recreate => {
            notes.push(format!(
                "{path} holds an ephemeral secretfs volume that is not open: its key died with its \
                 mapping (a reboot, or `down`), so nothing can read it; making it anew"
            ));
            (true, true, FsRecord::New)
        }
        Class::Ours { record, .. } => (false, false, record),
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
        swap: matches!(input.inside, Use::Swap { .. }),
        disk_index: input.disk_index,
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
    // 5. Swap space inside, enabled (instead of a filesystem and a mount).
    if let Use::Swap { priority } = input.inside {
        let on = open_on_target && obs.swap_on;
        let made = on
            || (open_on_target
                && !first_format
                && obs
                    .inner
                    .as_deref()
                    .is_some_and(|i| i.iter().any(Signature::is_swap)));
        let done = |d: bool| if d { Todo::AlreadyDone } else { Todo::WillDo };
        push(
            Step::MakeSwap {
                mapper: mapper.clone(),
                dev: vol_dev,
            },
            done(made),
        );
        push(
            Step::SwapOn {
                mapper,
                priority,
                discard: input.discard,
            },
            done(on),
        );
        return Ok(Plan {
            steps,
            first_format,
            forced,
            notes,
        });
    }

    // 5. The filesystem inside.
    let fs = volume_fs(input.want_fs(), &record, &path)?;
    steps.extend(filesystem_steps(
        input,
        first_format,
        open_on_target,
        obs.inner.as_deref(),
        mapper.clone(),
        vec![vol_dev],
        (record, fs),
        None,
    )?);

    // 6. The mount point.
    let our_devno = obs.mapping.devno().filter(|_| open_on_target);
    steps.extend(mount_point(
        input,
        &obs.mount_path,
        &obs.mount,
        our_devno,
        (mapper, fs),
        &mut notes,
    )?);

    Ok(Plan {
        steps,
        first_format,
        forced,
        notes,
    })
}

/// Refuses a volume of ours made for the other use: `up` never takes the
/// swap space of `secretfs swap`, and `swap` never takes a volume.
pub(super) fn purpose(path: &str, swap: bool, asked: Use) -> Result<(), Refusal> {
    match (swap, asked) {
        (true, Use::Filesystem { .. }) => refuse(format!(
            "{path} holds the swap space of `secretfs swap`, not a volume: turn it off with \
             `secretfs swap --off`, or name another disk"
        )),
        (false, Use::Swap { .. }) => refuse(format!(
            "{path} holds a secretfs volume; swap never takes one: name another disk or file \
             (or `secretfs shred` the volume first)"
        )),
        _ => Ok(()),
    }
}

/// Refuses a volume of ours whose key mode is not the one asked for:
/// `--ephemeral` never replaces a volume whose key is kept (`--force` or
/// not), and an ephemeral volume still open is not replaced by a kept-key
/// `up`. A closed ephemeral volume holds nothing anyone can read: any `up`
/// makes it anew.
pub(super) fn key_mode(path: &str, volume: bool, asked: bool, open: bool) -> Result<(), Refusal> {
    match (volume, asked) {
        (true, false) if open => refuse(format!(
            "{path} holds an ephemeral secretfs volume that is open (its key only in the kernel): \
             run up with --ephemeral, or `secretfs down` it first to make a volume with a kept key there"
        )),
        (false, true) => refuse(format!(
            "{path} holds a secretfs volume whose key is kept; --ephemeral would make a new volume over \
             its data: run up with the key it was made with, or `secretfs shred` it first"
        )),
        _ => Ok(()),
    }
}

/// A whole disk's size and logical block size, or why it cannot be used.
pub(super) fn disk(path: &str, t: &TargetState) -> Result<(u64, u64), Refusal> {
    match t {
        TargetState::Missing { .. } => bad(format!(
            "disk {path} does not exist: check the name (lsblk lists disks)"
        )),
        TargetState::WrongKind { what } => bad(format!("{path} is {what}")),
        TargetState::Block {
            partition_of: Some(disk),
            ..
        } => refuse(format!(
            "{path} is a partition of {disk}; secretfs takes a whole disk (instance store comes unpartitioned)"
        )),
        TargetState::Block {
            size,
            logical_block,
            ..
        } => Ok((*size, *logical_block)),
        TargetState::File { .. } => bad(format!("{path} is not the kind of target named")),
    }
}

/// The mount point's steps: create it if missing, mount the filesystem
/// of `mapper` unless it (device `our_devno`, when open) is mounted there
/// already.
pub(super) fn mount_point(
    input: &PlanInput,
    mount_path: &std::path::Path,
    state: &MountState,
    our_devno: Option<crate::observe::DevNo>,
    (mapper, fs): (PathBuf, Filesystem),
    notes: &mut Vec<String>,
) -> Result<Vec<Planned>, Refusal> {
    let dir = &input.mount;
    let shown = dir.display();
    let canon = mount_path.to_string_lossy();
    if names::SYSTEM_DIRS.contains(&canon.as_ref()) {
        return refuse(format!(
            "mount point {shown} is the system directory {canon}: mounting there would hide it; choose e.g. {}",
            names::DEFAULT_MOUNT
        ));
    }
    let mount = Step::Mount {
        mapper,
        dir: dir.clone(),
        fs,
        options: input.mount_options.clone(),
    };
    let create = Step::CreateMountPoint { dir: dir.clone() };
    let (c, m) = match state {
        MountState::Mounted { devno, .. } if Some(*devno) == our_devno => {
            (Todo::AlreadyDone, Todo::AlreadyDone)
        }
        MountState::Mounted { source, fstype, .. } => {
            return refuse(format!("{shown} is already in use: {source} ({fstype}) is mounted there; choose another --mount"));
        }
        MountState::NotADirectory => {
            return refuse(format!("mount point {shown} exists and is not a directory"));
        }
        MountState::Missing => (Todo::WillDo, Todo::WillDo),
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
            (Todo::AlreadyDone, Todo::WillDo)
        }
    };
    Ok(vec![
        Planned {
            step: create,
            todo: c,
        },
        Planned {
            step: mount,
            todo: m,
        },
    ])
}

/// `--wipe` after a first format (or again on a volume whose token
/// records no filesystem yet: a wipe killed half-way, by the unit's start
/// timeout say, never held data), and the filesystem step: already done
/// when the open volume holds the filesystem its token records, to do on
/// a new volume, else decided once the volume is open.
#[allow(clippy::too_many_arguments)]
pub(super) fn filesystem_steps(
    input: &PlanInput,
    first_format: bool,
    open: bool,
    inner: Option<&[crate::observe::Signature]>,
    mapper: PathBuf,
    devs: Vec<Dev>,
    (record, fs): (FsRecord, Filesystem),
    stripe: Option<super::Geometry>,
) -> Result<Vec<Planned>, Refusal> {
    let mut steps = Vec::new();
    let unmade = matches!(record, FsRecord::Token { filesystem: None });
    if input.wipe && (first_format || unmade) {
        steps.push(Planned {
            step: Step::Wipe {
                mapper: mapper.clone(),
            },
            todo: Todo::WillDo,
        });
    }
    let todo = match (inner, open) {
        (Some(inner), true) => match filesystem(&record, fs, inner, &mapper)? {
            FsTodo::Have { record: false } => Todo::AlreadyDone,
            _ => Todo::WillDo,
        },
        _ if first_format => Todo::WillDo,
        _ => Todo::IfNeeded,
    };
    steps.push(Planned {
        step: Step::MakeFilesystem {
            mapper,
            devs,
            record,
            fs,
            stripe,
        },
        todo,
    });
    Ok(steps)
}
