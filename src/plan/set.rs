//! The plan of `up` over several disks: one volume striped over all of
//! them.
//!
//! Layout: one LUKS2 per member (each with its own header, token and
//! volume key, all opened by the same passphrase: one key unwrap per
//! boot) and a dm-stripe over the open members, made with the
//! devicemapper crate. Each member's token says which set it belongs to,
//! its index and the member count, so the set is re-assembled in the
//! tokens' order whatever names or order the disks come up with. The
//! bench case `bench_5_set` measures this layout against dm-stripe over
//! the raw disks with one LUKS2 on top, and the chunk size.
//!
//! | disks hold                                          | plan                          |
//! |-----------------------------------------------------|-------------------------------|
//! | every member of one set, each once, all ready       | open each, stripe, mount      |
//! | ... already open, striped and mounted               | nothing ("already up")        |
//! | all blank (or half-made headers of ours)            | format all, mark ready, open, stripe, mkfs, mount |
//! | ready members with no filesystem + half-made ones   | the same (its making stopped before data) |
//! | members of one set, and blank disks                 | refuse (exit 3): names the missing members |
//! | members of one set, but not all of them             | refuse: names the missing members |
//! | members of two sets                                 | refuse                        |
//! | a single-disk volume of ours, the rest blank (`auto`) | `lone_volume`: keep that volume, the blank disks unused |
//! | a single-disk volume of ours among the disks        | refuse                        |
//! | anything foreign (a set layout this build does not know) | refuse; `--force`: wipe every non-blank disk, make a new set |
//! | members that disagree on the chunk                  | refuse; `--force` as above    |
//! | a damaged LUKS header, a busy or partition disk     | refuse, even with `--force`   |
//! | a read-only disk (for a new set)                    | refuse                        |
//! | an ephemeral set, not all open (any key mode)       | close the open members, format all again, open, stripe, mkfs, mount |
//! | a closed ephemeral set's members beside half-made headers or blank disks (its remake stopped) | the same |
//! | an ephemeral set all open, without `--ephemeral`; a kept-key member with it | refuse |
//!
//! `--force` never mixes: it makes a new set of every named disk, and only
//! when every one of them is writable and not held.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::up::{disk, filesystem_steps, key_mode, mount_point, purpose};
use super::{
    bad, classify, refuse, volume_fs, Class, Dev, FsRecord, Geometry, MemberToOpen, NewHeader,
    NewMember, Plan, Planned, Refusal, Step, Todo,
};
use super::{sector_size_for, PlanInput, MIN_SIZE};
use crate::luks::token::Place;
use crate::names;
use crate::observe::{Mapping, SetObserved};
use crate::settings::Target;

/// The stripe's chunk size: 512 KiB, mdadm's default (`bench_5_set`
/// compares 64 KiB and 2 MiB).
pub const CHUNK: u64 = 512 << 10;

/// What the disks hold, together.
enum Verdict {
    /// Every member of one set: disk index for each member, in member order.
    Assemble {
        order: Vec<usize>,
        fs: Option<String>,
        /// The stripe's chunk size, as the members' tokens record it.
        chunk: u64,
    },
    /// A new set over every disk; `wipe` lists what `--force` erases.
    Create {
        again: Vec<bool>,
        wipe: Vec<(usize, String)>,
    },
}

/// `--disk auto` on an instance upgraded from a secretfs that used one
/// disk: when exactly one of the disks holds a single-disk volume of ours
/// and every other disk is blank, its index (`up` keeps that volume and
/// leaves the blank disks unused). Named disks (`--disk A --disk B`) never
/// take this path: there a single-disk volume among them is a refusal.
pub fn lone_volume(obs: &SetObserved) -> Option<usize> {
    let classes: Vec<Class> = obs
        .disks
        .iter()
        .map(|d| d.content.as_ref().map_or(Class::Blank, classify))
        .collect();
    let single = classes
        .iter()
        .position(|c| matches!(c, Class::Ours { place: None, .. }))?;
    let rest_blank = classes
        .iter()
        .enumerate()
        .all(|(i, c)| i == single || *c == Class::Blank);
    rest_blank.then_some(single)
}

