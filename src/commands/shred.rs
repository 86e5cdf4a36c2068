//! `secretfs shred`: crypto-shred the volume. Unmount, close, destroy
//! every key slot and both LUKS2 header copies on every device below it
//! (each member of a set), leave the devices reading as blank, verify that
//! no header remains, and log one audit line. A closed volume is named by
//! its devices (`--disk`, `--file`) and proven ours by their tokens; a set
//! shredded in part is finished ([`crate::plan::plan_shred_closed`]).
//! Irreversible: without `--yes` it asks on a terminal, and without a
//! terminal it refuses.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Result;
use serde_json::json;
use tracing::info;

use super::{down, print_json, require_root};
use crate::cli::ShredArgs;
use crate::config;
use crate::error::{refused, usage};
use crate::exec;
use crate::lock;
use crate::luks::header::{self, Header, TokenFound};
use crate::observe::content::{self, Content};
use crate::observe::{self, sys, TargetState};
use crate::plan::{self, Holds, Refusal, ShredTarget};
use crate::settings::{Target, Volume};
use crate::signals;

/// `secretfs shred`.
pub fn run(args: &ShredArgs) -> Result<()> {
    let v = config::volume(&args.volume, None, args.json)?;
    if !v.each_disk || args.file.is_some() || !args.disk.is_empty() {
        return shred(args, &v);
    }
    // `each-disk = true`: every open NAME-diskN, in index order (the
    // config's disks are the node's, so their volumes are shred's too).
    require_root("secretfs shred")?;
    let found = sys::disk_volumes(Path::new("/"), &v.name);
    if found.is_empty() {
        return refused(format!(
            "no volume {}-diskN is open (each-disk = true): name one with --name, or its disks \
             with --disk",
            v.name
        ));
    }
    for name in found {
        shred(
            args,
            &Volume {
                name,
                each_disk: false,
                ..v.clone()
            },
        )?;
    }
    Ok(())
}

