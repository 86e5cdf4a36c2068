//! `secretfs status`: what the volume is, what it sits on, where it is
//! mounted. Read-only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::print_json;
use crate::cli::StatusArgs;
use crate::config;
use crate::luks::header::{self, LuksInfo};
use crate::names::{self, under};
use crate::observe::{content, sys, Signature};

#[derive(Serialize)]
struct MountReport {
    path: PathBuf,
    fstype: String,
    size_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
}

#[derive(Serialize)]
struct StatusReport {
    command: &'static str,
    ok: bool,
    name: String,
    mapper: PathBuf,
    open: bool,
    device: Option<PathBuf>,
    loop_file: Option<PathBuf>,
    loop_attached_by_secretfs: Option<bool>,
    luks: Option<LuksInfo>,
    label: Option<String>,
    subsystem: Option<String>,
    mounts: Vec<MountReport>,
    note: Option<String>,
}

/// `secretfs status`.
pub fn run(args: &StatusArgs) -> Result<()> {
    let v = config::volume(&args.name, &args.config, None, args.json)?;
    let root = Path::new("/");
    let mapper = names::mapper_path(&v.name);
    let mut r = StatusReport {
        command: "status",
        ok: true,
        name: v.name.clone(),
        mapper: mapper.clone(),
        open: false,
        device: None,
        loop_file: None,
        loop_attached_by_secretfs: None,
        luks: None,
        label: None,
        subsystem: None,
        mounts: Vec::new(),
        note: None,
    };
    match sys::mapping(root, &v.name) {
        sys::Mapping::Unavailable { reason } => {
            r.note = Some(format!("device-mapper unavailable: {reason}"))
        }
        sys::Mapping::Absent => r.note = Some(format!("{} is not open", mapper.display())),
        sys::Mapping::Open { devno, on, .. } => {
            r.open = true;
            if let Some(d) = on.first() {
                r.device = sys::dev_path(root, *d);
                if let Some(l) = sys::loop_of(root, *d) {
                    r.loop_file = Some(l.file);
                    r.loop_attached_by_secretfs = Some(l.autoclear);
                }
                if let Some(dev) = &r.device {
                    let at = under(root, dev);
                    r.luks = header::inspect(&at)?;
                    let sigs = content::signatures(&content::open(&at)?, &at)?;
                    if let Some(Signature::Luks {
                        label, subsystem, ..
                    }) = sigs
                        .into_iter()
                        .find(|s| matches!(s, Signature::Luks { .. }))
                    {
                        r.label = label;
                        r.subsystem = subsystem;
                    }
                }
            }
            for m in sys::mounts(root)?.into_iter().filter(|m| m.devno == devno) {
                let (size, free, avail, frag) = nix::sys::statvfs::statvfs(&m.mount_point)
                    .map(|s| {
                        (
                            s.blocks(),
                            s.blocks_free(),
                            s.blocks_available(),
                            s.fragment_size(),
                        )
                    })
                    .unwrap_or_default();
                r.mounts.push(MountReport {
                    fstype: m.fstype.clone(),
                    size_bytes: size * frag,
                    used_bytes: (size - free) * frag,
                    available_bytes: avail * frag,
                    path: m.mount_point,
                });
            }
        }
    }
    if v.json {
        return print_json(&r);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "volume:  {} ({})",
        r.name,
        if r.open { "open" } else { "closed" }
    )?;
    if let Some(n) = &r.note {
        writeln!(out, "note:    {n}")?;
    }
    if let Some(d) = &r.device {
        writeln!(out, "device:  {}", d.display())?;
    }
    if let Some(f) = &r.loop_file {
        writeln!(
            out,
            "file:    {} (loop attached by secretfs: {})",
            f.display(),
            r.loop_attached_by_secretfs.unwrap_or(false)
        )?;
    }
    if let Some(l) = &r.luks {
        writeln!(
            out,
            "luks:    LUKS{} {}-{} {}-bit key, {}-byte sectors, pbkdf {}, label {}, subsystem {}",
            l.version,
            l.cipher,
            l.cipher_mode,
            l.key_bits,
            l.sector_size,
            l.pbkdf.as_deref().unwrap_or("?"),
            r.label.as_deref().unwrap_or("-"),
            r.subsystem.as_deref().unwrap_or("-")
        )?;
        if !l.persistent_flags.is_empty() {
            writeln!(out, "flags:   {}", l.persistent_flags.join(", "))?;
        }
        match &l.token {
            Some(t) => writeln!(
                out,
                "volume:  {} ({:?}, filesystem {})",
                t.volume,
                t.state,
                t.filesystem.as_deref().unwrap_or("not made yet")
            )?,
            None => writeln!(
                out,
                "volume:  no secretfs token (made before tokens; `up` adds one)"
            )?,
        }
    }
    for m in &r.mounts {
        writeln!(
            out,
            "mount:   {} ({}, {} MiB used of {} MiB, {} MiB available)",
            m.path.display(),
            m.fstype,
            m.used_bytes >> 20,
            m.size_bytes >> 20,
            m.available_bytes >> 20
        )?;
    }
    Ok(())
}
