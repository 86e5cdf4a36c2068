//! The set planner's state table (`set.rs`), row by row, without root.

use super::tests::{disk_input, header, pending, refused, sig, with_sig};
use super::*;
use crate::luks::header::{Header, TokenFound};
use crate::luks::token::{Place, Token, TokenState};
use crate::observe::{
    BlockDev, Content, DevNo, DeviceObs, Mapping, MountState, SetObserved, TargetState,
};
use crate::settings::Target;

const DISKS: [&str; 4] = [
    "/dev/nvme0n1",
    "/dev/nvme1n1",
    "/dev/nvme2n1",
    "/dev/nvme3n1",
];

pub(super) fn devno(i: usize) -> DevNo {
    DevNo {
        major: 259,
        minor: i as u32,
    }
}
pub(super) fn member_dm(m: usize) -> DevNo {
    DevNo {
        major: 253,
        minor: 10 + m as u32,
    }
}
pub(super) const STRIPE: DevNo = DevNo {
    major: 253,
    minor: 50,
};

/// Member `m` of `members` of `set`, ready, with `fs` recorded.
pub(super) fn member(set: &str, m: u32, members: u32, fs: Option<&str>) -> Content {
    let mut t = Token::member(
        "u",
        &Place {
            set: set.into(),
            member: m,
            members,
            chunk: CHUNK,
        },
    );
    t.state = TokenState::Ready;
    t.filesystem = fs.map(str::to_string);
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        1,
    )
}
pub(super) fn half_made() -> Content {
    let t = Token::member(
        "u",
        &Place {
            set: "s1".into(),
            member: 0,
            members: 2,
            chunk: CHUNK,
        },
    );
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        1,
    )
}

pub(super) fn input(n: usize) -> PlanInput {
    PlanInput {
        target: Target::Disks(DISKS[..n].iter().map(Into::into).collect()),
        ..disk_input()
    }
}

pub(super) fn obs(contents: Vec<Content>) -> SetObserved {
    let n = contents.len();
    SetObserved {
        disks: contents
            .into_iter()
            .enumerate()
            .map(|(i, c)| DeviceObs {
                target: TargetState::Block {
                    dev: BlockDev {
                        path: DISKS[i].into(),
                        devno: devno(i),
                    },
                    size: 8 << 30,
                    logical_block: 512,
                    partition_of: None,
                },
                content: Some(c),
                busy: vec![],
                read_only: false,
            })
            .collect(),
        members: vec![Mapping::Absent; n],
        stripe: Mapping::Absent,
        mount_path: "/mnt/secretfs".into(),
        mount: MountState::Missing,
        inner: None,
    }
}

fn plan4(o: &SetObserved) -> Result<Plan, Refusal> {
    plan_set(&input(o.disks.len()), o, "new")
}

