//! The pure planner: observed state in, steps (or a refusal) out.
//!
//! | observed                                   | plan                          |
//! |--------------------------------------------|-------------------------------|
//! | our mapping open and mounted at DIR        | nothing ("already up")        |
//! | our mapping open, not mounted              | mkfs if blank, mount          |
//! | our LUKS2 header, closed                   | key, open, mkfs if blank, mount |
//! | blank device, or a file to create          | key, format, open, mkfs, mount |
//! | foreign signature                          | refuse (exit 3); `--force` formats |
//! | mounted, swap, held, a partition           | refuse, even with `--force`   |
//! | DIR used by another mount, not a directory | refuse                        |
//! | NAME open on another device                | refuse                        |
//!
//! Nothing here touches the machine; `tests/` and the unit tests below run
//! every row without root.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Target;
use crate::probe::{Mapping, MountState, Observed, Signature, TargetState};

/// Smallest volume: the LUKS2 header (16 MiB) plus a small ext4.
pub const MIN_SIZE: u64 = 32 << 20;

/// What the planner needs from the settings.
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub target: Target,
    pub name: String,
    pub mount: PathBuf,
    pub force: bool,
    pub wipe: bool,
}

/// One step of `up`, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Create the sparse backing file (mode 0600).
    CreateFile,
    /// Attach the file to a free loop device.
    AttachLoop,
    /// Write a new LUKS2 header.
    Format,
    /// Open the LUKS2 volume as /dev/mapper/NAME.
    Open,
    /// Overwrite the new volume with zeros (`--wipe`).
    Wipe,
    /// Make ext4 inside the volume.
    MakeFilesystem,
    /// Create the mount point directory.
    CreateMountPoint,
    /// Mount the volume.
    Mount,
}

impl Step {
    /// The step's name in JSON and logs (`create_file`, `format`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateFile => "create_file",
            Step::AttachLoop => "attach_loop",
            Step::Format => "format",
            Step::Open => "open",
            Step::Wipe => "wipe",
            Step::MakeFilesystem => "make_filesystem",
            Step::CreateMountPoint => "create_mount_point",
            Step::Mount => "mount",
        }
    }

    /// Whether the step needs the passphrase.
    pub fn needs_key(self) -> bool {
        matches!(self, Step::Format | Step::Open)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::CreateFile => "create the backing file",
            Step::AttachLoop => "attach a loop device",
            Step::Format => "format LUKS2",
            Step::Open => "open the volume",
            Step::Wipe => "wipe the volume with zeros",
            Step::MakeFilesystem => "make ext4",
            Step::CreateMountPoint => "create the mount point",
            Step::Mount => "mount",
        })
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub step: Step,
    pub todo: Todo,
}

/// The plan for `up`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Planned>,
    /// A new LUKS2 header will be written.
    pub first_format: bool,
    /// Formatting over a foreign signature because of `--force`.
    pub forced: bool,
    /// Warnings worth a log line (not refusals).
    pub notes: Vec<String>,
}

impl Plan {
    /// Steps still to do (or to decide).
    pub fn pending(&self) -> impl Iterator<Item = Step> + '_ {
        self.steps
            .iter()
            .filter(|p| p.todo != Todo::AlreadyDone)
            .map(|p| p.step)
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

/// Why `up` will not proceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The target is in use or holds something not ours (exit 3).
    Refused(String),
    /// The settings do not fit the machine (exit 2).
    Usage(String),
}

impl Refusal {
    fn msg(&self) -> &str {
        match self {
            Refusal::Refused(m) | Refusal::Usage(m) => m,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.msg())
    }
}

fn refuse<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Refused(m.into()))
}

fn bad<T>(m: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Usage(m.into()))
}