/// Maps the observed disks to a plan for `up` of a set. `new_set` is the
/// id a new set gets.
pub fn plan_set(input: &PlanInput, obs: &SetObserved, new_set: &str) -> Result<Plan, Refusal> {
    let Target::Disks(paths) = &input.target else {
        return bad("internal: plan_set plans several disks");
    };
    let n = paths.len();
    if n < 2 || obs.disks.len() != n || obs.members.len() != n {
        return bad("internal: plan_set needs at least two observed disks");
    }
    let name = &input.name;
    let shown = |i: usize| paths[i].display().to_string();

    // 1. Every disk on its own: there, whole, not in use, not damaged.
    let mut sizes = Vec::new();
    let mut devnos = BTreeSet::new();
    for (i, d) in obs.disks.iter().enumerate() {
        let (size, logical_block) = disk(&shown(i), &d.target)?;
        if let Some(b) = d.block() {
            if !devnos.insert(b.devno) {
                return bad(format!(
                    "{} is the same disk as another --disk ({}): name each disk once",
                    shown(i),
                    b.devno
                ));
            }
        }
        if !d.busy.is_empty() {
            return refuse(format!("{} is in use: {}", shown(i), d.busy.join("; ")));
        }
        sizes.push((size, logical_block));
    }
    let classes: Vec<Class> = obs
        .disks
        .iter()
        .map(|d| d.content.as_ref().map_or(Class::Blank, classify))
        .collect();
    for (i, c) in classes.iter().enumerate() {
        if let Class::Damaged(what) = c {
            return refuse(format!(
                "{} holds {what}: inspect it with `cryptsetup luksDump {}`; secretfs will not format over it",
                shown(i),
                shown(i)
            ));
        }
    }

    let all_open = obs
        .members
        .iter()
        .all(|m| matches!(m, Mapping::Open { .. }));
    let mut ephemeral_set = false;
    for (i, c) in classes.iter().enumerate() {
        if let Class::Ours {
            ephemeral, swap, ..
        } = c
        {
            purpose(&shown(i), *swap, input.inside)?;
            key_mode(&shown(i), *ephemeral, input.ephemeral, all_open)?;
            ephemeral_set |= *ephemeral;
        }
    }

    // 2. What they hold together.
    let mut notes = Vec::new();
    // An ephemeral set whose members are not all open lost their keys with
    // their mappings (a reboot, `down`, or a kill before the last member
    // was open): the members still open are closed and the set is made
    // anew over the same disks.
    let recreate = ephemeral_set && !all_open;
    let verdict = match together(&classes, n, &shown) {
        Ok(Verdict::Assemble { .. }) if recreate => {
            notes.push(format!(
                "the disks hold an ephemeral secretfs set that is not open: its keys died with its \
                 mappings (a reboot, or `down`), so nothing can read it; making it anew over all {n}"
            ));
            Verdict::Create {
                again: vec![true; n],
                wipe: Vec::new(),
            }
        }
        Ok(v) => v,
        // A remake of a closed ephemeral set stopped part-way (killed
        // while the members' headers were written one after another): the
        // disks hold its old members, whose keys are gone, beside new
        // half-made headers or blank disks. Nothing on them can be read
        // again: the set is made anew, as it would have been.
        Err(why) if recreate && classes.iter().all(keyless) => {
            notes.push(format!(
                "{why}, but every disk holds a member of a closed ephemeral set, a half-made \
                 header or nothing: no key opens any of it; making the set anew over all {n}"
            ));
            Verdict::Create {
                again: classes.iter().map(|c| *c != Class::Blank).collect(),
                wipe: Vec::new(),
            }
        }
        Err(why) if input.force => {
            notes.push(format!("--force: {why}; making a new set of all {n} disks"));
            let wipe = classes
                .iter()
                .enumerate()
                .filter(|(_, c)| !matches!(c, Class::Blank | Class::HalfMade { .. }))
                .map(|(i, c)| (i, describe(c)))
                .collect();
            Verdict::Create {
                again: classes
                    .iter()
                    .map(|c| matches!(c, Class::HalfMade { .. }))
                    .collect(),
                wipe,
            }
        }
        Err(why) => {
            return refuse(format!(
                "{why}; secretfs touches none of them (pass --force to make a new set of all {n}, destroying what they hold)"
            ))
        }
    };

    let mut steps = Vec::new();
    let mut push = |step, todo| steps.push(Planned { step, todo });
    let member_names: Vec<String> = (0..n as u32).map(|i| names::member_name(name, i)).collect();
    let mapper = names::mapper_path(name);
    // The geometry of an assembled set is the one its tokens record (a
    // later release may make new sets with another chunk); CHUNK is only
    // for new sets.
    let (order, first_format, record, forced, chunk) = match verdict {
        Verdict::Assemble { order, fs, chunk } => (
            order,
            false,
            FsRecord::Token { filesystem: fs },
            None,
            chunk,
        ),
        Verdict::Create { again, wipe } => {
            if let Some(i) = obs.disks.iter().position(|d| d.read_only) {
                return refuse(format!(
                    "{} is read-only: a new set cannot be written (no disk was touched)",
                    shown(i)
                ));
            }
            if let Some(i) = sizes.iter().position(|(s, _)| *s < MIN_SIZE) {
                return bad(format!(
                    "{} is only {} bytes; every member needs at least {} MiB",
                    shown(i),
                    sizes[i].0,
                    MIN_SIZE >> 20
                ));
            }
            let total: u64 = sizes.iter().map(|(s, _)| s).sum();
            if total < input.min_size() {
                return bad(format!(
                    "the {n} disks hold {} MiB together; {}",
                    total >> 20,
                    input.min_size_needs()
                ));
            }
            if recreate {
                close_open_members(obs, &member_names, &shown, &mut push)?;
            }
            let forced = (!wipe.is_empty()).then(|| {
                wipe.iter()
                    .map(|(i, w)| format!("{w} on {}", shown(*i)))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            for (i, what) in wipe {
                push(
                    Step::WipeSignatures {
                        dev: dev(paths, i),
                        found: what,
                    },
                    Todo::WillDo,
                );
            }
            let sector_size = sizes
                .iter()
                .map(|(s, lb)| sector_size_for(*s, *lb))
                .min()
                .unwrap_or(512);
            push(
                Step::FormatMembers {
                    members: (0..n)
                        .map(|i| NewMember {
                            dev: dev(paths, i),
                            member: i as u32,
                            again: again[i],
                        })
                        .collect(),
                    header: NewHeader {
                        label: name.clone(),
                        sector_size,
                        pbkdf: input.pbkdf,
                        no_workqueues: input.workqueue_flags,
                        discard: input.discard,
                        swap: false,
                        disk_index: None,
                    },
                    set: new_set.to_string(),
                    chunk: CHUNK,
                },
                Todo::WillDo,
            );
            push(
                Step::MarkReady {
                    devs: (0..n).map(|i| dev(paths, i)).collect(),
                },
                Todo::WillDo,
            );
            ((0..n).collect(), true, FsRecord::New, forced, CHUNK)
        }
    };

    // 3. Open every member not open yet, in member order, in one step.
    let mut open_members = Vec::new();
    let mut to_open = Vec::new();
    for (m, &i) in order.iter().enumerate() {
        let disk_devno = obs.disks[i].block().map(|b| b.devno);
        let open = match &obs.members[m] {
            Mapping::Absent | Mapping::Unavailable { .. } => false,
            // Closed by the steps above.
            Mapping::Open { .. } if recreate => false,
            mm @ Mapping::Open { on, .. } => {
                if !mm.is_luks2() || disk_devno.is_none() || on.as_slice() != [disk_devno.unwrap()]
                {
                    return refuse(format!(
                        "{} is already open, but not on {} (member {} of the set): close it first",
                        names::mapper_path(&member_names[m]).display(),
                        shown(i),
                        m + 1
                    ));
                }
                if first_format {
                    return refuse(format!(
                        "{} is open on {}, which holds no complete set: the two disagree",
                        names::mapper_path(&member_names[m]).display(),
                        shown(i)
                    ));
                }
                if let Some(d) = mm.devno() {
                    open_members.push(d);
                }
                true
            }
        };
        if !open {
            to_open.push(MemberToOpen {
                dev: dev(paths, i),
                name: member_names[m].clone(),
            });
        }
    }
    push(
        Step::OpenMembers {
            members: to_open,
            discard: input.discard,
        },
        if open_members.len() == order.len() {
            Todo::AlreadyDone
        } else {
            Todo::WillDo
        },
    );

    // 4. The stripe.
    let set_id = match (&record, order.first()) {
        (FsRecord::New, _) => new_set.to_string(),
        (_, Some(&i)) => match &classes[i] {
            Class::Ours { place: Some(p), .. } => p.set.clone(),
            _ => return bad("internal: an assembled member without its place"),
        },
        _ => return bad("internal: an empty set"),
    };
    let stripe_open = match &obs.stripe {
        Mapping::Absent | Mapping::Unavailable { .. } => false,
        s @ Mapping::Open { on, .. } => {
            let mut want = open_members.clone();
            want.sort();
            if s.set_id() != Some(set_id.as_str())
                || on.as_slice() != want.as_slice()
                || want.len() != n
            {
                return refuse(format!(
                    "{} exists and is not the stripe of this set over its open members: choose another --name, or take it down",
                    mapper.display()
                ));
            }
            true
        }
    };
    push(
        Step::CreateStripe {
            name: name.clone(),
            members: member_names.iter().map(|m| names::mapper_path(m)).collect(),
            set: set_id.clone(),
            chunk,
        },
        if stripe_open {
            Todo::AlreadyDone
        } else {
            Todo::WillDo
        },
    );
    // 5. The filesystem, aligned to the stripe.
    let fs = volume_fs(input.want_fs(), &record, &format!("set {set_id}"))?;
    steps.extend(filesystem_steps(
        input,
        first_format,
        stripe_open,
        obs.inner.as_deref(),
        mapper.clone(),
        order.iter().map(|&i| dev(paths, i)).collect(),
        (record, fs),
        Some(Geometry {
            chunk,
            members: n as u32,
        }),
    )?);

    // 6. The mount point.
    let our_devno = obs.stripe.devno().filter(|_| stripe_open);
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

fn dev(paths: &[PathBuf], i: usize) -> Dev {
    Dev::Path {
        path: paths[i].clone(),
    }
}

/// What a disk holds, in a refusal.
pub(super) fn describe(c: &Class) -> String {
    match c {
        Class::Foreign(w) | Class::Damaged(w) => w.clone(),
        Class::Ours { place: None, .. } => "a single-disk secretfs volume".into(),
        Class::Ours { place: Some(p), .. } => {
            format!(
                "member {} of {} of the secretfs set {}",
                p.member + 1,
                p.members,
                p.set
            )
        }
        Class::Blank => "no data (blank)".into(),
        Class::HalfMade { .. } => "a half-made secretfs header".into(),
    }
}

/// Closes the members of an ephemeral set still open (their set is made
/// anew), each only if it is a LUKS2 mapping on one of the named disks.
fn close_open_members(
    obs: &SetObserved,
    member_names: &[String],
    shown: &dyn Fn(usize) -> String,
    push: &mut impl FnMut(Step, Todo),
) -> Result<(), Refusal> {
    let disks: Vec<_> = obs
        .disks
        .iter()
        .filter_map(|d| d.block().map(|b| b.devno))
        .collect();
    for (m, mm) in obs.members.iter().enumerate() {
        let Mapping::Open { on, .. } = mm else {
            continue;
        };
        if !mm.is_luks2() || on.len() != 1 || !disks.contains(&on[0]) {
            return refuse(format!(
                "{} is open, but not on any of the disks named ({}): close it first",
                names::mapper_path(&member_names[m]).display(),
                (0..obs.disks.len())
                    .map(shown)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        push(
            Step::Close {
                name: member_names[m].clone(),
            },
            Todo::WillDo,
        );
    }
    Ok(())
}

/// Blank, half-made, or a member of an ephemeral set: what a closed
/// ephemeral set's disks may hold when its remake was stopped part-way.
fn keyless(c: &Class) -> bool {
    matches!(
        c,
        Class::Blank
            | Class::HalfMade { .. }
            | Class::Ours {
                ephemeral: true,
                ..
            }
    )
}

/// What the disks hold together, or why they cannot be used as they are.
fn together(
    classes: &[Class],
    n: usize,
    shown: &dyn Fn(usize) -> String,
) -> Result<Verdict, String> {
    let fresh = |c: &Class| matches!(c, Class::Blank | Class::HalfMade { .. });
    if classes.iter().all(fresh) {
        return Ok(Verdict::Create {
            again: classes
                .iter()
                .map(|c| matches!(c, Class::HalfMade { .. }))
                .collect(),
            wipe: Vec::new(),
        });
    }
    if let Some(i) = classes
        .iter()
        .position(|c| matches!(c, Class::Foreign(_) | Class::Ours { place: None, .. }))
    {
        return Err(format!("{} holds {}", shown(i), describe(&classes[i])));
    }
    // Only members of sets, blank disks and half-made headers are left.
    let members: Vec<(usize, &Place, &FsRecord)> = classes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Class::Ours {
                place: Some(p),
                record,
                ..
            } => Some((i, p, record)),
            _ => None,
        })
        .collect();
    let sets: BTreeSet<&str> = members.iter().map(|(_, p, _)| p.set.as_str()).collect();
    if sets.len() > 1 {
        let list: Vec<String> = members
            .iter()
            .map(|(i, p, _)| format!("{} is in set {}", shown(*i), p.set))
            .collect();
        return Err(format!(
            "the disks belong to different sets ({})",
            list.join(", ")
        ));
    }
    let (_, first, _) = members[0];
    let want = first.members as usize;
    let mut order: Vec<Option<usize>> = vec![None; want.max(n)];
    for (i, p, _) in &members {
        let m = p.member as usize;
        if p.chunk != first.chunk {
            return Err(format!(
                "{} records a stripe chunk of {} bytes, another member of set {} {}: \
                 the members disagree on the set's geometry",
                shown(*i),
                p.chunk,
                first.set,
                first.chunk
            ));
        }
        if p.members != first.members || m >= want {
            return Err(format!(
                "{} says member {} of {}, but another member says {} members",
                shown(*i),
                m + 1,
                p.members,
                first.members
            ));
        }
        if let Some(j) = order[m] {
            return Err(format!(
                "{} and {} both say they are member {} of set {}",
                shown(j),
                shown(*i),
                m + 1,
                first.set
            ));
        }
        order[m] = Some(*i);
    }
    let filesystem = members.iter().find_map(|(_, _, r)| match r {
        FsRecord::Token { filesystem } => filesystem.clone(),
        _ => None,
    });
    let half_made = classes.iter().any(|c| matches!(c, Class::HalfMade { .. }));
    let blank: Vec<usize> = (0..n).filter(|&i| classes[i] == Class::Blank).collect();
    if half_made && blank.is_empty() && filesystem.is_none() && want == n {
        // Stopped while marking the members ready: never held data.
        return Ok(Verdict::Create {
            again: classes.iter().map(|c| !matches!(c, Class::Blank)).collect(),
            wipe: Vec::new(),
        });
    }
    let missing: Vec<String> = (0..want)
        .filter(|&m| order[m].is_none())
        .map(|m| format!("{}", m + 1))
        .collect();
    if !missing.is_empty() || want != n || !blank.is_empty() || half_made {
        let mut why = format!(
            "set {} has {want} members, and member(s) {} of it are not among the disks",
            first.set,
            if missing.is_empty() {
                "-".to_string()
            } else {
                missing.join(", ")
            }
        );
        let others: Vec<String> = (0..n)
            .filter(|&i| !matches!(classes[i], Class::Ours { .. }))
            .map(|i| format!("{} holds {}", shown(i), describe(&classes[i])))
            .collect();
        if !others.is_empty() {
            why.push_str(&format!(" ({})", others.join("; ")));
        }
        if want != n {
            why.push_str(&format!("; {n} disks were named"));
        }
        return Err(why);
    }
    Ok(Verdict::Assemble {
        order: order.into_iter().map(|o| o.unwrap()).collect(),
        fs: filesystem,
        chunk: first.chunk,
    })
}