/// The disks the plan opens, in member order.
fn opened(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .filter_map(|s| match &s.step {
            Step::OpenMembers { members, .. } if s.todo == Todo::WillDo => {
                Some(members.iter().map(|m| m.dev.to_string()))
            }
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn all_blank_makes_a_new_set() {
    let p = plan4(&obs(vec![Content::blank(); 4])).unwrap();
    assert!(p.first_format);
    assert_eq!(
        pending(&p),
        vec![
            "format_members",
            "mark_ready",
            "open_members",
            "create_stripe",
            "make_filesystem",
            "create_mount_point",
            "mount"
        ]
    );
    let Step::FormatMembers {
        members,
        set,
        chunk,
        ..
    } = &p.steps[0].step
    else {
        panic!("{:?}", p.steps[0])
    };
    assert_eq!((set.as_str(), *chunk, members.len()), ("new", CHUNK, 4));
    assert!(members.iter().all(|m| !m.again));
    let Step::MakeFilesystem { stripe, devs, .. } = &p.steps[4].step else {
        panic!()
    };
    assert_eq!(
        *stripe,
        Some(Geometry {
            chunk: CHUNK,
            members: 4
        })
    );
    assert_eq!(devs.len(), 4);
    // Member names follow the index.
    let Step::OpenMembers { members, .. } = &p.steps[2].step else {
        panic!()
    };
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["secretfs-0", "secretfs-1", "secretfs-2", "secretfs-3"]
    );
}

/// XFS on a new set carries the stripe's geometry; an assembled set
/// keeps the filesystem its members record, and refuses another one.
#[test]
fn sets_make_and_keep_their_filesystem() {
    use crate::settings::{Filesystem, Use};
    let xfs = |n| PlanInput {
        inside: Use::Filesystem {
            fs: Some(Filesystem::Xfs),
        },
        ..input(n)
    };
    let p = plan_set(&xfs(4), &obs(vec![Content::blank(); 4]), "new").unwrap();
    let Step::MakeFilesystem { fs, stripe, .. } = &p.steps[4].step else {
        panic!("{:?}", p.steps[4])
    };
    assert_eq!(*fs, Filesystem::Xfs);
    assert_eq!(
        *stripe,
        Some(Geometry {
            chunk: CHUNK,
            members: 4
        })
    );
    assert!(matches!(
        p.steps.last().unwrap().step,
        Step::Mount {
            fs: Filesystem::Xfs,
            ..
        }
    ));
    let xfs_set = obs((0..4).map(|i| member("s1", i, 4, Some("xfs"))).collect());
    let p = plan4(&xfs_set).unwrap();
    assert_eq!(p.may_make(), Some(Filesystem::Xfs));
    let ext4_set = obs((0..4).map(|i| member("s1", i, 4, Some("ext4"))).collect());
    let e = refused(plan_set(&xfs(4), &ext4_set, "new"));
    assert!(
        e.contains("set s1 holds a volume with ext4 inside, not the xfs asked for"),
        "{e}"
    );
    // Small disks: enough for ext4, not for XFS together.
    let mut small = obs(vec![Content::blank(); 4]);
    for d in &mut small.disks {
        if let TargetState::Block { size, .. } = &mut d.target {
            *size = 64 << 20;
        }
    }
    assert!(plan4(&small).is_ok());
    let e = plan_set(&xfs(4), &small, "new").unwrap_err().to_string();
    assert!(
        e.contains(
            "the 4 disks hold 256 MiB together; a LUKS2 header and xfs need at least 320 MiB"
        ),
        "{e}"
    );
}

#[test]
fn members_reassemble_in_token_order_whatever_the_disk_order() {
    // Disk i holds member (3 - i): reversed.
    let o = obs((0..4)
        .map(|i| member("s1", 3 - i, 4, Some("ext4")))
        .collect());
    let p = plan4(&o).unwrap();
    assert!(!p.first_format);
    assert_eq!(
        pending(&p),
        vec![
            "open_members",
            "create_stripe",
            "make_filesystem",
            "create_mount_point",
            "mount"
        ]
    );
    assert_eq!(opened(&p), vec![DISKS[3], DISKS[2], DISKS[1], DISKS[0]]);
    let Step::CreateStripe { set, members, .. } = &p.steps[1].step else {
        panic!()
    };
    assert_eq!(set, "s1");
    assert_eq!(members[0], names::mapper_path("secretfs-0"));
    assert!(p.steps.iter().any(|s| matches!(&s.step, Step::MakeFilesystem { record: FsRecord::Token { filesystem: Some(f) }, .. } if f == "ext4")));
}

/// `member` with the token changed by `change`.
fn member_with(m: u32, members: u32, change: impl Fn(&mut Token)) -> Content {
    let mut c = member("s1", m, members, Some("ext4"));
    if let Some(Header {
        token: TokenFound::Present { token, .. },
        ..
    }) = &mut c.header
    {
        change(token);
    }
    c
}

#[test]
fn an_assembled_set_takes_its_geometry_from_the_tokens() {
    // Made by a release with 64 KiB chunks: assembled with 64 KiB.
    let small = 64 << 10;
    let o = obs((0..4)
        .map(|i| member_with(i, 4, |t| t.chunk = Some(small)))
        .collect());
    let p = plan4(&o).unwrap();
    assert!(
        p.steps
            .iter()
            .any(|s| matches!(s.step, Step::CreateStripe { chunk, .. } if chunk == small)),
        "{p:?}"
    );
    assert!(
        p.steps.iter().any(|s| matches!(
            s.step,
            Step::MakeFilesystem {
                stripe: Some(Geometry { chunk, members: 4 }),
                ..
            } if chunk == small
        )),
        "{p:?}"
    );
    // Members that disagree: refused, --force aside.
    let mut o = obs((0..4).map(|i| member("s1", i, 4, Some("ext4"))).collect());
    o.disks[2].content = Some(member_with(2, 4, |t| t.chunk = Some(small)));
    let m = refused(plan4(&o));
    assert!(m.contains("disagree on the set's geometry"), "{m}");
    // A layout this build does not know: foreign, refused.
    let mut o = obs((0..4).map(|i| member("s1", i, 4, Some("ext4"))).collect());
    for d in &mut o.disks {
        d.content = Some(member_with(0, 4, |t| t.layout = Some("raid5".into())));
    }
    let m = refused(plan4(&o));
    assert!(
        m.contains("layout \"raid5\", which this secretfs does not know"),
        "{m}"
    );
}

#[test]
fn an_assembled_mounted_set_is_a_noop() {
    let mut o = obs((0..2).map(|i| member("s1", i, 2, Some("ext4"))).collect());
    for m in 0..2 {
        o.members[m] = Mapping::Open {
            devno: member_dm(m),
            on: vec![devno(m)],
            dm_uuid: Some("CRYPT-LUKS2-u-secretfs-0".into()),
        };
    }
    o.stripe = Mapping::Open {
        devno: STRIPE,
        on: vec![member_dm(0), member_dm(1)],
        dm_uuid: Some(format!("{}s1", names::DM_UUID_PREFIX_SET)),
    };
    o.inner = Some(vec![sig("ext4")]);
    o.mount = MountState::Mounted {
        devno: STRIPE,
        fstype: "ext4".into(),
        source: "/dev/mapper/secretfs".into(),
    };
    assert!(plan4(&o).unwrap().is_noop());
    // A stripe of another set under the name refuses.
    o.stripe = Mapping::Open {
        devno: STRIPE,
        on: vec![member_dm(0), member_dm(1)],
        dm_uuid: Some(format!("{}s2", names::DM_UUID_PREFIX_SET)),
    };
    assert!(refused(plan4(&o)).contains("not the stripe of this set"));
}

/// Members left open by an earlier run (killed between two opens): the
/// one open step opens only the others, in member order.
#[test]
fn members_already_open_are_not_opened_again() {
    let mut o = obs((0..4).map(|i| member("s1", i, 4, Some("ext4"))).collect());
    let open = |o: &mut SetObserved, ms: [usize; 2]| {
        for m in ms {
            o.members[m] = Mapping::Open {
                devno: member_dm(m),
                on: vec![devno(m)],
                dm_uuid: Some(format!("CRYPT-LUKS2-u-secretfs-{m}")),
            };
        }
    };
    open(&mut o, [0, 2]);
    let p = plan4(&o).unwrap();
    assert_eq!(opened(&p), vec![DISKS[1], DISKS[3]]);
    let Step::OpenMembers { members, .. } = &p.steps[0].step else {
        panic!("{:?}", p.steps[0])
    };
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["secretfs-1", "secretfs-3"]);
    // All open: the step is already done.
    open(&mut o, [1, 3]);
    let p = plan4(&o).unwrap();
    assert_eq!(p.steps[0].step.name(), "open_members");
    assert_eq!(p.steps[0].todo, Todo::AlreadyDone);
    assert!(opened(&p).is_empty());
}

#[test]
fn some_ours_some_blank_refuses_and_names_the_missing() {
    let o = obs(vec![
        member("s1", 0, 4, Some("ext4")),
        Content::blank(),
        member("s1", 2, 4, Some("ext4")),
        member("s1", 3, 4, Some("ext4")),
    ]);
    let m = refused(plan4(&o));
    assert!(
        m.contains("member(s) 2 of it are not among the disks"),
        "{m}"
    );
    assert!(m.contains("/dev/nvme1n1 holds no data (blank)"), "{m}");
    assert!(m.contains("touches none of them"), "{m}");
}

#[test]
fn a_partial_set_refuses() {
    // Two members of a set of four, two disks named.
    let o = obs(vec![
        member("s1", 0, 4, Some("ext4")),
        member("s1", 1, 4, Some("ext4")),
    ]);
    let m = refused(plan4(&o));
    assert!(m.contains("member(s) 3, 4"), "{m}");
    assert!(m.contains("2 disks were named"), "{m}");
}

/// A ready single-disk volume of ours (made before sets existed).
fn single() -> Content {
    let mut t = Token::formatting("u");
    t.state = TokenState::Ready;
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        1,
    )
}

