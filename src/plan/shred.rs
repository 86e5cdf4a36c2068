//! The plan of `shred`: every key slot and both LUKS2 header copies of a
//! volume erased, on each device it sits on (each member of a set).
//!
//! Two ways in, one result:
//! - the volume is **open** ([`plan_shred`]): `down`, then the headers of
//!   every device below erased. That it opened proves the headers ours.
//! - the volume is **closed** ([`plan_shred_closed`], `shred --disk` or
//!   `--file`): the devices are named, and each must hold a header with
//!   our token (proven by the token, not by opening: a volume whose key is
//!   gone can still be shredded) or read as blank already (a set shredded
//!   in part: the run that was stopped between members is finished).
//!   Anything else on any of them, or a device in use, refuses the whole
//!   run (exit 3) before anything is erased.
//!
//! A member the plan cannot find (an open set's member mapping with no
//! device below; a member index of a closed set that no given device
//! holds and no blank one accounts for) is listed in
//! [`ShredPlan::unresolved`]: the others are erased, and the run then
//! fails (exit 1) naming each, instead of reporting success.
//!
//! | given devices hold                     | plan                          |
//! |----------------------------------------|-------------------------------|
//! | our token (one volume or one set)      | erase each                    |
//! | our token + blank ones                 | erase the ours, blank noted   |
//! | only blank ones                        | nothing to do (already gone)  |
//! | anything else on any                   | refused (exit 3), none erased |
//! | two volumes, or two sets               | refused (exit 3)              |
//! | one member index twice                 | refused (exit 3)              |
//! | any in use (mounted, held, attached)   | refused (exit 3)              |
//! | set members missing, too few blank     | erase the found, exit 1       |

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use super::down::{below, plan_down, DownObserved};
use super::{refuse, Plan, Planned, Refusal, Step, Todo};
use crate::names;
use crate::observe::Mapping;

/// A shred's plan, and what it could not resolve.
#[derive(Debug)]
pub struct ShredPlan {
    pub plan: Plan,
    /// Given devices that read as blank already.
    pub already_blank: Vec<PathBuf>,
    /// Members of the volume that were not found: named in the failure
    /// once the others are erased.
    pub unresolved: Vec<String>,
}

