//! The planner's state tables, row by row, without root.

use std::path::Path;

use super::*;
use crate::error::EXIT_REFUSED;
use crate::luks::header::{Header, TokenFound};
use crate::luks::token::Token;
use crate::luks::token::TokenState;
use crate::observe::{
    BlockDev, Content, Data, LoopState, Mapping, MountState, Observed, Signature, TargetState,
};
use crate::observe::{DevNo, DeviceObs};
use crate::settings::{PbkdfChoice, Target};

pub(super) const VDB: DevNo = DevNo {
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
pub(super) fn header(token: TokenFound, slots: u32) -> Content {
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
    TokenFound::Present {
        id: 0,
        token: Box::new(t),
    }
}
/// Our volume, ready, with ext4 recorded.
fn ours() -> Content {
    header(token(TokenState::Ready, Some("ext4")), 1)
}
pub(super) fn sig(fstype: &str) -> Signature {
    Signature::Content {
        fstype: fstype.into(),
        offset: None,
    }
}
pub(super) fn with_sig(s: Signature) -> Content {
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
pub(super) fn disk_input() -> PlanInput {
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
        ephemeral: false,
        inside: crate::settings::Use::Filesystem { fs: None },
        disk_index: None,
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
pub(super) fn open_on(d: DevNo) -> Mapping {
    Mapping::Open {
        devno: DM,
        on: vec![d],
        dm_uuid: Some("CRYPT-LUKS2-u-secretfs".into()),
    }
}
pub(super) fn base(c: Content) -> Observed {
    Observed {
        device: DeviceObs {
            target: disk(),
            content: Some(c),
            busy: vec![],
            read_only: false,
        },
        mapping: Mapping::Absent,
        mount_path: "/mnt/secretfs".into(),
        mount: MountState::Missing,
        inner: None,
        swap_on: false,
    }
}
pub(super) fn mounted(o: &mut Observed) {
    o.mount = MountState::Mounted {
        devno: DM,
        fstype: "ext4".into(),
        source: "/dev/mapper/secretfs".into(),
    };
}
pub(super) fn todo(p: &Plan, name: &str) -> Option<Todo> {
    p.steps
        .iter()
        .find(|x| x.step.name() == name)
        .map(|x| x.todo)
}
pub(super) fn pending(p: &Plan) -> Vec<&'static str> {
    p.pending().map(Step::name).collect()
}
pub(super) fn refused(r: Result<Plan, Refusal>) -> String {
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
                    },
                    place: None,
                    ephemeral: false,
                    swap: false
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
                        record: FsRecord::Token { filesystem: None },
                        place: None,
                        ephemeral: false,
                        swap: false
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
        (
            "ready with a filesystem but no slot (held data; a header backup opens it)",
            header(token(TokenState::Ready, Some("ext4")), 0),
            |c| matches!(c, Class::Damaged(w) if w.contains("no key slot") && w.contains("shred --disk")),
        ),
        ("legacy", header(TokenFound::Absent, 1), |c| {
            matches!(
                c,
                Class::Ours {
                    record: FsRecord::Legacy,
                    place: None,
                    ephemeral: false,
                    swap: false
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
    use crate::settings::Filesystem::{Ext4, Xfs};
    let m = Path::new("/dev/mapper/secretfs");
    let ext4 = [sig("ext4")];
    let xfs = [sig("xfs")];
    let tok = |f: Option<&str>| FsRecord::Token {
        filesystem: f.map(str::to_string),
    };
    for fs in [Ext4, Xfs] {
        assert_eq!(filesystem(&FsRecord::New, fs, &ext4, m), Ok(FsTodo::Make));
        assert_eq!(filesystem(&tok(None), fs, &[], m), Ok(FsTodo::Make));
        assert_eq!(filesystem(&tok(None), fs, &xfs, m), Ok(FsTodo::Make));
    }
    assert_eq!(
        filesystem(&tok(Some("ext4")), Ext4, &ext4, m),
        Ok(FsTodo::Have { record: false })
    );
    assert_eq!(
        filesystem(&tok(Some("xfs")), Xfs, &xfs, m),
        Ok(FsTodo::Have { record: false })
    );
    // Damaged: the recorded filesystem is not what is inside.
    for inner in [&[][..], &xfs[..]] {
        let e = filesystem(&tok(Some("ext4")), Ext4, inner, m).unwrap_err();
        assert!(
            e.to_string()
                .contains("e2fsck -b 32768 /dev/mapper/secretfs"),
            "{e}"
        );
    }
    for inner in [&[][..], &ext4[..], &[sig("xfs"), sig("ext4")][..]] {
        let e = filesystem(&tok(Some("xfs")), Xfs, inner, m).unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e.into_error()), EXIT_REFUSED);
        let e = filesystem(&tok(Some("xfs")), Xfs, inner, m).unwrap_err();
        assert!(
            e.to_string().contains("secretfs made xfs on it")
                && e.to_string().contains("`xfs_repair /dev/mapper/secretfs`"),
            "{e}"
        );
    }
    for fs in [Ext4, Xfs] {
        let there = [sig(fs.as_str())];
        assert_eq!(
            filesystem(&FsRecord::Legacy, fs, &there, m),
            Ok(FsTodo::Have { record: true })
        );
        assert_eq!(filesystem(&FsRecord::Legacy, fs, &[], m), Ok(FsTodo::Make));
    }
    assert!(filesystem(&FsRecord::Legacy, Ext4, &xfs, m).is_err());
    assert!(filesystem(&FsRecord::Legacy, Xfs, &ext4, m).is_err());
}

/// The volume's filesystem before it is open: the recorded one, else the
/// one asked for, else ext4; a different one asked for is refused.
#[test]
fn volume_fs_table() {
    use crate::settings::Filesystem::{Ext4, Xfs};
    let tok = |f: Option<&str>| FsRecord::Token {
        filesystem: f.map(str::to_string),
    };
    let rows: &[(
        Option<crate::settings::Filesystem>,
        FsRecord,
        Result<_, &str>,
    )] = &[
        (None, FsRecord::New, Ok(Ext4)),
        (Some(Xfs), FsRecord::New, Ok(Xfs)),
        (Some(Ext4), FsRecord::New, Ok(Ext4)),
        (Some(Xfs), tok(None), Ok(Xfs)),
        (None, tok(None), Ok(Ext4)),
        (None, FsRecord::Legacy, Ok(Ext4)),
        (None, tok(Some("xfs")), Ok(Xfs)),
        (None, tok(Some("ext4")), Ok(Ext4)),
        (Some(Xfs), tok(Some("xfs")), Ok(Xfs)),
        (Some(Xfs), tok(Some("ext4")), Err("not the xfs asked for")),
        (Some(Ext4), tok(Some("xfs")), Err("not the ext4 asked for")),
        (
            None,
            tok(Some("btrfs")),
            Err("btrfs inside, which this secretfs does not make"),
        ),
    ];
    for (want, record, expect) in rows {
        let got = volume_fs(*want, record, "/dev/vdb");
        match (expect, got) {
            (Ok(f), Ok(g)) => assert_eq!(*f, g, "{want:?} {record:?}"),
            (Err(m), Err(e)) => {
                assert!(e.to_string().contains(m), "{want:?} {record:?}: {e}");
                assert_eq!(crate::error::exit_code_of(&e.into_error()), EXIT_REFUSED);
            }
            (x, g) => panic!("{want:?} {record:?}: expected {x:?}, got {g:?}"),
        }
    }
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

/// `--fs xfs`: a new volume gets XFS (made and mounted as XFS); one that
/// records XFS opens as XFS without `--fs`; one that records ext4 is
/// refused before anything is opened; a file too small for XFS is a
/// usage error.
#[test]
fn the_filesystem_asked_for_is_made_and_the_recorded_one_kept() {
    use crate::settings::{Filesystem, Use};
    let xfs_input = PlanInput {
        inside: Use::Filesystem {
            fs: Some(Filesystem::Xfs),
        },
        ..disk_input()
    };
    let fs_of = |p: &Plan| -> Vec<(&'static str, Filesystem)> {
        p.steps
            .iter()
            .filter_map(|s| match &s.step {
                Step::MakeFilesystem { fs, .. } | Step::Mount { fs, .. } => {
                    Some((s.step.name(), *fs))
                }
                _ => None,
            })
            .collect()
    };
    let p = plan(&xfs_input, &base(Content::blank())).unwrap();
    assert_eq!(
        fs_of(&p),
        [
            ("make_filesystem", Filesystem::Xfs),
            ("mount", Filesystem::Xfs)
        ]
    );
    assert_eq!(p.may_make(), Some(Filesystem::Xfs));
    assert!(p
        .steps
        .iter()
        .any(|s| s.step.to_string() == "make xfs on /dev/mapper/secretfs"));
    // Recorded XFS, no --fs: XFS.
    let mut o = base(header(token(TokenState::Ready, Some("xfs")), 1));
    o.mount = MountState::Dir { empty: true };
    let p = plan(&disk_input(), &o).unwrap();
    assert_eq!(
        fs_of(&p),
        [
            ("make_filesystem", Filesystem::Xfs),
            ("mount", Filesystem::Xfs)
        ]
    );
    // Open with XFS inside: nothing to make.
    o.mapping = open_on(VDB);
    o.inner = Some(vec![sig("xfs")]);
    let p = plan(&xfs_input, &o).unwrap();
    assert_eq!(pending(&p), vec!["mount"]);
    assert_eq!(p.may_make(), None);
    // Damaged XFS: the xfs_repair hint.
    o.inner = Some(vec![]);
    assert!(refused(plan(&disk_input(), &o)).contains("xfs_repair /dev/mapper/secretfs"));
    // Recorded ext4, --fs xfs: refused, closed or open.
    let mut o = base(ours());
    let e = refused(plan(&xfs_input, &o));
    assert!(
        e.contains("/dev/vdb holds a volume with ext4 inside, not the xfs asked for"),
        "{e}"
    );
    o.mapping = open_on(VDB);
    o.inner = Some(vec![sig("ext4")]);
    assert!(refused(plan(&xfs_input, &o)).contains("not the xfs asked for"));
    // Too small for XFS (but not for ext4).
    let small = |fs| PlanInput {
        target: Target::File {
            path: "/var/s.img".into(),
            size: Some(100 << 20),
        },
        inside: Use::Filesystem { fs },
        ..disk_input()
    };
    let mut o = base(Content::blank());
    o.device.target = TargetState::Missing {
        parent_exists: true,
        free_bytes: 1 << 40,
    };
    o.device.content = None;
    let e = usage(plan(&small(Some(Filesystem::Xfs)), &o));
    assert!(
        e.contains("a LUKS2 header and xfs need at least 320 MiB"),
        "{e}"
    );
    assert!(plan(&small(None), &o).is_ok());
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
    // /mnt is for mounts.
    let mut o = base(Content::blank());
    o.mount_path = "/mnt".into();
    o.mount = MountState::Dir { empty: true };
    let input = PlanInput {
        mount: "/mnt".into(),
        ..disk_input()
    };
    assert_eq!(
        todo(&plan(&input, &o).unwrap(), "mount"),
        Some(Todo::WillDo)
    );
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
        read_only: false,
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
        others_can_change: None,
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
        others_can_change: None,
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
                read_only: false,
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
fn a_backing_file_others_can_change_is_refused() {
    use crate::observe::sys::tests::mk;
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    mk(
        r,
        "proc/self/mountinfo",
        "22 1 252:1 / / rw - ext4 /dev/vda1 rw\n",
    );
    mk(r, "proc/swaps", "Filename Type Size Used Priority\n");
    mk(r, "sys/class/misc/device-mapper/dev", "10:236\n");
    std::fs::create_dir_all(r.join("sys/block")).unwrap();
    let img = r.join("var/s.img");
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let input = file_input(None);
    let look = |mode| {
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = crate::observe::observe(r, &input.target, "secretfs", Path::new("/mnt/secretfs"))
            .unwrap();
        plan(&input, &o)
    };
    assert!(pending(&look(0o600).unwrap()).contains(&"format"));
    for (mode, shown) in [(0o660, "0660"), (0o606, "0606")] {
        let m = refused(look(mode));
        assert!(
            m.contains("/var/s.img") && m.contains(shown) && m.contains("chmod 600"),
            "{m}"
        );
    }
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&img, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
        let o = crate::observe::observe(r, &input.target, "secretfs", Path::new("/mnt/secretfs"))
            .unwrap();
        let m = refused(plan(&input, &o));
        assert!(m.contains("uid 4242") && m.contains("chown"), "{m}");
    }
}

#[test]
fn wipe_only_before_the_filesystem_is_made() {
    let input = PlanInput {
        wipe: true,
        ..disk_input()
    };
    let p = plan(&input, &base(Content::blank())).unwrap();
    assert_eq!(todo(&p, "wipe"), Some(Todo::WillDo));
    let p = plan(&input, &base(ours())).unwrap();
    assert_eq!(todo(&p, "wipe"), None);
    // A wipe killed before mkfs (the unit's start timeout): the volume
    // never held data, and the next `up --wipe` wipes it again.
    let killed = header(token(TokenState::Ready, None), 1);
    let p = plan(&input, &base(killed.clone())).unwrap();
    assert_eq!(todo(&p, "wipe"), Some(Todo::WillDo));
    assert_eq!(pending(&p)[..3], ["open", "wipe", "make_filesystem"]);
    let p = plan(&disk_input(), &base(killed)).unwrap();
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
        swap_on: false,
        under: vec![],
        members: vec![],
    };
    assert!(plan_down("secretfs", &absent).unwrap().is_noop());
    let up = DownObserved {
        mapping: open_on(LOOP),
        mounted_at: vec!["/mnt/a".into(), "/mnt/b".into()],
        swap_on: false,
        under: vec![under(true, Some(true))],
        members: vec![],
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
    // Swap space (`secretfs swap --off`): disabled before the close.
    let swap = DownObserved {
        mounted_at: vec![],
        swap_on: true,
        ..up.clone()
    };
    let p = plan_down("secretfs-swap", &swap).unwrap();
    assert_eq!(pending(&p), vec!["swap_off", "close", "detach"]);
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

#[test]
fn shred_is_down_with_every_header_erased_before_the_loop_goes() {
    let up = DownObserved {
        mapping: open_on(LOOP),
        mounted_at: vec!["/mnt/a".into()],
        swap_on: false,
        under: vec![under(true, Some(true))],
        members: vec![],
    };
    let p = plan_shred("secretfs", &up).unwrap().plan;
    assert_eq!(pending(&p), vec!["unmount", "close", "shred", "detach"]);
    // Autoclear detaches the loop device at the close: the file is erased.
    assert_eq!(
        p.steps[2].step,
        Step::Shred {
            target: "/var/s.img".into(),
            file: true
        }
    );
    let disk = DownObserved {
        under: vec![Under {
            loop_dev: None,
            ..under(true, None)
        }],
        ..up.clone()
    };
    let p = plan_shred("secretfs", &disk).unwrap().plan;
    assert_eq!(pending(&p), vec!["unmount", "close", "shred"]);
    assert_eq!(
        p.steps[2].step,
        Step::Shred {
            target: "/dev/loop0".into(),
            file: false
        }
    );
    let closed = DownObserved {
        mapping: Mapping::Absent,
        mounted_at: vec![],
        swap_on: false,
        under: vec![],
        members: vec![],
    };
    assert!(refused(plan_shred("secretfs", &closed).map(|s| s.plan)).contains("is not open"));
    let foreign = DownObserved {
        under: vec![under(false, None)],
        ..up
    };
    assert!(
        refused(plan_shred("secretfs", &foreign).map(|s| s.plan)).contains("not a secretfs volume")
    );
}