#[test]
fn auto_keeps_a_lone_single_volume_only_beside_blank_disks() {
    let blank = Content::blank;
    assert_eq!(lone_volume(&obs(vec![blank(), single(), blank()])), Some(1));
    assert_eq!(lone_volume(&obs(vec![blank(), blank()])), None);
    assert_eq!(
        lone_volume(&obs(vec![single(), with_sig(sig("xfs"))])),
        None
    );
    assert_eq!(lone_volume(&obs(vec![single(), single()])), None);
    assert_eq!(
        lone_volume(&obs(vec![single(), member("s1", 0, 2, None)])),
        None
    );
}

#[test]
fn foreign_members_two_sets_and_single_volumes_refuse() {
    let m = refused(plan4(&obs(vec![Content::blank(), with_sig(sig("xfs"))])));
    assert!(m.contains("/dev/nvme1n1 holds"), "{m}");
    let m = refused(plan4(&obs(vec![
        member("s1", 0, 2, None),
        member("s2", 1, 2, None),
    ])));
    assert!(m.contains("different sets"), "{m}");
    let m = refused(plan4(&obs(vec![single(), Content::blank()])));
    assert!(m.contains("single-disk secretfs volume"), "{m}");
    let m = refused(plan4(&obs(vec![
        member("s1", 0, 2, None),
        member("s1", 0, 2, None),
    ])));
    assert!(m.contains("both say they are member 1"), "{m}");
}

