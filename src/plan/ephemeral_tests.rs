//! The rows of `up --ephemeral` in the classification, up and set tables,
//! without root.

use super::set_tests::{devno, input, member_dm, obs, STRIPE};
use super::tests::{base, disk_input, header, mounted, open_on, pending, refused, sig, todo, VDB};
use super::*;
use crate::luks::header::TokenFound;
use crate::luks::token::{Place, Token, TokenState};
use crate::observe::{Content, Mapping, MountState};

fn ephemeral_input() -> PlanInput {
    PlanInput {
        ephemeral: true,
        ..disk_input()
    }
}

/// An ephemeral volume's header: no key slot, `fs` recorded.
fn ephemeral(state: TokenState, fs: Option<&str>) -> Content {
    let mut t = Token::formatting("u").ephemeral();
    t.state = state;
    t.filesystem = fs.map(str::to_string);
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        0,
    )
}

/// A kept-key volume of ours, ready, ext4.
fn kept() -> Content {
    let mut t = Token::formatting("u");
    t.state = TokenState::Ready;
    t.filesystem = Some("ext4".into());
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        1,
    )
}

#[test]
fn an_ephemeral_header_is_ours_without_a_key_slot() {
    assert!(matches!(
        classify(&ephemeral(TokenState::Ready, Some("ext4"))),
        Class::Ours {
            ephemeral: true,
            place: None,
            swap: false,
            record: FsRecord::Token {
                filesystem: Some(_)
            }
        }
    ));
    // Stopped before it was ready: half-made, as any other header.
    assert!(matches!(
        classify(&ephemeral(TokenState::Formatting, None)),
        Class::HalfMade { .. }
    ));
    assert!(matches!(
        classify(&kept()),
        Class::Ours {
            ephemeral: false,
            ..
        }
    ));
}

#[test]
fn a_blank_disk_gets_the_pipeline_of_a_kept_key() {
    let p = plan(&ephemeral_input(), &base(Content::blank())).unwrap();
    assert!(p.first_format && p.needs_key());
    let kept = plan(&disk_input(), &base(Content::blank())).unwrap();
    assert_eq!(pending(&p), pending(&kept));
}

#[test]
fn open_and_mounted_is_a_noop_and_open_needs_only_the_mount() {
    let mut o = base(ephemeral(TokenState::Ready, Some("ext4")));
    o.mapping = open_on(VDB);
    o.inner = Some(vec![sig("ext4")]);
    o.mount = MountState::Dir { empty: true };
    let p = plan(&ephemeral_input(), &o).unwrap();
    assert!(!p.needs_key() && !p.first_format);
    assert_eq!(pending(&p), vec!["mount"]);
    mounted(&mut o);
    assert!(plan(&ephemeral_input(), &o).unwrap().is_noop());
}

#[test]
fn closed_after_a_reboot_it_is_made_anew() {
    let o = base(ephemeral(TokenState::Ready, Some("ext4")));
    let p = plan(&ephemeral_input(), &o).unwrap();
    assert!(p.first_format && p.needs_key() && p.forced.is_none());
    assert!(matches!(p.steps[0].step, Step::Format { again: true, .. }));
    assert_eq!(todo(&p, "make_filesystem"), Some(Todo::WillDo));
    assert!(
        p.steps.iter().any(|s| matches!(
            s.step,
            Step::MakeFilesystem {
                record: FsRecord::New,
                ..
            }
        )),
        "{p:?}"
    );
    assert!(
        p.notes[0].contains("its key died with its mapping"),
        "{p:?}"
    );
    // Never on a read-only disk.
    let mut ro = o.clone();
    ro.device.read_only = true;
    assert!(refused(plan(&ephemeral_input(), &ro)).contains("read-only"));
}

#[test]
fn key_modes_cross_only_over_a_closed_ephemeral_volume() {
    // An ephemeral volume without --ephemeral: closed, it is made anew
    // with the kept key (nothing in it can be read); open, refused.
    let closed = base(ephemeral(TokenState::Ready, Some("ext4")));
    let p = plan(&disk_input(), &closed).unwrap();
    assert!(p.first_format && p.needs_key() && p.forced.is_none());
    assert!(matches!(p.steps[0].step, Step::Format { again: true, .. }));
    assert!(
        p.notes[0].contains("its key died with its mapping"),
        "{p:?}"
    );
    let mut open = closed.clone();
    open.mapping = open_on(VDB);
    open.inner = Some(vec![sig("ext4")]);
    mounted(&mut open);
    let m = refused(plan(&disk_input(), &open));
    assert!(m.contains("`secretfs down` it first"), "{m}");
    // A volume whose key is kept, with --ephemeral: refused, --force too.
    for force in [false, true] {
        let input = PlanInput {
            force,
            ..ephemeral_input()
        };
        let m = refused(plan(&input, &base(kept())));
        assert!(m.contains("--ephemeral would make a new volume"), "{m}");
    }
}