impl ShredPlan {
    /// The devices (or backing files) whose headers the plan erases.
    pub fn targets(&self) -> Vec<PathBuf> {
        self.plan
            .steps
            .iter()
            .filter_map(|p| match &p.step {
                Step::Shred { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect()
    }
}

fn shred_step(target: PathBuf, file: bool) -> Planned {
    Planned {
        step: Step::Shred { target, file },
        todo: Todo::WillDo,
    }
}

/// Maps observed state to the crypto-shred of the open volume `name`:
/// `down`, then the key slots and headers of every device below (each
/// member of a set; the backing file of a loop device, which autoclear
/// detaches at the close) erased, before any loop device secretfs
/// attached is detached.
pub fn plan_shred(name: &str, obs: &DownObserved) -> Result<ShredPlan, Refusal> {
    if !matches!(obs.mapping, Mapping::Open { .. }) {
        return refuse(format!(
            "{} is not open: shred erases the headers of an open volume, or of a closed one named \
             with --disk/--file (its headers proven ours by their tokens)",
            names::mapper_path(name).display()
        ));
    }
    let mut plan = plan_down(name, obs)?;
    let below = below(obs);
    let unresolved: Vec<String> = obs
        .members
        .iter()
        .filter(|m| m.under.is_empty())
        .map(|m| format!("member mapping {} (no device found below it)", m.name))
        .collect();
    if below.is_empty() {
        return refuse(format!(
            "found no device below {}; nothing to shred",
            names::mapper_path(name).display()
        ));
    }
    let shreds = below.into_iter().map(|u| match &u.loop_dev {
        Some(l) => shred_step(l.file.clone(), true),
        None => shred_step(u.dev.path.clone(), false),
    });
    let at = plan
        .steps
        .iter()
        .position(|p| matches!(p.step, Step::Detach { .. }))
        .unwrap_or(plan.steps.len());
    plan.steps.splice(at..at, shreds.collect::<Vec<_>>());
    Ok(ShredPlan {
        plan,
        already_blank: Vec::new(),
        unresolved,
    })
}

/// A device (or file) given to `shred --disk/--file`, as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShredTarget {
    pub path: PathBuf,
    /// A regular file (loop-backed volume), not a block device.
    pub file: bool,
    /// Why it is in use: mounted, held by a mapping, attached to a loop
    /// device.
    pub busy: Vec<String>,
    pub holds: Holds,
}

/// What a [`ShredTarget`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Holds {
    /// A LUKS2 header with our token (`set`, `member`, `members` when it
    /// is a member of a striped set), or our legacy header.
    Ours {
        uuid: String,
        set: Option<String>,
        member: Option<u32>,
        members: Option<u32>,
    },
    /// Reads as blank: nothing of ours left.
    Blank,
    /// Anything else, described.
    Other(String),
}

/// Maps the devices named to `shred` of the closed volume `name` to the
/// erase of those that hold it (the module's table). `open`: whether the
/// mapping `name` exists.
pub fn plan_shred_closed(
    name: &str,
    open: bool,
    targets: &[ShredTarget],
) -> Result<ShredPlan, Refusal> {
    if open {
        return refuse(format!(
            "{} is open: run `secretfs shred` without --disk/--file, which erases what the open \
             volume sits on",
            names::mapper_path(name).display()
        ));
    }
    for t in targets {
        if let Some(why) = t.busy.first() {
            return refuse(format!(
                "{} is in use ({why}): nothing was erased",
                t.path.display()
            ));
        }
        if let Holds::Other(what) = &t.holds {
            return refuse(format!(
                "{} holds {what}, not a secretfs header: nothing was erased (shred erases only \
                 headers secretfs made)",
                t.path.display()
            ));
        }
    }
    let ours: Vec<&ShredTarget> = targets
        .iter()
        .filter(|t| matches!(t.holds, Holds::Ours { .. }))
        .collect();
    let already_blank: Vec<PathBuf> = targets
        .iter()
        .filter(|t| t.holds == Holds::Blank)
        .map(|t| t.path.clone())
        .collect();
    let volume = |t: &ShredTarget| match &t.holds {
        Holds::Ours { uuid, set, .. } => set.clone().unwrap_or_else(|| uuid.clone()),
        _ => unreachable!("filtered to ours"),
    };
    let volumes: BTreeSet<String> = ours.iter().map(|t| volume(t)).collect();
    if volumes.len() > 1 {
        return refuse(format!(
            "the devices given hold {} volumes ({}): shred one volume at a time; nothing was erased",
            volumes.len(),
            ours.iter()
                .map(|t| format!("{}: {}", t.path.display(), volume(t)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut unresolved = Vec::new();
    let mut members: Vec<(u32, &ShredTarget)> = Vec::new();
    for t in &ours {
        if let Holds::Ours {
            member: Some(m), ..
        } = &t.holds
        {
            if let Some((_, other)) = members.iter().find(|(i, _)| i == m) {
                return refuse(format!(
                    "{} and {} both hold member {m} of the set (a copied header?): nothing was erased",
                    other.path.display(),
                    t.path.display()
                ));
            }
            members.push((*m, t));
        }
    }
    if let Some(Holds::Ours {
        set: Some(set),
        members: Some(n),
        ..
    }) = ours.first().map(|t| &t.holds)
    {
        let found: BTreeSet<u32> = members.iter().map(|(i, _)| *i).collect();
        let missing: Vec<u32> = (0..*n).filter(|i| !found.contains(i)).collect();
        // Blank devices given may be members shredded already.
        if missing.len() > already_blank.len() {
            unresolved.extend(
                missing
                    .iter()
                    .map(|i| format!("member {i} of set {set} (on none of the devices given)")),
            );
        }
    }
    let mut order: Vec<&ShredTarget> = ours;
    order.sort_by_key(|t| match &t.holds {
        Holds::Ours { member, .. } => member.unwrap_or(0),
        _ => 0,
    });
    let mut notes = Vec::new();
    for b in &already_blank {
        notes.push(format!(
            "{} reads as blank already: nothing of a secretfs volume is left on it",
            b.display()
        ));
    }
    Ok(ShredPlan {
        plan: Plan {
            steps: order
                .into_iter()
                .map(|t| shred_step(t.path.clone(), t.file))
                .collect(),
            first_format: false,
            forced: None,
            notes,
        },
        already_blank,
        unresolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str, holds: Holds) -> ShredTarget {
        ShredTarget {
            path: path.into(),
            file: false,
            busy: Vec::new(),
            holds,
        }
    }
    fn single(uuid: &str) -> Holds {
        Holds::Ours {
            uuid: uuid.into(),
            set: None,
            member: None,
            members: None,
        }
    }
    fn member(set: &str, i: u32, n: u32) -> Holds {
        Holds::Ours {
            uuid: format!("{set}-{i}"),
            set: Some(set.into()),
            member: Some(i),
            members: Some(n),
        }
    }
    fn erased(p: &ShredPlan) -> Vec<String> {
        p.targets()
            .iter()
            .map(|t| t.display().to_string())
            .collect()
    }
    fn refusal(r: Result<ShredPlan, Refusal>) -> String {
        match r {
            Err(Refusal::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The module's table, row by row.
    #[test]
    fn a_closed_volume_is_shredded_by_its_tokens() {
        // One volume.
        let p = plan_shred_closed("v", false, &[t("/dev/a", single("u"))]).unwrap();
        assert_eq!(erased(&p), ["/dev/a"]);
        assert!(p.unresolved.is_empty());
        // A whole set, given in any order: erased in member order.
        let p = plan_shred_closed(
            "v",
            false,
            &[
                t("/dev/b", member("s", 1, 2)),
                t("/dev/a", member("s", 0, 2)),
            ],
        )
        .unwrap();
        assert_eq!(erased(&p), ["/dev/a", "/dev/b"]);
        assert!(p.unresolved.is_empty());
        // A set stopped between members: the blank one was shredded.
        let p = plan_shred_closed(
            "v",
            false,
            &[
                t("/dev/a", Holds::Blank),
                t("/dev/b", member("s", 1, 3)),
                t("/dev/c", member("s", 2, 3)),
            ],
        )
        .unwrap();
        assert_eq!(erased(&p), ["/dev/b", "/dev/c"]);
        assert_eq!(p.already_blank, [PathBuf::from("/dev/a")]);
        assert!(p.unresolved.is_empty());
        assert_eq!(p.plan.notes.len(), 1);
        // Only blank ones: nothing to do.
        let p = plan_shred_closed("v", false, &[t("/dev/a", Holds::Blank)]).unwrap();
        assert!(erased(&p).is_empty());
        // Members missing and too few blank devices: the found ones are
        // erased, the missing named.
        let p = plan_shred_closed("v", false, &[t("/dev/b", member("s", 1, 3))]).unwrap();
        assert_eq!(erased(&p), ["/dev/b"]);
        assert_eq!(p.unresolved.len(), 2, "{:?}", p.unresolved);
        assert!(p.unresolved[0].contains("member 0 of set s"));
    }

    #[test]
    fn anything_not_ours_refuses_the_whole_run() {
        let foreign = [
            t("/dev/a", single("u")),
            t("/dev/b", Holds::Other("an ext4 filesystem".into())),
        ];
        let m = refusal(plan_shred_closed("v", false, &foreign));
        assert!(m.contains("/dev/b holds an ext4 filesystem") && m.contains("nothing was erased"));
        let mut busy = t("/dev/a", single("u"));
        busy.busy.push("/dev/a is mounted at /srv".into());
        assert!(refusal(plan_shred_closed("v", false, &[busy])).contains("in use"));
        let two = [t("/dev/a", single("u")), t("/dev/b", single("w"))];
        assert!(refusal(plan_shred_closed("v", false, &two)).contains("2 volumes"));
        let two_sets = [
            t("/dev/a", member("s", 0, 2)),
            t("/dev/b", member("r", 1, 2)),
        ];
        assert!(refusal(plan_shred_closed("v", false, &two_sets)).contains("2 volumes"));
        let twice = [
            t("/dev/a", member("s", 0, 2)),
            t("/dev/b", member("s", 0, 2)),
        ];
        assert!(refusal(plan_shred_closed("v", false, &twice)).contains("both hold member 0"));
        assert!(
            refusal(plan_shred_closed("v", true, &[t("/dev/a", single("u"))])).contains("is open")
        );
    }
}
