//! `secretfs down`: unmount, close, detach, in that order.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use tracing::info;

use super::{print_json, require_root};
use crate::cli::DownArgs;
use crate::config;
use crate::exec;
use crate::lock;
use crate::names::{self, under};
use crate::observe::{content, sys};
use crate::plan::{self, Class, DownMember, DownObserved, Refusal, Step, Under};
use crate::settings::Volume;
use crate::signals;

/// How long `down` (and `shred`) waits for another run on the same volume.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Reads what `down` decides from. Read-only, through `root`.
pub fn observe(root: &Path, name: &str) -> Result<DownObserved> {
    let mapping = sys::mapping(root, name);
    let mut mounted_at = Vec::new();
    let mut swap_on = false;
    let mut below = Vec::new();
    let mut members = Vec::new();
    if let sys::Mapping::Open { devno, on, .. } = &mapping {
        mounted_at = sys::mounts_of(*devno, &sys::mounts(root)?);
        swap_on = sys::swaps(root).contains(devno);
        if mapping.is_set() {
            for d in on {
                let Some(member) = sys::dm_name(root, *d) else {
                    continue;
                };
                let m = sys::mapping(root, &member);
                let under = match &m {
                    sys::Mapping::Open { on, .. } => beneath(root, on)?,
                    _ => Vec::new(),
                };
                members.push(DownMember {
                    name: member,
                    mapping: m,
                    under,
                });
            }
            members.sort_by(|a, b| a.name.cmp(&b.name));
        } else {
            below = beneath(root, on)?;
        }
    }
    Ok(DownObserved {
        mapping,
        mounted_at,
        swap_on,
        under: below,
        members,
    })
}

/// The devices a mapping sits on, and whether each holds our volume.
fn beneath(root: &Path, on: &[sys::DevNo]) -> Result<Vec<Under>> {
    let mut below = Vec::new();
    for d in on {
        let Some(path) = sys::dev_path(root, *d) else {
            continue;
        };
        let c = content::examine(&under(root, &path))?;
        below.push(Under {
            ours: matches!(plan::classify(&c), Class::Ours { .. }),
            holds: c.describe(),
            dev: sys::BlockDev { path, devno: *d },
            loop_dev: sys::loop_of(root, *d),
        });
    }
    Ok(below)
}

/// `secretfs down`.
pub fn run(args: &DownArgs) -> Result<()> {
    let v = config::volume(&args.volume, args.mount.clone(), args.json)?;
    if !v.each_disk {
        return take_down(&v);
    }
    // `each-disk = true`: every open NAME-diskN, in index order.
    let found = sys::disk_volumes(Path::new("/"), &v.name);
    if found.is_empty() {
        info!("no volume {}-diskN is open; nothing to do", v.name);
    }
    for name in found {
        take_down(&Volume {
            name,
            each_disk: false,
            ..v.clone()
        })?;
    }
    Ok(())
}

/// Takes the volume `v` down (and swap space: `secretfs swap --off`).
pub fn take_down(v: &Volume) -> Result<()> {
    // Without root, device-mapper cannot be changed, and "not open" would
    // be a guess.
    require_root("secretfs down")?;
    signals::install();
    let _lock = lock::acquire(&v.name, LOCK_WAIT)?;
    let root = Path::new("/");
    let obs = observe(root, &v.name)?;
    let plan = plan::plan_down(&v.name, &obs).map_err(Refusal::into_error)?;
    let mapper = names::mapper_path(&v.name);
    if plan.is_noop() {
        info!("{} is not open; nothing to do", mapper.display());
        if v.json {
            print_json(
                &json!({"command": "down", "ok": true, "outcome": "already_down", "name": v.name}),
            )?;
        }
        return Ok(());
    }
    if let Some(m) = &v.mount {
        let canon = sys::canonical(root, m);
        if !obs.mounted_at.contains(&canon) {
            info!(
                "{} is not mounted from {}; not touching it",
                m.display(),
                mapper.display()
            );
        }
    }
    for n in &plan.notes {
        info!("{n}");
    }
    exec::run(&plan, None)?;
    let of = |f: fn(&Step) -> Option<std::path::PathBuf>| -> Vec<std::path::PathBuf> {
        plan.steps.iter().filter_map(|p| f(&p.step)).collect()
    };
    if v.json {
        print_json(
            &json!({"command": "down", "ok": true, "outcome": "down", "name": v.name,
            "unmounted": of(|s| match s { Step::Unmount { dir } => Some(dir.clone()), _ => None }),
            "closed": mapper,
            "detached": of(|s| match s { Step::Detach { dev, .. } => Some(dev.clone()), _ => None })}),
        )?;
    }
    Ok(())
}