/// Member `m` of an ephemeral set of `n`, ready, ext4.
fn eph_member(m: u32, n: u32) -> Content {
    let mut t = Token::member(
        "u",
        &Place {
            set: "e1".into(),
            member: m,
            members: n,
            chunk: CHUNK,
        },
    )
    .ephemeral();
    t.state = TokenState::Ready;
    t.filesystem = Some("ext4".into());
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        0,
    )
}

#[test]
fn a_closed_ephemeral_set_is_made_anew_an_open_one_is_kept() {
    let set_input = PlanInput {
        ephemeral: true,
        ..input(2)
    };
    let mut o = obs(vec![eph_member(1, 2), eph_member(0, 2)]);
    let p = plan_set(&set_input, &o, "new").unwrap();
    assert!(p.first_format);
    let Step::FormatMembers { members, set, .. } = &p.steps[0].step else {
        panic!("{p:?}")
    };
    assert_eq!(set, "new");
    assert!(members.iter().all(|m| m.again), "{members:?}");
    assert!(p.notes[0].contains("making it anew"), "{p:?}");
    // Assembled and mounted (members in member order): nothing to do.
    for (m, disk) in [(0, 1), (1, 0)] {
        o.members[m] = Mapping::Open {
            devno: member_dm(m),
            on: vec![devno(disk)],
            dm_uuid: Some(format!("CRYPT-LUKS2-u-secretfs-{m}")),
        };
    }
    o.stripe = Mapping::Open {
        devno: STRIPE,
        on: vec![member_dm(0), member_dm(1)],
        dm_uuid: Some(format!("{}e1", names::DM_UUID_PREFIX_SET)),
    };
    o.inner = Some(vec![sig("ext4")]);
    o.mount = MountState::Mounted {
        devno: STRIPE,
        fstype: "ext4".into(),
        source: "/dev/mapper/secretfs".into(),
    };
    assert!(plan_set(&set_input, &o, "new").unwrap().is_noop());
    // Open, without --ephemeral it is refused; a kept-key set with it too.
    let m = refused(plan_set(&input(2), &o, "new"));
    assert!(m.contains("`secretfs down` it first"), "{m}");
    let kept_set = obs(vec![
        super::set_tests::member("s1", 0, 2, Some("ext4")),
        super::set_tests::member("s1", 1, 2, Some("ext4")),
    ]);
    let m = refused(plan_set(&set_input, &kept_set, "new"));
    assert!(m.contains("--ephemeral would make a new volume"), "{m}");
}

#[test]
fn a_set_killed_before_its_last_member_opened_is_closed_and_made_anew() {
    let set_input = PlanInput {
        ephemeral: true,
        ..input(2)
    };
    // Member 0 (on the second disk) open, member 1 not: its key is gone.
    let mut o = obs(vec![eph_member(1, 2), eph_member(0, 2)]);
    o.members[0] = Mapping::Open {
        devno: member_dm(0),
        on: vec![devno(1)],
        dm_uuid: Some("CRYPT-LUKS2-u-secretfs-0".into()),
    };
    for i in [set_input.clone(), input(2)] {
        let p = plan_set(&i, &o, "new").unwrap();
        assert!(p.first_format, "{p:?}");
        let names: Vec<_> = p.steps.iter().map(|s| s.step.name()).collect();
        assert_eq!(names[..2], ["close", "format_members"], "{p:?}");
        assert!(
            matches!(&p.steps[0].step, Step::Close { name } if name == "secretfs-0"),
            "{p:?}"
        );
        assert!(
            p.steps.iter().any(|s| s.todo == Todo::WillDo
                && matches!(&s.step, Step::OpenMembers { members, .. } if members.len() == 2)),
            "{p:?}"
        );
    }
    // A member mapping open on a disk not named is never closed.
    o.members[0] = Mapping::Open {
        devno: member_dm(0),
        on: vec![devno(7)],
        dm_uuid: Some("CRYPT-LUKS2-u-secretfs-0".into()),
    };
    let m = refused(plan_set(&set_input, &o, "new"));
    assert!(m.contains("not on any of the disks named"), "{m}");
}

