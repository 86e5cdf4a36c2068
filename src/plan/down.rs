//! The plan of `down`: unmount every mount of the mapping (or disable
//! its swap space), close it, detach the loop devices secretfs attached
//! (`shred` builds on it: [`super::shred`]).

use std::path::PathBuf;

use serde::Serialize;

use super::{refuse, Plan, Planned, Refusal, Step, Todo};
use crate::names;
use crate::observe::{BlockDev, LoopState, Mapping};

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

/// A member mapping under a set's stripe, for `down`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DownMember {
    pub name: String,
    pub mapping: Mapping,
    pub under: Vec<Under>,
}

/// What `down` decides from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DownObserved {
    pub mapping: Mapping,
    /// Where the mapping is mounted, outermost last.
    pub mounted_at: Vec<PathBuf>,
    /// The mapping is enabled swap space (`secretfs swap`).
    pub swap_on: bool,
    pub under: Vec<Under>,
    /// When the mapping is a set's stripe: its members, by name.
    pub members: Vec<DownMember>,
}

/// Maps observed state to the teardown of `name`: unmount every mount,
/// close the mapping, detach the loop devices secretfs attached. For a
/// set: unmount, remove the stripe, close every member.
pub fn plan_down(name: &str, obs: &DownObserved) -> Result<Plan, Refusal> {
    let mapper = names::mapper_path(name);
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let all_ours = |under: &[Under], m: &std::path::Path| -> Result<(), Refusal> {
        match under.iter().find(|u| !u.ours) {
            Some(u) => refuse(format!(
                "{} sits on {}, which holds {}; not a secretfs volume",
                m.display(),
                u.dev.path.display(),
                u.holds
            )),
            None => Ok(()),
        }
    };
    match &obs.mapping {
        m @ Mapping::Open { .. } if m.is_set() => {
            for mm in &obs.members {
                let p = names::mapper_path(&mm.name);
                if !mm.mapping.is_luks2() {
                    return refuse(format!(
                        "{} sits on {}, which is not a LUKS2 volume; secretfs down leaves it alone",
                        mapper.display(),
                        p.display()
                    ));
                }
                all_ours(&mm.under, &p)?;
            }
            for dir in obs.mounted_at.iter().rev() {
                steps.push(Planned {
                    step: Step::Unmount { dir: dir.clone() },
                    todo: Todo::WillDo,
                });
            }
            steps.push(Planned {
                step: Step::RemoveStripe { name: name.into() },
                todo: Todo::WillDo,
            });
            for mm in &obs.members {
                steps.push(Planned {
                    step: Step::Close {
                        name: mm.name.clone(),
                    },
                    todo: Todo::WillDo,
                });
            }
        }
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
            all_ours(&obs.under, &mapper)?;
            if obs.swap_on {
                steps.push(Planned {
                    step: Step::SwapOff {
                        mapper: mapper.clone(),
                    },
                    todo: Todo::WillDo,
                });
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

/// The devices that hold the volume's LUKS2 headers: the one below a
/// single volume, or those below each member of a set.
pub fn below(obs: &DownObserved) -> Vec<&Under> {
    if obs.members.is_empty() {
        obs.under.iter().collect()
    } else {
        obs.members.iter().flat_map(|m| m.under.iter()).collect()
    }
}