/// Maps observed state to a plan.
pub fn plan(input: &PlanInput, obs: &Observed) -> Result<Plan, Refusal> {
    let path = input.target.path().display().to_string();
    let name = &input.name;
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut push = |step, todo| steps.push(Planned { step, todo });

    // 1. The target itself.
    match (&input.target, &obs.target) {
        (Target::Disk(_), TargetState::Missing { .. }) => {
            return bad(format!(
                "disk {path} does not exist: check the name (lsblk lists disks)"
            ))
        }
        (
            Target::File { size, .. },
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
                    "--size {size} is too small: a LUKS2 header and ext4 need at least {} MiB",
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
            push(Step::CreateFile, Todo::WillDo);
            push(Step::AttachLoop, Todo::WillDo);
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
        (Target::Disk(_), TargetState::Block { size, .. }) => {
            if *size < MIN_SIZE && !obs.signature.is_ours() {
                return bad(format!(
                    "{path} is only {size} bytes; at least {} MiB are needed",
                    MIN_SIZE >> 20
                ));
            }
        }
        (Target::File { .. }, TargetState::File { size, loop_dev, .. }) => {
            if *size < MIN_SIZE && !obs.signature.is_ours() {
                return bad(format!(
                    "{path} is only {size} bytes; at least {} MiB are needed",
                    MIN_SIZE >> 20
                ));
            }
            let todo = if loop_dev.is_some() {
                Todo::AlreadyDone
            } else {
                Todo::WillDo
            };
            push(Step::AttachLoop, todo);
        }
        (Target::File { .. }, TargetState::Block { .. })
        | (Target::Disk(_), TargetState::File { .. }) => {
            return bad(format!("{path} is not the kind of target named"));
        }
    }

    // 2. The mapping name.
    let open_on_target = match &obs.mapping {
        Mapping::Absent | Mapping::Unavailable { .. } => false,
        Mapping::Open { on, .. } => {
            let target_dev = match &obs.target {
                TargetState::Block { dev, .. } => Some(dev.devno),
                TargetState::File {
                    loop_dev: Some(l), ..
                } => Some(l.dev.devno),
                _ => None,
            };
            if !obs.mapping.is_luks2() {
                return refuse(format!(
                    "/dev/mapper/{name} exists and is not a LUKS2 volume: choose another --name"
                ));
            }
            if target_dev.is_none() || on.as_slice() != [target_dev.unwrap()] {
                return refuse(format!(
                    "/dev/mapper/{name} is already open on another device ({}): choose another --name, \
                     or close it with `secretfs down --name {name}`",
                    on.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                ));
            }
            true
        }
    };

    // 3. Anything else using the device refuses, --force or not.
    if !obs.busy.is_empty() {
        return refuse(format!("{path} is in use: {}", obs.busy.join("; ")));
    }

    // 4. What the device holds.
    let ours = obs.signature.is_ours();
    if ours && obs.luks_loads == Some(false) {
        return refuse(format!(
            "{path} looks like a secretfs LUKS2 header to blkid, but libcryptsetup cannot load it: inspect it with cryptsetup luksDump"
        ));
    }
    if open_on_target && !ours {
        return refuse(format!(
            "/dev/mapper/{name} is open on {path}, but {path} shows {}: the two disagree",
            obs.signature.describe()
        ));
    }
    let mut forced = false;
    let first_format = match &obs.signature {
        _ if ours => false,
        Signature::Blank => true,
        other => {
            if !input.force {
                return refuse(format!(
                    "{path} holds {}; secretfs formats only blank devices (pass --force to destroy it)",
                    other.describe()
                ));
            }
            notes.push(format!(
                "--force: formatting over {} on {path}",
                other.describe()
            ));
            forced = true;
            true
        }
    };
    push(
        Step::Format,
        if first_format {
            Todo::WillDo
        } else {
            Todo::AlreadyDone
        },
    );
    push(
        Step::Open,
        if open_on_target {
            Todo::AlreadyDone
        } else {
            Todo::WillDo
        },
    );
    if first_format && input.wipe {
        push(Step::Wipe, Todo::WillDo);
    }

    // 5. The filesystem inside.
    let fs_todo = match (&obs.inner, first_format) {
        (_, true) => Todo::WillDo,
        (None, false) => Todo::IfNeeded,
        (Some(Signature::Content { fstype }), false) if fstype == "ext4" => Todo::AlreadyDone,
        (Some(Signature::Blank), false) => Todo::WillDo,
        (Some(other), false) => {
            return refuse(format!(
                "/dev/mapper/{name} holds {}, not ext4: secretfs will not replace it",
                other.describe()
            ))
        }
    };
    push(Step::MakeFilesystem, fs_todo);

    // 6. The mount point.
    let dir = input.mount.display();
    let our_devno = match &obs.mapping {
        Mapping::Open { devno, .. } if open_on_target => Some(*devno),
        _ => None,
    };
    match &obs.mount {
        MountState::Mounted { devno, .. } if Some(*devno) == our_devno => {
            push(Step::CreateMountPoint, Todo::AlreadyDone);
            push(Step::Mount, Todo::AlreadyDone);
        }
        MountState::Mounted { source, fstype, .. } => {
            return refuse(format!("{dir} is already in use: {source} ({fstype}) is mounted there; choose another --mount"));
        }
        MountState::NotADirectory => {
            return refuse(format!("mount point {dir} exists and is not a directory"));
        }
        MountState::Missing => {
            push(Step::CreateMountPoint, Todo::WillDo);
            push(Step::Mount, Todo::WillDo);
        }
        MountState::Dir { empty } => {
            if !empty {
                notes.push(format!(
                    "{dir} is not empty; its files will be hidden under the mount (were they written while the volume was down?)"
                ));
            }
            push(Step::CreateMountPoint, Todo::AlreadyDone);
            push(Step::Mount, Todo::WillDo);
        }
    }

    Ok(Plan {
        steps,
        first_format,
        forced,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{BlockDev, DevNo, LoopState};

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

    fn ours() -> Signature {
        Signature::Luks {
            version: 2,
            uuid: "u".into(),
            label: Some("secretfs".into()),
            subsystem: Some("secretfs".into()),
        }
    }
    fn ext4() -> Signature {
        Signature::Content {
            fstype: "ext4".into(),
        }
    }
    fn disk_input() -> PlanInput {
        PlanInput {
            target: Target::Disk("/dev/vdb".into()),
            name: "secretfs".into(),
            mount: "/mnt/secretfs".into(),
            force: false,
            wipe: false,
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
    fn base(sig: Signature) -> Observed {
        Observed {
            target: disk(),
            luks_loads: if matches!(sig, Signature::Luks { .. }) {
                Some(true)
            } else {
                None
            },
            signature: sig,
            busy: vec![],
            mapping: Mapping::Absent,
            mount: MountState::Missing,
            inner: None,
        }
    }
    fn todo(p: &Plan, s: Step) -> Option<Todo> {
        p.steps.iter().find(|x| x.step == s).map(|x| x.todo)
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
    fn blank_disk_gets_the_whole_pipeline() {
        let p = plan(&disk_input(), &base(Signature::Blank)).unwrap();
        let pending: Vec<Step> = p.pending().collect();
        assert_eq!(
            pending,
            vec![
                Step::Format,
                Step::Open,
                Step::MakeFilesystem,
                Step::CreateMountPoint,
                Step::Mount
            ]
        );
        assert!(p.first_format && p.needs_key() && !p.forced);
    }

    #[test]
    fn already_up_is_a_noop() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(ext4());
        o.mount = MountState::Mounted {
            devno: DM,
            fstype: "ext4".into(),
            source: "/dev/mapper/secretfs".into(),
        };
        let p = plan(&disk_input(), &o).unwrap();
        assert!(p.is_noop(), "{p:?}");
        assert!(!p.needs_key());
    }

    #[test]
    fn ours_closed_reopens_without_format() {
        let mut o = base(ours());
        o.mount = MountState::Dir { empty: true };
        let p = plan(&disk_input(), &o).unwrap();
        assert_eq!(todo(&p, Step::Format), Some(Todo::AlreadyDone));
        assert_eq!(todo(&p, Step::Open), Some(Todo::WillDo));
        assert_eq!(todo(&p, Step::MakeFilesystem), Some(Todo::IfNeeded));
        assert_eq!(todo(&p, Step::CreateMountPoint), Some(Todo::AlreadyDone));
        assert!(p.needs_key() && !p.first_format);
    }

    #[test]
    fn open_but_unmounted_needs_no_key() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(ext4());
        let p = plan(&disk_input(), &o).unwrap();
        assert!(!p.needs_key());
        assert_eq!(
            p.pending().collect::<Vec<_>>(),
            vec![Step::CreateMountPoint, Step::Mount]
        );
    }

    #[test]
    fn crash_after_format_makes_the_filesystem() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(Signature::Blank);
        let p = plan(&disk_input(), &o).unwrap();
        assert_eq!(todo(&p, Step::MakeFilesystem), Some(Todo::WillDo));
    }

    #[test]
    fn foreign_signatures_are_refused_unless_forced() {
        for sig in [
            ext4(),
            Signature::Content {
                fstype: "xfs".into(),
            },
            Signature::Content {
                fstype: "swap".into(),
            },
            Signature::PartitionTable {
                pttype: "gpt".into(),
            },
            Signature::Luks {
                version: 2,
                uuid: "x".into(),
                label: None,
                subsystem: None,
            },
            Signature::Luks {
                version: 1,
                uuid: "x".into(),
                label: None,
                subsystem: Some("secretfs".into()),
            },
            Signature::Ambivalent,
        ] {
            let m = refused(plan(&disk_input(), &base(sig.clone())));
            assert!(m.contains("--force"), "{m}");
            let forced = plan(
                &PlanInput {
                    force: true,
                    ..disk_input()
                },
                &base(sig),
            )
            .unwrap();
            assert!(forced.forced && forced.first_format);
        }
    }

    #[test]
    fn busy_devices_are_refused_even_with_force() {
        let mut o = base(Signature::Blank);
        o.busy = vec!["/dev/vdb is mounted at /data".into()];
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
        let mut o = base(Signature::Blank);
        o.target = TargetState::Block {
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
        let mut o = base(Signature::Blank);
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
        let mut o = base(Signature::Blank);
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
    fn non_empty_mount_point_is_a_note() {
        let mut o = base(Signature::Blank);
        o.mount = MountState::Dir { empty: false };
        let p = plan(&disk_input(), &o).unwrap();
        assert_eq!(p.notes.len(), 1);
    }

    #[test]
    fn new_file_is_created_and_attached() {
        let o = Observed {
            target: TargetState::Missing {
                parent_exists: true,
                free_bytes: 1 << 40,
            },
            ..base(Signature::Blank)
        };
        let p = plan(&file_input(Some(2 << 30)), &o).unwrap();
        assert_eq!(
            p.pending().take(3).collect::<Vec<_>>(),
            vec![Step::CreateFile, Step::AttachLoop, Step::Format]
        );
        assert!(usage(plan(&file_input(None), &o)).contains("give --size"));
        assert!(usage(plan(&file_input(Some(1 << 20)), &o)).contains("too small"));
        let o = Observed {
            target: TargetState::Missing {
                parent_exists: false,
                free_bytes: 0,
            },
            ..o
        };
        assert!(usage(plan(&file_input(Some(2 << 30)), &o)).contains("directory"));
    }

    #[test]
    fn new_file_needs_the_space() {
        let o = Observed {
            target: TargetState::Missing {
                parent_exists: true,
                free_bytes: 1 << 30,
            },
            ..base(Signature::Blank)
        };
        assert!(refused(plan(&file_input(Some(2 << 30)), &o)).contains("MiB free"));
        // An existing empty file is too small rather than new.
        let o = Observed {
            target: TargetState::File {
                size: 0,
                loop_dev: None,
                free_bytes: 0,
            },
            ..base(Signature::Blank)
        };
        assert!(usage(plan(&file_input(Some(2 << 30)), &o)).contains("only 0 bytes"));
    }

    #[test]
    fn attached_file_reopens() {
        let o = Observed {
            target: TargetState::File {
                size: 2 << 30,
                loop_dev: Some(LoopState {
                    dev: BlockDev {
                        path: "/dev/loop0".into(),
                        devno: LOOP,
                    },
                    autoclear: true,
                }),
                free_bytes: 0,
            },
            mapping: open_on(LOOP),
            inner: Some(ext4()),
            mount: MountState::Mounted {
                devno: DM,
                fstype: "ext4".into(),
                source: "/dev/mapper/secretfs".into(),
            },
            ..base(ours())
        };
        assert!(plan(&file_input(None), &o).unwrap().is_noop());
    }

    #[test]
    fn wrong_kinds_and_missing_disks_are_usage_errors() {
        let o = Observed {
            target: TargetState::Missing {
                parent_exists: true,
                free_bytes: 1 << 40,
            },
            ..base(Signature::Blank)
        };
        assert!(usage(plan(&disk_input(), &o)).contains("does not exist"));
        let o = Observed {
            target: TargetState::WrongKind {
                what: "a character device".into(),
            },
            ..base(Signature::Blank)
        };
        assert!(usage(plan(&disk_input(), &o)).contains("character device"));
    }

    #[test]
    fn disagreeing_signals_refuse() {
        let mut o = base(Signature::Blank);
        o.mapping = open_on(VDB);
        assert!(refused(plan(&disk_input(), &o)).contains("disagree"));
        let mut o = base(ours());
        o.luks_loads = Some(false);
        assert!(refused(plan(&disk_input(), &o)).contains("cannot load"));
    }

    #[test]
    fn inner_foreign_filesystem_is_refused() {
        let mut o = base(ours());
        o.mapping = open_on(VDB);
        o.inner = Some(Signature::Content {
            fstype: "xfs".into(),
        });
        assert!(refused(plan(&disk_input(), &o)).contains("not ext4"));
    }

    #[test]
    fn step_names_match_their_json() {
        for s in [
            Step::CreateFile,
            Step::AttachLoop,
            Step::Format,
            Step::Open,
            Step::Wipe,
            Step::MakeFilesystem,
            Step::CreateMountPoint,
            Step::Mount,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    #[test]
    fn wipe_only_on_first_format() {
        let p = plan(
            &PlanInput {
                wipe: true,
                ..disk_input()
            },
            &base(Signature::Blank),
        )
        .unwrap();
        assert_eq!(todo(&p, Step::Wipe), Some(Todo::WillDo));
        let p = plan(
            &PlanInput {
                wipe: true,
                ..disk_input()
            },
            &base(ours()),
        )
        .unwrap();
        assert_eq!(todo(&p, Step::Wipe), None);
    }
}
