//! `secretfs shred`: crypto-shred the volume. Unmount, close, destroy
//! every key slot and both LUKS2 header copies on every device below it
//! (each member of a set), leave the devices reading as blank, verify that
//! no header remains, and log one audit line. Irreversible: without
//! `--yes` it asks on a terminal, and without a terminal it refuses.

use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;
use tracing::info;

use super::{down, print_json, require_root};
use crate::cli::ShredArgs;
use crate::config;
use crate::error::{refused, usage};
use crate::exec;
use crate::lock;
use crate::luks::header;
use crate::observe::content;
use crate::plan::{self, Refusal, Step};
use crate::signals;

/// `secretfs shred`.
pub fn run(args: &ShredArgs) -> Result<()> {
    let v = config::volume(&args.volume, None, args.json)?;
    confirm(args.yes, &v.name)?;
    require_root("secretfs shred")?;
    signals::install();
    let _lock = lock::acquire(&v.name, down::LOCK_WAIT)?;
    let root = Path::new("/");
    let obs = down::observe(root, &v.name)?;
    let plan = plan::plan_shred(&v.name, &obs).map_err(Refusal::into_error)?;
    let targets: Vec<PathBuf> = plan
        .steps
        .iter()
        .filter_map(|p| match &p.step {
            Step::Shred { target, .. } => Some(target.clone()),
            _ => None,
        })
        .collect();
    // The volume's identity, for the audit line, before it is gone.
    let mut uuids = Vec::new();
    for t in &targets {
        if let Some(h) = header::read(t)? {
            uuids.push(h.uuid);
        }
    }
    exec::run(&plan, None)?;
    for t in &targets {
        verify(t)?;
    }
    let shown: Vec<String> = targets.iter().map(|t| t.display().to_string()).collect();
    info!(
        "audit: shredded volume {} (LUKS2 UUID {}) on {} at {}: every key slot destroyed, both header copies zeroed, \
         no header found afterwards",
        v.name,
        uuids.join(", "),
        shown.join(", "),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    if v.json {
        print_json(
            &json!({"command": "shred", "ok": true, "outcome": "shredded", "name": v.name,
            "luks_uuids": uuids, "devices": targets}),
        )?;
    }
    Ok(())
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