/// Shreds the volume `v` (or the devices `args` names).
fn shred(args: &ShredArgs, v: &Volume) -> Result<()> {
    confirm(args.yes, &v.name)?;
    require_root("secretfs shred")?;
    signals::install();
    let _lock = lock::acquire(&v.name, down::LOCK_WAIT)?;
    let root = Path::new("/");
    let given: Vec<Target> = match &args.file {
        Some(f) => vec![Target::File {
            path: f.clone(),
            size: None,
        }],
        None => args.disk.iter().cloned().map(Target::Disk).collect(),
    };
    let sp = if given.is_empty() {
        let obs = down::observe(root, &v.name)?;
        plan::plan_shred(&v.name, &obs)
    } else {
        let open = !matches!(sys::mapping(root, &v.name), sys::Mapping::Absent);
        plan::plan_shred_closed(&v.name, open, &observe_closed(root, &given)?)
    }
    .map_err(Refusal::into_error)?;
    for n in &sp.plan.notes {
        info!("{n}");
    }
    let targets = sp.targets();
    // The volume's identity, for the audit line, before it is gone.
    let mut uuids = Vec::new();
    for t in &targets {
        if let Some(h) = header::read(t)? {
            uuids.push(h.uuid);
        }
    }
    exec::run(&sp.plan, None)?;
    for t in &targets {
        verify(t)?;
    }
    let shown: Vec<String> = targets.iter().map(|t| t.display().to_string()).collect();
    if !targets.is_empty() {
        info!(
            "audit: shredded volume {} (LUKS2 UUID {}) on {} at {}: every key slot destroyed, both header copies zeroed, \
             no header found afterwards",
            v.name,
            uuids.join(", "),
            shown.join(", "),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
    }
    if !sp.unresolved.is_empty() {
        anyhow::bail!(
            "shred of {} is not complete: {} erased, but found no device for {}: name every device \
             of the volume with `secretfs shred --disk DEV ...` (blank ones count as shredded)",
            v.name,
            if shown.is_empty() {
                "nothing".to_string()
            } else {
                shown.join(", ")
            },
            sp.unresolved.join("; ")
        );
    }
    if targets.is_empty() {
        info!(
            "nothing of volume {} is left on {}: already shredded",
            v.name,
            given
                .iter()
                .map(|t| t.path().display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if v.json {
        print_json(&json!({"command": "shred", "ok": true,
            "outcome": if targets.is_empty() { "already_shredded" } else { "shredded" },
            "name": v.name, "luks_uuids": uuids, "devices": targets,
            "already_blank": sp.already_blank}))?;
    }
    Ok(())
}

/// What each device named to `shred --disk/--file` holds and what uses
/// it (read-only, through `root`).
fn observe_closed(root: &Path, given: &[Target]) -> Result<Vec<ShredTarget>> {
    let mounts = sys::mounts(root)?;
    let swaps = sys::swaps(root);
    let mut out = Vec::new();
    for t in given {
        let path = t.path().to_path_buf();
        let d = observe::observe_device(root, t, &mounts, &swaps, &[])?;
        let mut busy = d.busy.clone();
        let file = matches!(t, Target::File { .. });
        let holds = match &d.target {
            TargetState::Missing { .. } => Holds::Other("nothing: it does not exist".into()),
            TargetState::WrongKind { what } => Holds::Other(what.clone()),
            TargetState::File { loop_dev, .. } => {
                if let Some(l) = loop_dev {
                    busy.push(format!("attached to {}", l.dev.path.display()));
                }
                holds_of(d.content.as_ref())
            }
            TargetState::Block { .. } => holds_of(d.content.as_ref()),
        };
        out.push(ShredTarget {
            path,
            file,
            busy,
            holds,
        });
    }
    Ok(out)
}

/// Ours by the token (or our legacy header), blank, or something else.
fn holds_of(c: Option<&Content>) -> Holds {
    let Some(c) = c else {
        return Holds::Blank;
    };
    match &c.header {
        Some(Header {
            uuid,
            token: TokenFound::Present { token, .. },
            ..
        }) => Holds::Ours {
            uuid: uuid.clone(),
            set: token.set.clone(),
            member: token.member,
            members: token.members,
        },
        _ => match plan::classify(c) {
            plan::Class::Blank => Holds::Blank,
            plan::Class::Ours {
                place: None,
                ephemeral: false,
                ..
            }
            | plan::Class::HalfMade { .. }
                if c.header.is_some() =>
            {
                // Our legacy header (no token): our LUKS subsystem.
                Holds::Ours {
                    uuid: c
                        .header
                        .as_ref()
                        .map(|h| h.uuid.clone())
                        .unwrap_or_default(),
                    set: None,
                    member: None,
                    members: None,
                }
            }
            _ => Holds::Other(c.describe()),
        },
    }
}

/// After the erase: no LUKS2 header for libcryptsetup, no signature for
/// libblkid, and the zero check sees a blank device.
fn verify(t: &Path) -> Result<()> {
    if header::load(t)?.is_some() {
        return refused(format!(
            "{} still holds a LUKS2 header after the erase",
            t.display()
        ));
    }
    let c = content::examine(t)?;
    if plan::classify(&c) != plan::Class::Blank {
        return refused(format!(
            "{} does not read as blank after the erase: {}",
            t.display(),
            c.describe()
        ));
    }
    Ok(())
}

/// `--yes`, or the volume's name typed at the terminal.
fn confirm(yes: bool, name: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        return usage(format!(
            "shred destroys volume {name} and its data for good: pass --yes (there is no terminal to ask on)"
        ));
    }
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "This destroys volume {name} and all its data, for good. Type its name ({name}) to go on: "
    );
    let _ = err.flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if line.trim_end_matches(['\n', '\r']) != name {
        return usage(format!(
            "shred of {name} not confirmed; nothing was changed"
        ));
    }
    Ok(())
}