#[test]
fn force_makes_a_new_set_of_all_and_wipes_what_is_not_blank() {
    let mut i = input(3);
    i.force = true;
    let o = obs(vec![
        with_sig(sig("xfs")),
        Content::blank(),
        member("s1", 0, 4, Some("ext4")),
    ]);
    let p = plan_set(&i, &o, "new").unwrap();
    assert!(p.first_format);
    let wiped: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match &s.step {
            Step::WipeSignatures { dev, .. } => Some(dev.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(wiped, vec![DISKS[0], DISKS[2]]);
    assert!(p.forced.is_some());
    // A complete set is assembled even with --force.
    let o = obs((0..3).map(|m| member("s1", m, 3, Some("ext4"))).collect());
    assert!(!plan_set(&i, &o, "new").unwrap().first_format);
}

#[test]
fn damaged_busy_read_only_and_duplicate_disks_refuse_even_with_force() {
    let mut i = input(2);
    i.force = true;
    let damaged = Content {
        signatures: vec![crate::observe::Signature::Luks {
            version: 2,
            uuid: "u".into(),
            label: None,
            subsystem: None,
        }],
        header: None,
        data: crate::observe::Data::NotChecked,
    };
    assert!(
        refused(plan_set(&i, &obs(vec![Content::blank(), damaged]), "n"))
            .contains("cryptsetup luksDump")
    );
    let mut o = obs(vec![Content::blank(); 2]);
    o.disks[1].busy = vec!["/dev/nvme1n1 is mounted at /mnt".into()];
    assert!(refused(plan_set(&i, &o, "n")).contains("is in use"));
    let mut o = obs(vec![Content::blank(); 2]);
    o.disks[0].read_only = true;
    assert!(refused(plan_set(&i, &o, "n")).contains("read-only"));
    let mut o = obs(vec![Content::blank(); 2]);
    o.disks[1].target = o.disks[0].target.clone();
    assert!(matches!(plan_set(&i, &o, "n"), Err(Refusal::Usage(m)) if m.contains("same disk")));
}

#[test]
fn a_set_whose_making_stopped_is_made_again() {
    // Killed while formatting: one member half-made, one blank.
    let p = plan4(&obs(vec![half_made(), Content::blank()])).unwrap();
    let Step::FormatMembers { members, .. } = &p.steps[0].step else {
        panic!()
    };
    assert_eq!(
        members.iter().map(|m| m.again).collect::<Vec<_>>(),
        vec![true, false]
    );
    // Killed while marking ready: one ready (no filesystem), one half-made.
    let p = plan4(&obs(vec![member("s1", 0, 2, None), half_made()])).unwrap();
    assert!(p.first_format);
    let Step::FormatMembers { members, .. } = &p.steps[0].step else {
        panic!()
    };
    assert!(members.iter().all(|m| m.again));
    // Ready and complete, but killed before mkfs recorded ext4: reassemble
    // and make the filesystem (it never held data).
    let p = plan4(&obs(vec![
        member("s1", 0, 2, None),
        member("s1", 1, 2, None),
    ]))
    .unwrap();
    assert!(!p.first_format);
    assert!(p.steps.iter().any(|s| matches!(
        &s.step,
        Step::MakeFilesystem {
            record: FsRecord::Token { filesystem: None },
            ..
        }
    )));
    // A member that recorded ext4 beside a half-made one: data; refuse.
    let m = refused(plan4(&obs(vec![
        member("s1", 0, 2, Some("ext4")),
        half_made(),
    ])));
    assert!(m.contains("member(s) 2"), "{m}");
}

#[test]
fn a_member_mapping_open_elsewhere_refuses() {
    let mut o = obs((0..2).map(|i| member("s1", i, 2, Some("ext4"))).collect());
    o.members[0] = Mapping::Open {
        devno: member_dm(0),
        on: vec![devno(1)],
        dm_uuid: Some("CRYPT-LUKS2-u-secretfs-0".into()),
    };
    assert!(refused(plan4(&o)).contains("not on /dev/nvme0n1"));
}

#[test]
fn the_single_planner_refuses_one_member_alone() {
    let mut o = super::tests::base(member("s1", 1, 4, Some("ext4")));
    o.device.content = Some(member("s1", 1, 4, Some("ext4")));
    let m = refused(plan(&disk_input(), &o));
    assert!(m.contains("member 2 of 4 of the striped set s1"), "{m}");
}