#[test]
fn a_remake_killed_between_the_members_headers_is_made_anew() {
    let set_input = PlanInput {
        ephemeral: true,
        ..input(2)
    };
    // The first member's new header written (half-made), the second disk
    // still the old closed set's member; and the other way round.
    for contents in [
        vec![super::set_tests::half_made(), eph_member(1, 2)],
        vec![eph_member(0, 2), super::set_tests::half_made()],
    ] {
        let p = plan_set(&set_input, &obs(contents), "new").unwrap();
        assert!(p.first_format, "{p:?}");
        let Step::FormatMembers { members, .. } = &p.steps[0].step else {
            panic!("{p:?}")
        };
        assert!(members.iter().all(|m| m.again), "{members:?}");
        assert!(p.notes[0].contains("making the set anew"), "{p:?}");
    }
    // Beside a disk that holds anything else, it is refused as before.
    let m = refused(plan_set(
        &set_input,
        &obs(vec![
            eph_member(0, 2),
            super::set_tests::member("s1", 1, 2, Some("ext4")),
        ]),
        "new",
    ));
    assert!(!m.is_empty(), "{m}");
}

// The rows of `secretfs swap`: an ephemeral volume with swap inside.

fn swap_input() -> PlanInput {
    PlanInput {
        inside: crate::settings::Use::Swap { priority: Some(7) },
        ..ephemeral_input()
    }
}

/// The header of `secretfs swap`'s volume.
fn swap_header() -> Content {
    let mut t = Token::formatting("u").swap();
    t.state = TokenState::Ready;
    t.filesystem = Some("swap".into());
    header(
        TokenFound::Present {
            id: 0,
            token: Box::new(t),
        },
        0,
    )
}

#[test]
fn swap_on_a_blank_disk_is_made_and_enabled_with_no_mount() {
    let p = plan(&swap_input(), &base(Content::blank())).unwrap();
    assert!(p.first_format && p.needs_key());
    assert_eq!(pending(&p), vec!["format", "open", "make_swap", "swap_on"]);
    let Step::Format { header, .. } = &p.steps[0].step else {
        panic!("{p:?}")
    };
    assert!(header.swap);
    assert!(
        matches!(
            p.steps[3].step,
            Step::SwapOn {
                priority: Some(7),
                ..
            }
        ),
        "{p:?}"
    );
    assert!(matches!(
        classify(&swap_header()),
        Class::Ours {
            swap: true,
            ephemeral: true,
            ..
        }
    ));
}

#[test]
fn swap_enabled_is_a_noop_open_is_enabled_closed_is_made_anew() {
    let mut o = base(swap_header());
    o.mapping = open_on(VDB);
    o.inner = Some(vec![sig("swap")]);
    o.swap_on = true;
    assert!(plan(&swap_input(), &o).unwrap().is_noop());
    // Open, made, not enabled (killed before swapon, or swapoff by hand).
    o.swap_on = false;
    let p = plan(&swap_input(), &o).unwrap();
    assert_eq!(pending(&p), vec!["swap_on"]);
    // Open, killed before mkswap finished.
    o.inner = Some(vec![]);
    assert_eq!(
        pending(&plan(&swap_input(), &o).unwrap()),
        vec!["make_swap", "swap_on"]
    );
    // Closed (a reboot): its key is gone; made anew.
    let p = plan(&swap_input(), &base(swap_header())).unwrap();
    assert!(p.first_format);
    assert!(matches!(p.steps[0].step, Step::Format { again: true, .. }));
    assert_eq!(pending(&p), vec!["format", "open", "make_swap", "swap_on"]);
}

#[test]
fn swap_and_volumes_never_take_each_other() {
    // up (any key mode) over the swap header, closed or open.
    let mut open = base(swap_header());
    open.mapping = open_on(VDB);
    for o in [base(swap_header()), open] {
        for input in [disk_input(), ephemeral_input()] {
            let m = refused(plan(&input, &o));
            assert!(m.contains("holds the swap space of `secretfs swap`"), "{m}");
        }
    }
    // swap over a volume: kept key, ephemeral, open or closed.
    for c in [kept(), ephemeral(TokenState::Ready, Some("ext4"))] {
        let m = refused(plan(&swap_input(), &base(c)));
        assert!(m.contains("swap never takes one"), "{m}");
    }
    // A set with the swap disk among its disks.
    let set_input = PlanInput {
        ephemeral: true,
        ..input(2)
    };
    let m = refused(plan_set(
        &set_input,
        &obs(vec![Content::blank(), swap_header()]),
        "new",
    ));
    assert!(m.contains("holds the swap space of `secretfs swap`"), "{m}");
}
